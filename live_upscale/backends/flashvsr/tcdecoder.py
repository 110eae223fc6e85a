"""The Tiny Conditional decoder (TAEHV-style) of FlashVSR, streaming.

Input per latent frame: 16 latent channels plus the 4 matching LQ frames pixel-unshuffled
(4, 8, 8) -> 768 channels, concatenated as ``[lq(768), latent(16)]``. The network is a chain of
per-frame 2-D layers and ``MemBlock`` s (each also sees its own *input* of the previous time
step), with two temporal x2 ``TGrow`` s (1 latent frame -> 4 frames) and three spatial x2
upsamplings (latent -> pixels). Every ReLU that follows a plain conv is followed by an extra
3x3 conv + ReLU (the "deepened" decoder), which fixes the layer indices of the official
``TCDecoder.ckpt`` (``decoder.N.*``, 66 tensors for channels (512, 256, 128, 128)).

Streaming: each ``MemBlock`` keeps the last input frame it saw, so decoding a clip chunk by chunk
equals decoding it at once. The very first 3 output frames belong to the 3 frames the stream
start repeats and are dropped. Output ~[0, 1].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FlashVSRConfig


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class IdentityConv2d(nn.Conv2d):
    """3x3 conv initialised to the identity (the 'deepening' layers)."""

    def __init__(self, c: int):
        super().__init__(c, c, 3, padding=1, bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight)


class MemBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in * 2, n_out), nn.ReLU(inplace=True), _conv(n_out, n_out), nn.ReLU(inplace=True), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    """1x1 conv to ``stride`` x channels, split into ``stride`` consecutive frames."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


def _deepen(layers: list[nn.Module]) -> list[nn.Module]:
    """After every ReLU that follows a plain conv: one more identity-initialised 3x3 conv + ReLU."""
    out: list[nn.Module] = []
    for layer in layers:
        out.append(layer)
        if isinstance(layer, nn.ReLU) and len(out) >= 2 and isinstance(out[-2], nn.Conv2d):
            c = out[-2].out_channels
            out += [IdentityConv2d(c), nn.ReLU(inplace=True)]
    return out


class TCDecoder(nn.Module):
    def __init__(self, cfg: FlashVSRConfig):
        super().__init__()
        n = cfg.dec_channels
        self.cond_unshuffle = cfg.dec_cond_unshuffle
        self.frames_per_latent = cfg.frames_per_latent
        self.trim = cfg.frames_per_latent - 1
        latent_ch = cfg.in_dim + cfg.dec_cond_channels
        base: list[nn.Module] = [
            Clamp(), _conv(latent_ch, n[0]), nn.ReLU(inplace=True),
            MemBlock(n[0], n[0]), MemBlock(n[0], n[0]), MemBlock(n[0], n[0]),
            nn.Upsample(scale_factor=2), TGrow(n[0], 1), _conv(n[0], n[1], bias=False),
            MemBlock(n[1], n[1]), MemBlock(n[1], n[1]), MemBlock(n[1], n[1]),
            nn.Upsample(scale_factor=2), TGrow(n[1], 2), _conv(n[1], n[2], bias=False),
            MemBlock(n[2], n[2]), MemBlock(n[2], n[2]), MemBlock(n[2], n[2]),
            nn.Upsample(scale_factor=2), TGrow(n[2], 2), _conv(n[2], n[3], bias=False),
            nn.ReLU(inplace=True), _conv(n[3], 3),
        ]  # fmt: skip
        self.decoder = nn.Sequential(*_deepen(base))
        self.reset()

    def reset(self) -> None:
        self.mem: list[torch.Tensor | None] = [None] * len(self.decoder)
        self.started = False

    def unshuffle_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """``(B, 3, F, H, W)`` with F a multiple of 4 -> ``(B, F/4, 768, H/8, W/8)``."""
        b, c, f, h, w = cond.shape
        ff, hh, ww = self.cond_unshuffle
        x = cond.reshape(b, c, f // ff, ff, h // hh, hh, w // ww, ww).permute(0, 2, 1, 3, 5, 7, 4, 6)
        return x.reshape(b, f // ff, c * ff * hh * ww, h // hh, w // ww)

    def _run(self, x: torch.Tensor, b: int) -> torch.Tensor:
        """``x`` ``(B*T, C, h, w)`` (time-major within each batch item) through the decoder."""
        for i, layer in enumerate(self.decoder):
            if isinstance(layer, MemBlock):
                nt, c, h, w = x.shape
                xt = x.view(b, nt // b, c, h, w)
                prev = self.mem[i] if self.mem[i] is not None else torch.zeros_like(xt[:, :1])
                past = torch.cat([prev, xt[:, :-1]], dim=1).reshape(nt, c, h, w)
                self.mem[i] = xt[:, -1:].clone()
                x = layer(x, past)
            else:
                x = layer(x)
        return x

    def decode(self, latents: torch.Tensor, cond: torch.Tensor, latents_per_pass: int = 2) -> torch.Tensor:
        """``latents`` ``(B, 16, T, h, w)``; ``cond`` ``(B, 3, F, 8h, 8w)`` in [-1, 1] with
        ``F = 4T - 3`` on the first call of a stream, ``4T`` afterwards.

        Returns ``(B, F, 3, 8h, 8w)``, ~[0, 1]. ``latents_per_pass`` bounds peak memory (exact)."""
        b, _, t, _, _ = latents.shape
        fpl = self.frames_per_latent
        first = not self.started
        if cond.shape[2] != fpl * t - (self.trim if first else 0):
            raise ValueError(f"decoder: {t} latent frames need {fpl * t - (self.trim if first else 0)} LQ frames, got {cond.shape[2]}")
        if first:
            cond = torch.cat([cond[:, :, :1].expand(-1, -1, self.trim, -1, -1), cond], dim=2)
        cond_u = self.unshuffle_cond(cond.to(latents.dtype))  # (B, T, 768, h, w)
        lat = latents.transpose(1, 2)  # (B, T, 16, h, w)
        outs = []
        step = max(1, int(latents_per_pass))
        for a in range(0, t, step):
            z = torch.cat([cond_u[:, a : a + step], lat[:, a : a + step]], dim=2)
            n = z.shape[1]
            y = self._run(z.reshape(b * n, *z.shape[2:]), b)
            outs.append(y.view(b, n * fpl, *y.shape[1:]))
        y = torch.cat(outs, dim=1)
        self.started = True
        return y[:, self.trim :] if first else y
