"""Image operations on ``(N,C,H,W)`` tensors shared by the node and the backends: luma, backward
warp, dense Lucas-Kanade flow, 3x3 min/max and thumbnails. No state, no host syncs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)


def luma(x: torch.Tensor) -> torch.Tensor:
    r, g, b = _LUMA  # python scalars: no host-to-device copy per frame
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def scale_flow(flow: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Multiply the x and y components of ``(N,2,H,W)`` flow by python scalars (no device tensor made)."""
    return torch.cat([flow[:, :1] * sx, flow[:, 1:] * sy], 1)


_grid_cache: dict[tuple, torch.Tensor] = {}


def _base_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    key = (h, w, str(device), dtype)
    g = _grid_cache.get(key)
    if g is None:
        if len(_grid_cache) > 32:
            _grid_cache.clear()
        ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype) if h > 1 else torch.zeros(1, device=device, dtype=dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype) if w > 1 else torch.zeros(1, device=device, dtype=dtype)
        g = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]  # (1,h,w,2) as (x,y)
        _grid_cache[key] = g
    return g


def warp(x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Backward warp: ``out(p) = x(p + flow(p))``; flow ``(N,2,H,W)`` in pixels of ``x``'s grid."""
    n, _, h, w = x.shape
    grid = _base_grid(h, w, x.device, x.dtype) + scale_flow(flow, 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)).permute(
        0, 2, 3, 1
    )
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=True)


def box_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)


def lk_flow(cur: torch.Tensor, prev: torch.Tensor, levels: int = 4, iters: int = 3, win: int = 7) -> torch.Tensor:
    """Dense backward flow ``cur -> prev`` (pixels) by pyramid Lucas-Kanade on ``(N,1,H,W)`` images."""
    pyr_c, pyr_p = [cur], [prev]
    while len(pyr_c) < levels and min(pyr_c[-1].shape[-2:]) >= 16:
        pyr_c.append(F.avg_pool2d(pyr_c[-1], 2, ceil_mode=True))
        pyr_p.append(F.avg_pool2d(pyr_p[-1], 2, ceil_mode=True))
    flow = None
    for c, p in zip(reversed(pyr_c), reversed(pyr_p)):
        h, w = c.shape[-2:]
        if flow is None:
            flow = torch.zeros((c.shape[0], 2, h, w), device=c.device, dtype=c.dtype)
        else:
            sy, sx = h / flow.shape[-2], w / flow.shape[-1]
            flow = scale_flow(F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False), sx, sy)
        for _ in range(iters):
            pw = warp(p, flow)
            bp = F.pad(0.5 * (pw + c), (1, 1, 1, 1), mode="replicate")  # symmetric gradients converge faster
            gx = (bp[..., 1:-1, 2:] - bp[..., 1:-1, :-2]) * 0.5
            gy = (bp[..., 2:, 1:-1] - bp[..., :-2, 1:-1]) * 0.5
            gt = pw - c
            # the five window sums in one pooling call
            sxx, syy, sxy, sxt, syt = box_filter(torch.cat([gx * gx, gy * gy, gx * gy, gx * gt, gy * gt], 1), win).split(1, 1)
            sxx, syy = sxx + 1e-4, syy + 1e-4
            det = sxx * syy - sxy * sxy
            du = -(syy * sxt - sxy * syt) / det
            dv = -(sxx * syt - sxy * sxt) / det
            # smoothing every update is what keeps per-pixel LK from wandering (aperture problem)
            flow = box_filter(flow + torch.cat([du, dv], 1).clamp_(-2.0, 2.0), 5)
    return flow


def minmax3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 min and max with replicate borders, as separable shifted min/max (max_pool2d with stride 1
    is slow on CPU)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    a, b, c = p[..., :, :-2], p[..., :, 1:-1], p[..., :, 2:]
    hmax, hmin = torch.maximum(torch.maximum(a, b), c), torch.minimum(torch.minimum(a, b), c)
    hi = torch.maximum(torch.maximum(hmax[..., :-2, :], hmax[..., 1:-1, :]), hmax[..., 2:, :])
    lo = torch.minimum(torch.minimum(hmin[..., :-2, :], hmin[..., 1:-1, :]), hmin[..., 2:, :])
    return lo, hi


def area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="area")


def thumbnails(x: torch.Tensor, side: int = 16) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, side)


# --- the same Lucas-Kanade flow in OpenCV, for the CPU -------------------------------------------------

try:
    import cv2
except ImportError:  # pragma: no cover - lk_flow above needs no OpenCV
    cv2 = None


def _half_cv(x):
    return cv2.resize(x, ((x.shape[1] + 1) // 2, (x.shape[0] + 1) // 2), interpolation=cv2.INTER_AREA)


def lk_flow_cv(cur, prev, levels: int = 4, iters: int = 3, win: int = 7, init=None):
    """:func:`lk_flow` on ``(H, W)`` float32 numpy images, step for step in OpenCV (one ``remap`` per
    iteration, box filters, element-wise ops; the windows near the border weigh replicated pixels instead
    of leaving them out). Returns the backward flow ``cur -> prev`` as ``(H, W, 2)`` float32 pixels."""
    import numpy as np

    pyr_c, pyr_p = [cur], [prev]
    while len(pyr_c) < levels and min(pyr_c[-1].shape[:2]) >= 16:
        pyr_c.append(_half_cv(pyr_c[-1]))
        pyr_p.append(_half_cv(pyr_p[-1]))
    rep = cv2.BORDER_REPLICATE
    kx = np.array([[-0.5, 0.0, 0.5]], np.float32)
    flow = init
    if init is not None:  # refine a given flow at full size only
        pyr_c, pyr_p = [cur], [prev]
    for c, p in zip(reversed(pyr_c), reversed(pyr_p)):
        h, w = c.shape[:2]
        if flow is None:
            flow = np.zeros((h, w, 2), np.float32)
        elif flow.shape[:2] != (h, w):
            sy, sx = h / flow.shape[0], w / flow.shape[1]
            flow = cv2.multiply(cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR), (sx, sy, 0.0, 0.0))
        for _ in range(iters):
            pw = cv2.remap(p, flow, None, cv2.INTER_LINEAR | cv2.WARP_RELATIVE_MAP, borderMode=rep)
            avg = cv2.addWeighted(pw, 0.5, c, 0.5, 0.0)  # symmetric gradients converge faster
            gx = cv2.filter2D(avg, -1, kx, borderType=rep)
            gy = cv2.filter2D(avg, -1, kx.T, borderType=rep)
            gt = cv2.subtract(pw, c)
            box = lambda a: cv2.blur(a, (win, win), borderType=rep)  # noqa: E731
            sxx = cv2.add(box(cv2.multiply(gx, gx)), 1e-4)
            syy = cv2.add(box(cv2.multiply(gy, gy)), 1e-4)
            sxy = box(cv2.multiply(gx, gy))
            sxt = box(cv2.multiply(gx, gt))
            syt = box(cv2.multiply(gy, gt))
            det = cv2.subtract(cv2.multiply(sxx, syy), cv2.multiply(sxy, sxy))
            du = cv2.divide(cv2.subtract(cv2.multiply(sxy, syt), cv2.multiply(syy, sxt)), det)
            dv = cv2.divide(cv2.subtract(cv2.multiply(sxy, sxt), cv2.multiply(sxx, syt)), det)
            for d in (du, dv):
                cv2.min(d, 2.0, dst=d)
                cv2.max(d, -2.0, dst=d)
            # smoothing every update is what keeps per-pixel LK from wandering (aperture problem)
            flow = cv2.blur(cv2.add(flow, cv2.merge([du, dv])), (5, 5), borderType=rep)
    return flow
