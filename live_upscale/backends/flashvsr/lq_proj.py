"""The LR injection of FlashVSR v1.1 (``Causal_LQ4x_Proj`` semantics), streaming.

LR frames, already bicubic-upscaled to the (padded) output size and mapped to [-1, 1], are
pixel-unshuffled 16x16 (3 -> 768 channels, one position per DiT token), then

    conv1: causal Conv3d 768 -> 2048, kernel (4,3,3), stride (2,1,1)  + RMS norm + SiLU
    conv2: causal Conv3d 2048 -> 3072, kernel (4,3,3), stride (2,1,1) + RMS norm + SiLU
    linear_layers.0: 3072 -> dim (added to the tokens before DiT block 0)

so 4 LR frames make one latent frame of tokens. Causality comes from a 2-frame cache in front of
each conv (the *previous* call's last two inputs: v1.1 reads the old cache before writing the new
one). The stream starts with the first frame repeated 3 extra times (a 4-frame clip that only
primes the caches), so the first call of ``1 + 4n`` frames gives ``n`` latent frames and every
later call of ``4n`` frames gives ``n``. Spatial borders are replicate-padded.

Parameter names follow the official ``LQ_proj_in.ckpt``: ``conv1.{weight,bias}``, ``norm1.gamma``,
``conv2.{weight,bias}``, ``norm2.gamma``, ``linear_layers.N.{weight,bias}``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FlashVSRConfig

CACHE_T = 2


class ChannelRMSNorm(nn.Module):
    """``F.normalize`` over channels (dim 1) * sqrt(C) * gamma; gamma shaped ``(C,1,1,1)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class CausalLQProj(nn.Module):
    def __init__(self, cfg: FlashVSRConfig):
        super().__init__()
        r = cfg.lq_unshuffle
        h1, h2 = cfg.lq_hidden
        self.unshuffle = r
        self.frames_per_latent = cfg.frames_per_latent
        self.conv1 = nn.Conv3d(3 * r * r, h1, (4, 3, 3), stride=(2, 1, 1))
        self.norm1 = ChannelRMSNorm(h1)
        self.conv2 = nn.Conv3d(h1, h2, (4, 3, 3), stride=(2, 1, 1))
        self.norm2 = ChannelRMSNorm(h2)
        self.linear_layers = nn.ModuleList(nn.Linear(h2, cfg.dim) for _ in range(cfg.lq_layers))
        self.reset()

    def reset(self) -> None:
        self.cache1: torch.Tensor | None = None
        self.cache2: torch.Tensor | None = None

    def _conv(self, conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        """The causal (4,3,3)/(2,1,1) conv with replicate spatial borders, computed as one 2-D conv
        over the 4 stacked time taps (exactly the same sum; cuDNN's 2-D kernels are far faster than
        its 3-D ones for these channel counts). ``x`` already carries its 2 frames of history."""
        b, c, t, h, w = x.shape
        kt, st = conv.kernel_size[0], conv.stride[0]
        n = (t - kt) // st + 1
        taps = x.unfold(2, kt, st)  # (B, C, n, H, W, kt)
        taps = taps.permute(0, 2, 5, 1, 3, 4).reshape(b * n, kt * c, h, w)
        y = F.conv2d(F.pad(taps, (1, 1, 1, 1), mode="replicate"), self._weight2d(conv), conv.bias)
        return y.view(b, n, -1, h, w).transpose(1, 2)

    def _weight2d(self, conv: nn.Conv3d) -> torch.Tensor:
        w = conv.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        cache = self.__dict__.setdefault("_w2d", {})
        hit = cache.get(id(conv))
        if hit is None or hit[0] != key:
            co, ci, kt, kh, kw = w.shape
            hit = (key, w.detach().permute(0, 2, 1, 3, 4).reshape(co, kt * ci, kh, kw).contiguous())
            cache[id(conv)] = hit
        return hit[1]

    def _unshuffle(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        x = F.pixel_unshuffle(video.transpose(1, 2).reshape(b * t, c, h, w), self.unshuffle)
        return x.view(b, t, -1, h // self.unshuffle, w // self.unshuffle).transpose(1, 2)

    def forward_stream(self, video: torch.Tensor) -> list[torch.Tensor] | None:
        """``video`` ``(B, 3, T, H, W)`` in [-1, 1]: ``T = 1 + 4n`` on the first call, ``4n`` later.

        Returns one ``(B, n*(H/16)*(W/16), dim)`` token tensor per linear layer (None if n == 0).
        """
        first = self.cache1 is None
        fpl = self.frames_per_latent
        t = video.shape[2]
        if (t - 1 if first else t) % fpl:
            raise ValueError(f"LQ projection got {t} frames; needs {'1 + ' if first else ''}a multiple of {fpl}")
        if first:
            video = torch.cat([video[:, :, :1].expand(-1, -1, fpl - 1, -1, -1), video], dim=2)
        x = self._unshuffle(video)
        cache1 = x[:, :, :1].expand(-1, -1, CACHE_T, -1, -1) if first else self.cache1
        y = self._conv(self.conv1, torch.cat([cache1, x], dim=2))
        self.cache1 = x[:, :, -CACHE_T:].clone()
        y = F.silu(self.norm1(y))
        z_in = y if self.cache2 is None else torch.cat([self.cache2, y], dim=2)
        self.cache2 = y[:, :, -CACHE_T:].clone()
        if z_in.shape[2] < 4:
            return None
        z = F.silu(self.norm2(self._conv(self.conv2, z_in)))
        tokens = z.flatten(2).transpose(1, 2)  # (B, n*h*w, C): (f, h, w) order, as the DiT's tokens
        return [lin(tokens) for lin in self.linear_layers]
