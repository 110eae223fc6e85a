"""The temporal tiny autoencoder of Stream-DiffVSR, in plain torch (no diffusers needed).

A TAESD-style autoencoder whose residual blocks carry a *Temporal Processor Module* (TPM).
Parameter names follow the official checkpoint (``vae/diffusion_pytorch_model.safetensors``)
so its state dict loads strictly:

- ``encoder.layers.{i}``: ``Conv2d(in, c0)``, then per stage ``s`` (stride-2 ``Conv2d`` without
  bias for ``s > 0``) followed by ``num_encoder_blocks[s]`` blocks; a last ``Conv2d(c, latent)``.
- ``decoder.layers.{i}``: ``Conv2d(latent, c0)``, ``ReLU``, then per stage ``num_decoder_blocks[s]``
  blocks, a nearest ``Upsample`` (not after the last stage) and a ``Conv2d`` (bias only on the last,
  which maps to RGB).
- a block: ``conv.{0,2,4}`` (3x3 conv, act, conv, act, conv), ``skip`` (1x1, only when the channel
  count changes), ``alpha`` (scalar) and ``temporal_processor.{0,2}`` (``Conv1d(C, C, 3)``, act,
  ``Conv1d``).

TPM (decoder only, from the second frame on): the block's conv features and the features of the
warped previous output (same block depth, taken from the encoder) are 4x4 average-pooled,
flattened and concatenated along the sequence axis; the temporal processor runs over that
sequence; its two halves are mixed ``alpha * cur + (1 - alpha) * prev``, upsampled bilinearly
back to the block's size and added, scaled by 0.1, before the skip sum and the ReLU.

Conventions kept from the official model (the weights were trained with them):

- decode: latents are soft-clamped ``3 * tanh(z / 3)``, the decoder output is mapped ``[0,1] ->
  [-1,1]`` (no clamp);
- the previous-frame features come from running the encoder layers directly on the warped
  previous output in ``[-1, 1]``: that path skips the ``[-1,1] -> [0,1]`` input mapping the
  encoder applies when it encodes an image. The features are listed shallow to deep and
  consumed by the decoder blocks deep to shallow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

POOL = 4  # TPM pooling window (fixed in the official model)
TPM_GAIN = 0.1  # how strongly the temporal term enters the block

#: the official ``vae/config.json`` values that matter here (the rest are ignored)
OFFICIAL_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "encoder_block_out_channels": [64, 64, 64],
    "decoder_block_out_channels": [64, 64, 64],
    "num_encoder_blocks": [1, 3, 3],
    "num_decoder_blocks": [3, 3, 1],
    "latent_channels": 4,
    "act_fn": "relu",
    "upsample_fn": "nearest",
    "upsampling_scaling_factor": 2,
    "scaling_factor": 1.0,
}


def _act(name: str) -> nn.Module:
    name = (name or "relu").lower()
    table = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "mish": nn.Mish}
    if name not in table:
        raise ValueError(f"unsupported activation {name!r} in the VAE config")
    return table[name]()


class TPMBlock(nn.Module):
    """Residual tiny-AE block with a temporal processor (see the module docstring)."""

    def __init__(self, cin: int, cout: int, act: str = "relu"):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            _act(act),
            nn.Conv2d(cout, cout, 3, padding=1),
            _act(act),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.fuse = nn.ReLU()
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.temporal_processor = nn.Sequential(
            nn.Conv1d(cout, cout, 3, padding=1),
            _act(act),
            nn.Conv1d(cout, cout, 3, padding=1),
        )

    def temporal(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """The TPM term for ``cur`` given the previous frame's features ``prev`` (same shape)."""
        b, c, h, w = cur.shape
        pc = F.avg_pool2d(cur, POOL, POOL)
        pp = F.avg_pool2d(prev.to(cur.dtype), POOL, POOL)
        ph, pw = pc.shape[-2:]
        n = ph * pw
        seq = self.temporal_processor(torch.cat([pc.reshape(b, c, n), pp.reshape(b, c, n)], dim=2))
        a = self.alpha.to(cur.dtype)
        mixed = a * seq[:, :, :n] + (1 - a) * seq[:, :, n:]
        mixed = F.interpolate(mixed.reshape(b, c, ph, pw), size=(h, w), mode="bilinear", align_corners=False)
        return mixed

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x)
        if prev is not None and min(y.shape[-2:]) >= POOL:
            y = y + TPM_GAIN * self.temporal(y, prev)
        return self.fuse(y + self.skip(x))


class _Layers(nn.Module):
    """Holds ``layers`` (an ``nn.Sequential``) so the parameter names are ``<part>.layers.<i>...``."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.Sequential(*layers)


def _build_encoder(cfg: Mapping[str, Any]) -> _Layers:
    chans, blocks = list(cfg["encoder_block_out_channels"]), list(cfg["num_encoder_blocks"])
    act = cfg.get("act_fn", "relu")
    layers: list[nn.Module] = []
    for s, (c, nb) in enumerate(zip(chans, blocks)):
        if s == 0:
            layers.append(nn.Conv2d(cfg.get("in_channels", 3), c, 3, padding=1))
        else:
            layers.append(nn.Conv2d(chans[s - 1], c, 3, padding=1, stride=2, bias=False))
        layers += [TPMBlock(c, c, act) for _ in range(nb)]
    layers.append(nn.Conv2d(chans[-1], cfg.get("latent_channels", 4), 3, padding=1))
    return _Layers(layers)


def _build_decoder(cfg: Mapping[str, Any]) -> _Layers:
    chans, blocks = list(cfg["decoder_block_out_channels"]), list(cfg["num_decoder_blocks"])
    act = cfg.get("act_fn", "relu")
    up = int(cfg.get("upsampling_scaling_factor", 2))
    mode = cfg.get("upsample_fn", "nearest")
    layers: list[nn.Module] = [nn.Conv2d(cfg.get("latent_channels", 4), chans[0], 3, padding=1), _act(act)]
    for s, (c, nb) in enumerate(zip(chans, blocks)):
        last = s == len(chans) - 1
        layers += [TPMBlock(c, c, act) for _ in range(nb)]
        if not last:
            layers.append(nn.Upsample(scale_factor=up, mode=mode))
        cout = cfg.get("out_channels", 3) if last else c
        layers.append(nn.Conv2d(c, cout, 3, padding=1, bias=last))
    return _Layers(layers)


class TemporalTinyAutoencoder(nn.Module):
    """Encoder (for previous-frame features) + temporal decoder, keys as in the official checkpoint."""

    def __init__(self, config: Mapping[str, Any] | None = None):
        super().__init__()
        cfg = dict(OFFICIAL_VAE_CONFIG)
        cfg.update({k: v for k, v in (config or {}).items() if not k.startswith("_")})
        for a, b in (("encoder_block_out_channels", "num_encoder_blocks"), ("decoder_block_out_channels", "num_decoder_blocks")):
            if len(cfg[a]) != len(cfg[b]):
                raise ValueError(f"VAE config: {a} and {b} differ in length")
        self.config = cfg
        self.encoder = _build_encoder(cfg)
        self.decoder = _build_decoder(cfg)
        self.scaling_factor = float(cfg.get("scaling_factor", 1.0))
        self.latent_channels = int(cfg.get("latent_channels", 4))

    @property
    def downscale(self) -> int:
        """Image pixels per latent pixel (4 for the official model: latents at LR size)."""
        return int(self.config.get("upsampling_scaling_factor", 2)) ** (len(self.config["decoder_block_out_channels"]) - 1)

    def encoder_blocks(self) -> list[TPMBlock]:
        return [m for m in self.encoder.layers if isinstance(m, TPMBlock)]

    def decoder_blocks(self) -> list[TPMBlock]:
        return [m for m in self.decoder.layers if isinstance(m, TPMBlock)]

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every encoder block, shallow to deep, for ``x`` in [-1, 1] taken as is.

        Stops after the last block: the latent conv is not needed for the temporal features.
        """
        feats: list[torch.Tensor] = []
        n_blocks = len(self.encoder_blocks())
        for m in self.encoder.layers:
            x = m(x)
            if isinstance(m, TPMBlock):
                feats.append(x)
                if len(feats) == n_blocks:
                    break
        return feats

    def temporal_features(self, warped_prev: torch.Tensor) -> list[torch.Tensor]:
        """Features of the warped previous output in the order the decoder blocks consume them."""
        feats = self.encoder_features(warped_prev)[::-1]
        if len(feats) != len(self.decoder_blocks()):
            raise ValueError(
                f"VAE: {len(feats)} encoder blocks cannot feed {len(self.decoder_blocks())} decoder blocks"
            )
        return feats

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> latents (not used per frame; kept for completeness and tests)."""
        return self.encoder.layers(img.add(1).div(2))

    def decode(self, z: torch.Tensor, temporal: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Latents -> image in [-1, 1] (unclamped); ``temporal`` from :meth:`temporal_features` or None."""
        x = torch.tanh(z / 3) * 3
        i = 0
        for m in self.decoder.layers:
            if isinstance(m, TPMBlock):
                x = m(x, temporal[i] if temporal is not None else None)
                i += 1
            else:
                x = m(x)
        return x.mul(2).sub(1)


def official_vae_keys(config: Mapping[str, Any] | None = None) -> list[str]:
    """The parameter names of a checkpoint with this config (what a strict load expects)."""
    return list(TemporalTinyAutoencoder(config).state_dict().keys())
