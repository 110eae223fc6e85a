"""Per-frame colour correction of the decoded frames against the (bicubic) LQ frames.

- ``wavelet``: the decoded frame's high frequencies + the LQ frame's low frequencies (5 levels of
  a dilated 3x3 binomial blur, replicate borders). Always computed in fp32: in bf16 it leaves
  visible stripes.
- ``adain``: per-channel mean/std of the decoded frame matched to the LQ frame's.

Both are per frame, so they stream without state. Inputs/outputs ``(N, 3, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METHODS = ("wavelet", "adain", "none")

def _blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The 3x3 binomial kernel [1,2,1]/4 (x) [1,2,1]/4 dilated by ``radius``, replicate borders
    (separable: two 1-D passes of shifted adds instead of a depthwise conv)."""
    r = radius
    p = F.pad(x, (r, r, r, r), mode="replicate")
    h, w = x.shape[-2:]
    rows = 0.25 * p[..., 0:h, :] + 0.5 * p[..., r : r + h, :] + 0.25 * p[..., 2 * r : 2 * r + h, :]
    return 0.25 * rows[..., 0:w] + 0.5 * rows[..., r : r + w] + 0.25 * rows[..., 2 * r : 2 * r + w]


def _split(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    high = torch.zeros_like(x)
    low = x
    for i in range(levels):
        blurred = _blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_fix(hq: torch.Tensor, lq: torch.Tensor, levels: int = 5) -> torch.Tensor:
    high, _ = _split(hq.float(), levels)
    _, low = _split(lq.float(), levels)
    return high + low


def adain_fix(hq: torch.Tensor, lq: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    hq, lq = hq.float(), lq.float()
    hm, hv = hq.mean((2, 3), keepdim=True), hq.var((2, 3), unbiased=False, keepdim=True)
    lm, lv = lq.mean((2, 3), keepdim=True), lq.var((2, 3), unbiased=False, keepdim=True)
    return (hq - hm) / (hv + eps).sqrt() * (lv + eps).sqrt() + lm


def color_fix(hq: torch.Tensor, lq: torch.Tensor, method: str = "wavelet") -> torch.Tensor:
    if method == "wavelet":
        out = wavelet_fix(hq, lq)
    elif method == "adain":
        out = adain_fix(hq, lq)
    elif method == "none":
        out = hq.float()
    else:
        raise ValueError(f"unknown colour fix {method!r}; choose one of {', '.join(METHODS)}")
    return out.clamp_(-1.0, 1.0)
