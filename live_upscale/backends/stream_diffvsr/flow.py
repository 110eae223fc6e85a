"""Motion for the temporal guidance: flow between consecutive *low-res* frames, warp of the HR history.

Upstream runs torchvision's RAFT-large on bicubic x4-upscaled frames, for the whole sequence up
front. Here flow is computed per frame, at low resolution (``flow_scale`` times the LR size), then
resized and rescaled to the output grid: the output is 16x the pixels of the input, the flow is
smooth, and RAFT's cost grows with the pixel count.

Estimators (``flow`` option):

- ``lk``: the node's pyramid Lucas-Kanade (``ops.flow.lk_flow``), no weights, cheap;
- ``raft``: torchvision ``raft_large`` with its released weights, read from a file (torch hub's
  cache, or the ``raft_weights`` option) without executing code; never downloaded here
  (``raft_weights='random'`` gives an untrained RAFT, for speed benchmarks);
- ``auto``: ``raft`` on CUDA when its weights are on disk, else ``lk``;
- ``none``: zero motion (the previous output is used unwarped).

Both give *backward* flow ``cur -> prev`` in pixels: ``prev(p + flow(p))`` lines up with ``cur(p)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import BackendUnavailable, WeightsMissing
from ...ops.flow import lk_flow, luma

RAFT_FILE = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"  # torchvision's Raft_Large_Weights.C_T_SKHT_V2 (DEFAULT)
RAFT_MIN = 128  # RAFT's correlation pyramid wants a few 1/8-scale cells per level


def raft_weights_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """Where RAFT-large weights are on disk (explicit path, else torch hub's checkpoint cache), or None."""
    if explicit:
        p = Path(explicit).expanduser()
        return p if p.is_file() else None
    try:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / RAFT_FILE
    except Exception:  # noqa: BLE001 - a broken hub config just means "not there"
        return None
    return hub if hub.is_file() else None


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp with the convention the official model was trained with.

    Pixel grid ``p + flow`` normalised by ``(size - 1)`` and sampled with ``align_corners=False``,
    bilinear, zeros outside the frame (the model has learned that zero = mid-grey means "no history").
    """
    n, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=flow.dtype).view(1, h, 1).expand(1, h, w)
    xs = torch.arange(w, device=x.device, dtype=flow.dtype).view(1, 1, w).expand(1, h, w)
    gx = 2.0 * (xs + flow[:, 0]) / max(w - 1, 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=3).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Flow in pixels of one grid -> flow in pixels of a grid of ``size`` (values rescaled per axis)."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    sx, sy = size[1] / w, size[0] / h
    return out * torch.tensor([sx, sy], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)


class FlowEstimator:
    """Backward flow between two LR frames in [0, 1], returned on the LR grid (float32)."""

    name = "none"

    def __init__(self, scale: float = 1.0):
        self.scale = float(scale)

    def _at_scale(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        h, w = x.shape[-2:]
        size = (max(8, round(h * self.scale)), max(8, round(w * self.scale)))
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)

    def estimate(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return torch.zeros((cur.shape[0], 2, *cur.shape[-2:]), device=cur.device, dtype=torch.float32)

    def __call__(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        lr_size = tuple(cur.shape[-2:])
        c, p = self._at_scale(cur.float()), self._at_scale(prev.float())
        return resize_flow(self.estimate(c, p).float(), lr_size)

    def describe(self) -> str:
        return self.name if self.name == "none" else f"{self.name} at {self.scale:g}x LR"


class LKFlow(FlowEstimator):
    name = "lk"

    def estimate(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return lk_flow(luma(cur), luma(prev))


class RaftFlow(FlowEstimator):
    """torchvision RAFT-large; inputs padded (replicate) to a multiple of 8 and at least 128 px."""

    name = "raft"

    def __init__(self, device: torch.device, scale: float = 1.0, weights: str | os.PathLike | None = None,
                 iters: int = 12, dtype: torch.dtype = torch.float32):
        super().__init__(scale)
        from ... import weights as wm
        from ..base import missing_package

        if weights == "random":  # benchmarks only: RAFT's cost without its weights
            path = None
        elif (path := raft_weights_path(weights)) is None:
            where = weights or (Path(torch.hub.get_dir()) / "checkpoints" / RAFT_FILE)
            raise WeightsMissing(
                f"RAFT-large weights not found at {where}: put torchvision's {RAFT_FILE} there (or pass "
                "raft_weights=PATH), or use flow='lk'"
            )
        if why := missing_package("torchvision"):
            raise BackendUnavailable(f"RAFT flow: {why} (pip install torchvision), or use flow='lk'")
        from torchvision.models.optical_flow import raft_large

        self.model = raft_large(weights=None, progress=False)
        if path is not None:
            self.model.load_state_dict(wm.load_state_dict(path))
        self.model = self.model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.iters = int(iters)
        self.dtype = dtype

    def estimate(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        h, w = cur.shape[-2:]
        th, tw = max(RAFT_MIN, -(-h // 8) * 8), max(RAFT_MIN, -(-w // 8) * 8)
        pad = (0, tw - w, 0, th - h)
        c = F.pad(cur * 2 - 1, pad, mode="replicate").to(self.dtype)
        p = F.pad(prev * 2 - 1, pad, mode="replicate").to(self.dtype)
        flow = self.model(c, p, num_flow_updates=self.iters)[-1]
        return flow[..., :h, :w]


def make_flow(kind: str, device: torch.device, scale: float = 1.0, raft_weights: str | None = None,
              raft_iters: int = 12) -> FlowEstimator:
    kind = (kind or "auto").lower()
    if kind == "auto":
        from ..base import missing_package

        have = raft_weights_path(raft_weights) is not None and missing_package("torchvision") is None
        kind = "raft" if device.type == "cuda" and have else "lk"
    if kind == "lk":
        return LKFlow(scale)
    if kind == "raft":
        return RaftFlow(device, scale, raft_weights, raft_iters)
    if kind == "none":
        return FlowEstimator(scale)
    raise ValueError(f"unknown flow estimator {kind!r}: use auto, raft, lk or none")
