"""Resampling on the compute device, with O(taps) work per output pixel.

Filters: ``bilinear`` and ``bicubic`` are torch's own (``F.interpolate``, antialiased when shrinking;
enlarging on CPU float32 runs the same kernels in ``cv2.resize``, within 1e-5).
``lanczos`` is Lanczos-3, separable: along each axis an output sample at input position ``c``
(``c = (o + 0.5) * n_in / n_out - 0.5``) is ``sum_k w_k x[k]`` over the input samples ``k`` with
``|k - c| < 3 / min(1, scale)``, ``w_k = sinc(d) sinc(d / 3)`` with ``d = (k - c) * min(1, scale)``
(the kernel is stretched when shrinking, i.e. antialiased), normalised to sum 1; taps outside the
image fold onto the border pixel (replicate). 6 taps per axis when enlarging, ``6 / scale`` when shrinking.

Two implementations of that one filter:

- CPU, float32, an integer factor per axis (2x, 4x, halving, ...): OpenCV polyphase. For an integer
  enlargement ``s`` the outputs ``s*i + p`` share one 6-tap kernel per phase ``p``, so an axis is
  ``s`` ``cv2.filter2D`` calls on the input (replicate border) whose results are interleaved
  (``cv2.merge`` across columns; written straight into strided row views of the output for rows).
  Equal to the reference matrix within 2e-6 on [0, 1] images (float32 accumulation; tested).
- everywhere else (CUDA, MPS, other factors, other dtypes): a gather of the taps in torch, per tap one
  ``index_select`` and one multiply-add, no host sync.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

try:  # OpenCV is a dependency; without it every path below still works in torch
    import cv2
except ImportError:  # pragma: no cover - exercised only on installs without OpenCV
    cv2 = None

FILTERS = ("bilinear", "bicubic", "lanczos")
LANCZOS_A = 3


def out_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """The output size for a scale: rounded, never below one pixel."""
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


@lru_cache(maxsize=128)
def lanczos_taps(n_in: int, n_out: int, a: int = LANCZOS_A) -> tuple[np.ndarray, np.ndarray]:
    """``(index (n_out, T) int64, weight (n_out, T) float64)`` of the Lanczos-``a`` filter from ``n_in`` to
    ``n_out`` samples. Indices are not clamped (``-1`` etc. mean "fold onto the border"); taps whose weight
    is zero for every output are dropped."""
    scale = n_out / n_in
    support = a / min(scale, 1.0)  # stretch the kernel when shrinking (antialias)
    centers = (np.arange(n_out, dtype=np.float64) + 0.5) / scale - 0.5
    first = np.floor(centers - support).astype(np.int64) + 1
    taps = int(math.ceil(2 * support)) + 1
    idx = first[:, None] + np.arange(taps)[None, :]
    d = (idx - centers[:, None]) * min(scale, 1.0)
    wts = np.sinc(d) * np.sinc(d / a)
    wts = np.where(np.abs(d) < a, wts, 0.0)
    wts = wts / wts.sum(1, keepdims=True)
    used = np.flatnonzero(np.abs(wts).max(0) > 0)
    lo, hi = int(used[0]), int(used[-1]) + 1
    return idx[:, lo:hi], wts[:, lo:hi]


def _lanczos_matrix_cpu(n_in: int, n_out: int, a: int = LANCZOS_A) -> torch.Tensor:
    """The dense ``(n_out, n_in)`` resampling matrix of the same filter: the reference the fast paths are
    tested against (not used per frame)."""
    idx, wts = lanczos_taps(n_in, n_out, a)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.scatter_add_(1, torch.from_numpy(np.clip(idx, 0, n_in - 1)), torch.from_numpy(wts))
    return m.to(torch.float32)


# --- torch: gather of the taps ------------------------------------------------------------------------

_device_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _device_taps(n_in: int, n_out: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    key = (n_in, n_out, str(device), dtype)
    t = _device_cache.get(key)
    if t is None:
        if len(_device_cache) > 128:
            _device_cache.clear()
        idx, wts = lanczos_taps(n_in, n_out)
        t = (
            torch.from_numpy(np.ascontiguousarray(np.clip(idx, 0, n_in - 1).T)).to(device),
            torch.from_numpy(np.ascontiguousarray(wts.T)).to(device=device, dtype=dtype),
        )
        _device_cache[key] = t
    return t


def _gather_axis(x: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    n_in = x.shape[dim]
    if n_in == n_out:
        return x
    idx, wts = _device_taps(n_in, n_out, x.device, x.dtype)
    view = [1] * x.dim()
    view[dim] = n_out
    out = None
    for t in range(idx.shape[0]):
        xs = x.index_select(dim, idx[t])
        w = wts[t].view(view)
        out = xs.mul_(w) if out is None else out.addcmul_(xs, w)
    return out


def _lanczos_torch(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    # the axis that shrinks goes first, so the second pass runs on fewer samples
    if size[1] * h <= size[0] * w:
        return _gather_axis(_gather_axis(x, -1, size[1]), -2, size[0])
    return _gather_axis(_gather_axis(x, -2, size[0]), -1, size[1])


# --- OpenCV: polyphase filtering ----------------------------------------------------------------------


def _factor(n_in: int, n_out: int) -> tuple[int, int] | None:
    """``(up, down)`` when ``n_out`` is an integer multiple or divisor of ``n_in``, else None."""
    if n_out == n_in:
        return 1, 1
    if n_out > n_in and n_out % n_in == 0:
        return n_out // n_in, 1
    if n_out < n_in and n_in % n_out == 0:
        return 1, n_in // n_out
    return None


@lru_cache(maxsize=128)
def _phase_kernels(n_in: int, n_out: int) -> tuple[tuple[np.ndarray, int], ...]:
    """Per phase: ``(kernel 1-D float32, anchor)`` such that ``filter2D`` gives the phase's outputs."""
    idx, wts = lanczos_taps(n_in, n_out)
    up, down = _factor(n_in, n_out)
    out = []
    for p in range(up):
        off = idx[p]  # output s*i + p (or o*down) reads input i + off (or o*down + off)
        lo, hi = min(int(off[0]), 0), max(int(off[-1]), 0)
        k = np.zeros(hi - lo + 1, np.float32)
        k[off - lo] = wts[p]
        out.append((k, -lo))
    return tuple(out)


def _cv_axis(p: np.ndarray, n_out: int, axis: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Resample one float32 image ``(H, W)`` or ``(H, W, C)`` along ``axis`` (1 = columns, 0 = rows)."""
    n_in = p.shape[axis]
    up, down = _factor(n_in, n_out)
    kernels = _phase_kernels(n_in, n_out)
    rep = cv2.BORDER_REPLICATE
    if axis == 1:
        if up > 1:
            phases = [cv2.filter2D(p, -1, k[None, :], anchor=(a, 0), borderType=rep) for k, a in kernels]
            y = cv2.merge(phases).reshape(p.shape[0], n_out, *p.shape[2:])
        else:
            k, a = kernels[0]
            y = np.ascontiguousarray(cv2.filter2D(p, -1, k[None, :], anchor=(a, 0), borderType=rep)[:, ::down])
        if dst is not None:
            dst[...] = y
            return dst
        return y
    if dst is None:
        dst = np.empty((n_out, *p.shape[1:]), np.float32)
    if up > 1:
        rows = dst.reshape(n_in, up, *p.shape[1:])
        for ph, (k, a) in enumerate(kernels):
            cv2.filter2D(p, -1, k[:, None], dst=rows[:, ph], anchor=(0, a), borderType=rep)
    else:
        k, a = kernels[0]
        dst[...] = cv2.filter2D(p, -1, k[:, None], anchor=(0, a), borderType=rep)[::down]
    return dst


def _cv_ok(x: torch.Tensor, size: tuple[int, int]) -> bool:
    return (
        cv2 is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not x.requires_grad
        and _factor(x.shape[-2], size[0]) is not None
        and _factor(x.shape[-1], size[1]) is not None
    )


def hwc_view(x: torch.Tensor) -> np.ndarray | None:
    """``(1, C, H, W)`` CPU float32 stored channels-last (the OpenCV path's layout) as its ``(H, W, C)`` numpy
    array, sharing memory; None for any other tensor."""
    if (
        cv2 is None or x.dim() != 4 or x.shape[0] != 1 or x.device.type != "cpu" or x.dtype != torch.float32
        or x.requires_grad or x.shape[1] > 4
    ):
        return None
    v = x[0].permute(1, 2, 0)
    return v.detach().numpy() if v.is_contiguous() else None


def from_hwc(a: np.ndarray) -> torch.Tensor:
    """An ``(H, W, C)`` float32 array as a ``(1, C, H, W)`` channels-last tensor (no copy)."""
    if a.ndim == 2:
        a = a[..., None]
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0)


def _cv_image(p: np.ndarray, size: tuple[int, int], dst: np.ndarray | None = None) -> np.ndarray:
    h, w = p.shape[:2]
    mid = _cv_axis(p, size[1], 1) if w != size[1] else p
    if h != size[0]:
        return _cv_axis(mid, size[0], 0, dst=dst)
    if dst is None:
        return mid.copy() if mid is p else mid
    dst[...] = mid
    return dst


def _lanczos_cv(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    hwc = hwc_view(x)
    if hwc is not None:  # channels-last: all channels in each OpenCV call
        return from_hwc(_cv_image(hwc, size))
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    planes = x.detach().reshape(-1, h, w).contiguous().numpy()
    out = np.empty((planes.shape[0], *size), np.float32)
    for i, p in enumerate(planes):
        _cv_image(p, size, dst=out[i])
    return torch.from_numpy(out).view(*lead, *size)


_CV_INTERP = {"bilinear": getattr(cv2, "INTER_LINEAR", None), "bicubic": getattr(cv2, "INTER_CUBIC", None)}


def _cv_plain_ok(x: torch.Tensor) -> bool:
    return cv2 is not None and x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad


def _interp_cv(x: torch.Tensor, size: tuple[int, int], interp: int) -> torch.Tensor:
    """Enlarging bilinear/bicubic on CPU float32 with ``cv2.resize``: the same kernels as torch's
    ``F.interpolate(align_corners=False)`` (cubic a = -0.75, half-pixel centres, replicated border),
    within 1e-5 (tested), several times faster on the CPU."""
    dsize = (size[1], size[0])
    hwc = hwc_view(x)
    if hwc is not None:
        return from_hwc(cv2.resize(hwc, dsize, interpolation=interp).reshape(size[0], size[1], -1))
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    planes = x.detach().reshape(-1, h, w).contiguous().numpy()
    out = np.empty((planes.shape[0], *size), np.float32)
    for i, p in enumerate(planes):
        cv2.resize(p, dsize, dst=out[i], interpolation=interp)
    return torch.from_numpy(out).view(*lead, *size)


def resize(x: torch.Tensor, size: tuple[int, int], filter: str = "bicubic") -> torch.Tensor:
    """Resize ``(N,C,H,W)`` to ``size`` with an antialiased filter. Output is not clamped.

    The input is never written to; when ``size`` is the input's size, the input itself is returned."""
    size = (int(size[0]), int(size[1]))
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if filter == "lanczos":
        return _lanczos_cv(x, size) if _cv_ok(x, size) else _lanczos_torch(x, size)
    if filter not in ("bilinear", "bicubic"):
        raise ValueError(f"unknown filter {filter!r}; choose one of {FILTERS}")
    shrink = size[0] < h or size[1] < w
    if not shrink and _cv_plain_ok(x):
        return _interp_cv(x, size, _CV_INTERP[filter])
    # antialias only matters when shrinking, and is not implemented for every dtype/device
    if shrink and x.dtype in (torch.float16, torch.bfloat16):
        return F.interpolate(x.float(), size=size, mode=filter, align_corners=False, antialias=True).to(x.dtype)
    return F.interpolate(x, size=size, mode=filter, align_corners=False, antialias=shrink)


# --- blur, sharpening, clamping -----------------------------------------------------------------------


def _gauss_radius(sigma: float) -> int:
    return max(1, int(math.ceil(2.5 * sigma)))


def _gauss_kernel(sigma: float, device, dtype) -> torch.Tensor:
    r = _gauss_radius(sigma)
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


@lru_cache(maxsize=16)
def _gauss_kernel_np(sigma: float) -> np.ndarray:
    return _gauss_kernel(sigma, "cpu", torch.float32).numpy()


def _cv_planes(x: torch.Tensor) -> np.ndarray | None:
    """``x`` as ``(planes, H, W)`` float32 numpy sharing its memory, when OpenCV can work on it in place."""
    if cv2 is None or x.device.type != "cpu" or x.dtype != torch.float32 or x.requires_grad or not x.is_contiguous():
        return None
    return x.detach().numpy().reshape(-1, *x.shape[-2:])


def _cv_flat(x: torch.Tensor) -> np.ndarray | None:
    """``x``'s memory as one 2-D float32 array (any dense layout OpenCV can treat element-wise), or None."""
    hwc = hwc_view(x)
    if hwc is not None:
        return hwc.reshape(hwc.shape[0], -1)
    planes = _cv_planes(x)
    return planes.reshape(-1, x.shape[-1]) if planes is not None else None


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N,C,H,W)`` with replicate borders (radius ``ceil(2.5 sigma)``)."""
    hwc = hwc_view(x)
    if hwc is not None:
        k = _gauss_kernel_np(float(sigma))
        return from_hwc(cv2.sepFilter2D(hwc, -1, k, k, borderType=cv2.BORDER_REPLICATE))
    planes = _cv_planes(x)
    if planes is not None:
        k = _gauss_kernel_np(float(sigma))
        out = np.empty_like(planes)
        for i, p in enumerate(planes):
            cv2.sepFilter2D(p, -1, k, k, dst=out[i], borderType=cv2.BORDER_REPLICATE)
        return torch.from_numpy(out).view(x.shape)
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
    blur = gaussian_blur(x, sigma)
    a, b = _cv_flat(x), _cv_flat(blur)
    if a is not None and b is not None and a.shape == b.shape and (hwc_view(x) is None) == (hwc_view(blur) is None):
        out = cv2.addWeighted(a, 1.0 + amount, b, -amount, 0.0)
        return from_hwc(out.reshape(x.shape[2], x.shape[3], -1)) if hwc_view(x) is not None else torch.from_numpy(out).view(x.shape)
    return x + amount * (x - blur)


def clamp01_(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] in place. On CPU float32 this runs in OpenCV: a
    large torch op right after OpenCV work can wait on OpenCV's busy worker threads on a small machine."""
    flat = _cv_flat(x)
    if flat is None:
        return x.clamp_(0.0, 1.0)
    cv2.threshold(flat, 1.0, 1.0, cv2.THRESH_TRUNC, dst=flat)
    cv2.threshold(flat, 0.0, 0.0, cv2.THRESH_TOZERO, dst=flat)
    return x
