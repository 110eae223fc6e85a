"""FlashVSR model and streaming hyper-parameters.

``WAN_1_3B`` is the configuration of the official v1.1 release (a Wan2.1-T2V-1.3B DiT distilled
to one step, ``Causal_LQ4x_Proj``, the widened TC decoder).  ``TINY`` keeps every constant the
streaming maths depends on (16 px per token, 2 latent frames per attention slice, 4 frames per
latent, the 25-then-8 chunk schedule, 3 cached slices, the official (2, 8, 8) attention window)
and shrinks widths and depths, so CPU tests exercise the code paths the full model runs in seconds.

``from_json`` reads a config in the format of the parity fixtures' ``config.json`` (``dit``,
``lq_proj``, ``tc_decoder``, ``attention`` sections); a weights folder holding such a file is
loaded with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class FlashVSRConfig:
    name: str = "wan2.1-t2v-1.3b"
    # --- DiT (Wan2.1 layout) ------------------------------------------------------------------------
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16  # latent channels
    out_dim: int = 16
    text_dim: int = 4096  # umT5 width of the fixed prompt embedding
    text_len: int = 512
    freq_dim: int = 256  # sinusoidal timestep embedding width
    patch: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    timestep: float = 1000.0  # the one step: latents = noise - model(noise, t=1000)
    rope_theta: float = 10000.0
    # --- pixels <-> latents -------------------------------------------------------------------------
    vae_stride: int = 8  # output pixels per latent pixel
    frames_per_latent: int = 4  # LR frames per latent frame
    # --- LQ projection (Causal_LQ4x_Proj) -------------------------------------------------------------
    lq_unshuffle: int = 16  # pixel-unshuffle factor (= pixels per DiT token)
    lq_hidden: tuple[int, int] = (2048, 3072)
    lq_layers: int = 1  # v1.1 injects before block 0 only
    # --- TC decoder (TAEHV-style, conditioned on LQ frames) ------------------------------------------
    dec_channels: tuple[int, int, int, int] = (512, 256, 128, 128)
    dec_cond_unshuffle: tuple[int, int, int] = (4, 8, 8)  # (frames, h, w) -> 3*4*8*8 = 768 channels
    # --- streaming + locality-constrained sparse attention -------------------------------------------
    window: tuple[int, int, int] = (2, 8, 8)  # tokens per attention block: 2 latent frames x 8 x 8
    kv_slices: int = 3  # past window slices kept in the self-attention KV cache
    first_latents: int = 6  # the first call: 6 latent frames (25 LR frames in, 21 out)
    step_latents: int = 2  # every later call: 2 latent frames (8 frames in, 8 out)
    local_range: int = 11  # local window of blocks (11x11; 9 = sharper, 11 = steadier)
    sparse_ratio: float = 2.0  # top-k budget (1.5 = faster, 2.0 = steadier)
    sparse_ref_pixels: int = 768 * 1280  # topk_ratio = sparse_ratio * ref_pixels / (H*W)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def px_per_token(self) -> int:
        return self.vae_stride * self.patch[1]

    @property
    def block_tokens(self) -> int:
        return self.window[0] * self.window[1] * self.window[2]

    @property
    def pad_multiple(self) -> int:
        """Output sizes are padded to this (one attention block spans 128x128 output pixels)."""
        return self.px_per_token * self.window[1]

    @property
    def first_frames_in(self) -> int:
        return 1 + self.first_latents * self.frames_per_latent  # 25

    @property
    def first_frames_out(self) -> int:
        return self.first_latents * self.frames_per_latent - (self.frames_per_latent - 1)  # 21

    @property
    def step_frames(self) -> int:
        return self.step_latents * self.frames_per_latent  # 8

    @property
    def dec_cond_channels(self) -> int:
        f, h, w = self.dec_cond_unshuffle
        return 3 * f * h * w

    def validate(self) -> None:
        hd = self.head_dim
        if self.dim % self.num_heads or hd % 2 or (hd // 3) % 2 or (hd - 2 * (hd // 3)) % 2:
            raise ValueError(f"head_dim {hd} cannot be split into even (t, h, w) RoPE parts")
        if self.lq_unshuffle != self.px_per_token:
            raise ValueError("lq_unshuffle must equal vae_stride * patch (one LQ token per DiT token)")
        if self.first_latents % self.window[0] or self.step_latents % self.window[0]:
            raise ValueError("chunk sizes must be whole attention windows in time")
        if self.dec_cond_unshuffle != (self.frames_per_latent, self.vae_stride, self.vae_stride):
            raise ValueError("decoder conditioning must unshuffle one latent's worth of frames and pixels")


WAN_1_3B = FlashVSRConfig()

# Small widths, same streaming structure: 2 layers, head_dim 24 (RoPE split 8/8/8), narrow LQ and
# decoder, and the official (2,8,8)-token attention windows (one block = 128x128 output pixels):
# frames above 128 px at the output span several blocks (real local/top-k sparsity).
TINY = replace(
    WAN_1_3B,
    name="tiny",
    dim=48,
    ffn_dim=96,
    num_heads=2,
    num_layers=2,
    text_dim=32,
    text_len=8,
    freq_dim=32,
    lq_hidden=(32, 48),
    dec_channels=(8, 8, 8, 8),
)

CONFIGS = {"wan2.1-t2v-1.3b": WAN_1_3B, "full": WAN_1_3B, "tiny": TINY}


def from_json(path: str | Path, base: FlashVSRConfig = WAN_1_3B) -> FlashVSRConfig:
    """A config from a ``config.json`` in the parity-fixture format (missing keys: ``base``'s)."""
    d = json.loads(Path(path).read_text())
    dit, lq, dec, att = (d.get(k) or {} for k in ("dit", "lq_proj", "tc_decoder", "attention"))
    if not dit:
        raise ValueError(f"{path}: no 'dit' section (not a FlashVSR config)")
    pick = {
        "dim": dit.get("dim"), "ffn_dim": dit.get("ffn_dim"), "num_heads": dit.get("num_heads"),
        "num_layers": dit.get("num_layers"), "in_dim": dit.get("in_dim"), "out_dim": dit.get("out_dim"),
        "text_dim": dit.get("text_dim"), "text_len": dit.get("text_len"), "freq_dim": dit.get("freq_dim"),
        "eps": dit.get("eps"), "timestep": dit.get("timestep"), "rope_theta": dit.get("rope_theta"),
        "patch": tuple(dit["patch_size"]) if "patch_size" in dit else None,
        "lq_unshuffle": lq.get("pixel_unshuffle"), "lq_layers": lq.get("linear_layers"),
        "lq_hidden": (lq["hidden1"], lq["hidden2"]) if "hidden1" in lq else None,
        "dec_channels": tuple(dec["channels"]) if "channels" in dec else None,
        "dec_cond_unshuffle": tuple(dec["cond_unshuffle_t_h_w"]) if "cond_unshuffle_t_h_w" in dec else None,
        "window": tuple(att["window_t_h_w_tokens"]) if "window_t_h_w_tokens" in att else None,
        "kv_slices": att.get("kv_slices"), "local_range": att.get("local_range"),
        "sparse_ratio": att.get("sparse_ratio"),
    }
    cfg = replace(base, name=str(d.get("name", Path(path).parent.name)), **{k: v for k, v in pick.items() if v is not None})
    cfg.validate()
    return cfg
