"""Resampling on the compute device: bicubic/bilinear through torch, Lanczos as two small matmuls.

Lanczos is written as separable resampling matrices (out x in) built once per size and
cached, so it costs two GEMMs per frame on any device and handles any scale factor,
including downscales (the kernel is stretched, i.e. antialiased).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

FILTERS = ("bilinear", "bicubic", "lanczos")


def out_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """The output size for a scale: rounded, never below one pixel."""
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


@lru_cache(maxsize=64)
def _lanczos_matrix_cpu(n_in: int, n_out: int, a: int) -> torch.Tensor:
    scale = n_out / n_in
    support = a / min(scale, 1.0)  # stretch the kernel when shrinking (antialias)
    centers = (torch.arange(n_out, dtype=torch.float64) + 0.5) / scale - 0.5
    first = torch.floor(centers - support).long() + 1
    taps = int(math.ceil(2 * support)) + 1
    idx = first[:, None] + torch.arange(taps)[None, :]
    d = (idx.to(torch.float64) - centers[:, None]) * min(scale, 1.0)
    wts = torch.sinc(d) * torch.sinc(d / a)
    wts = torch.where(d.abs() < a, wts, torch.zeros_like(wts))
    wts = wts / wts.sum(1, keepdim=True)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.scatter_add_(1, idx.clamp(0, n_in - 1), wts)  # edge taps fold onto the border pixel
    return m.to(torch.float32)


_device_cache: dict[tuple, torch.Tensor] = {}


def _lanczos_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype, a: int = 3) -> torch.Tensor:
    key = (n_in, n_out, a, str(device), dtype)
    m = _device_cache.get(key)
    if m is None:
        if len(_device_cache) > 128:
            _device_cache.clear()
        m = _lanczos_matrix_cpu(n_in, n_out, a).to(device=device, dtype=dtype)
        _device_cache[key] = m
    return m


def resize(x: torch.Tensor, size: tuple[int, int], filter: str = "bicubic") -> torch.Tensor:
    """Resize ``(N,C,H,W)`` to ``size`` with an antialiased filter. Output is not clamped."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if filter == "lanczos":
        my = _lanczos_matrix(h, size[0], x.device, x.dtype)
        mx = _lanczos_matrix(w, size[1], x.device, x.dtype)
        return torch.matmul(my, torch.matmul(x, mx.t()))
    if filter not in ("bilinear", "bicubic"):
        raise ValueError(f"unknown filter {filter!r}; choose one of {FILTERS}")
    shrink = size[0] < h or size[1] < w
    # antialias only matters when shrinking, and is not implemented for every dtype/device
    if shrink and x.dtype in (torch.float16, torch.bfloat16):
        return F.interpolate(x.float(), size=size, mode=filter, align_corners=False, antialias=True).to(x.dtype)
    return F.interpolate(x, size=size, mode=filter, align_corners=False, antialias=shrink)


def _gauss_kernel(sigma: float, device, dtype) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N,C,H,W)`` with replicate borders."""
    k = _gauss_kernel(sigma, x.device, x.dtype)
    r = k.numel() // 2
    c = x.shape[1]
    y = F.pad(x, (r, r, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def unsharp(x: torch.Tensor, amount: float, sigma: float = 1.0) -> torch.Tensor:
    """Unsharp mask: ``x + amount * (x - blur(x))``. ``amount == 0`` returns ``x`` untouched."""
    if amount <= 0:
        return x
    return x + amount * (x - gaussian_blur(x, sigma))
