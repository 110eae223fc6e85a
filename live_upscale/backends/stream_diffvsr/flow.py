"""Motion for the temporal guidance: backward flow ``cur -> prev``, warp of the HR history.

Upstream runs torchvision's RAFT-large on the bicubic x4-upscaled frames (in [-1, 1], at HR), for
the whole sequence up front. Here flow is computed per frame, where ``at`` says:

- ``hr``: on the bicubic x4 frames at HR, as upstream (the default for RAFT);
- ``lr``: on the LR frames (``flow_scale`` times the LR size), then resized and rescaled to the
  HR grid: 16x fewer pixels, a smooth field, much cheaper (the default for Lucas-Kanade).

Estimators (``flow`` option):

- ``lk``: the node's pyramid Lucas-Kanade (``ops.flow.lk_flow``), no weights, cheap;
- ``raft``: torchvision ``raft_large`` with its released weights, read from a file (torch hub's
  cache, or the ``raft_weights`` option) without executing code; never downloaded here
  (``raft_weights='random'`` gives an untrained RAFT, for speed benchmarks);
- ``auto``: ``raft`` on CUDA when its weights are on disk, else ``lk``;
- ``none``: zero motion (the previous output is used unwarped);
- :class:`GivenFlow`: a recorded HR flow per frame (``flow_file`` option, or
  ``StreamDiffVSREngine.set_flow``), for parity checks against upstream.

All give *backward* flow ``cur -> prev`` in HR pixels on the HR grid: ``prev(p + flow(p))``
lines up with ``cur(p)``.
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
    """Backward flow between two LR frames in [0, 1], returned on the HR grid in HR pixels (float32)."""

    name = "none"

    def __init__(self, scale: float = 1.0, at: str = "lr"):
        self.scale = float(scale)
        if at not in ("lr", "hr"):
            raise ValueError(f"flow_at must be 'lr' or 'hr', not {at!r}")
        self.at = at

    def _at_scale(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        h, w = x.shape[-2:]
        size = (max(8, round(h * self.scale)), max(8, round(w * self.scale)))
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)

    def estimate(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Flow in pixels of the grid of ``cur``/``prev`` (images in [-1, 1])."""
        return torch.zeros((cur.shape[0], 2, *cur.shape[-2:]), device=cur.device, dtype=torch.float32)

    def __call__(self, cur: torch.Tensor, prev: torch.Tensor, hr_size: tuple[int, int], index: int = 0) -> torch.Tensor:
        """``cur``/``prev``: LR frames in [0, 1]; ``index``: the frame's number in the stream."""
        if self.at == "hr":  # upstream: F.interpolate(x, scale_factor=4, mode='bicubic') on [-1, 1]
            f = hr_size[0] / cur.shape[-2]
            c = F.interpolate(cur.float() * 2 - 1, scale_factor=f, mode="bicubic")
            p = F.interpolate(prev.float() * 2 - 1, scale_factor=f, mode="bicubic")
        else:
            c, p = self._at_scale(cur.float() * 2 - 1), self._at_scale(prev.float() * 2 - 1)
        return resize_flow(self.estimate(c, p).float(), tuple(hr_size))

    def describe(self) -> str:
        if self.name == "none":
            return self.name
        return f"{self.name} at HR" if self.at == "hr" else f"{self.name} at {self.scale:g}x LR"


class GivenFlow(FlowEstimator):
    """Recorded flow: ``flow[k]`` ``(2, H, W)`` in HR pixels is used for frame ``k + 1`` of the
    stream (counted from the last reset); or a callable ``(index, cur, prev) -> (1, 2, H, W)``."""

    name = "given"

    def __init__(self, flow):
        super().__init__(1.0, "hr")
        if not callable(flow):
            flow = torch.as_tensor(flow).float()
            if flow.dim() == 3:
                flow = flow[None]
            if flow.dim() != 4 or flow.shape[1] != 2:
                raise ValueError(f"given flow must be (N, 2, H, W), got {tuple(flow.shape)}")
        self.flow = flow

    def __call__(self, cur, prev, hr_size, index: int = 0) -> torch.Tensor:
        if callable(self.flow):
            f = self.flow(index, cur, prev)
        else:
            if not 1 <= index <= self.flow.shape[0]:
                raise ValueError(f"given flow covers frames 1..{self.flow.shape[0]}, not frame {index}")
            f = self.flow[index - 1 : index]
        f = torch.as_tensor(f).to(cur.device, torch.float32)
        return f if tuple(f.shape[-2:]) == tuple(hr_size) else resize_flow(f, tuple(hr_size))

    def describe(self) -> str:
        return "given"


def read_flow_file(path: str | os.PathLike, key: str = "flow") -> torch.Tensor:
    from ... import weights as wm

    sd = wm.load_state_dict(path)
    t = sd.get(key, next(iter(sd.values())) if len(sd) == 1 else None)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor named {key!r}")
    return t.float()


class LKFlow(FlowEstimator):
    name = "lk"

    def estimate(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return lk_flow(luma(cur * 0.5 + 0.5), luma(prev * 0.5 + 0.5))


class RaftFlow(FlowEstimator):
    """torchvision RAFT-large; inputs padded (replicate) to a multiple of 8 and at least 128 px."""

    name = "raft"

    def __init__(self, device: torch.device, scale: float = 1.0, weights: str | os.PathLike | None = None,
                 iters: int = 12, dtype: torch.dtype = torch.float32, at: str = "hr"):
        super().__init__(scale, at)
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
        c = F.pad(cur, pad, mode="replicate").to(self.dtype)  # no-op where upstream can run RAFT at all
        p = F.pad(prev, pad, mode="replicate").to(self.dtype)
        flow = self.model(c, p, num_flow_updates=self.iters)[-1]
        return flow[..., :h, :w]


def make_flow(kind: str, device: torch.device, scale: float = 1.0, raft_weights: str | None = None,
              raft_iters: int = 12, at: str = "auto") -> FlowEstimator:
    """``at``: ``hr`` (upstream's grid), ``lr``, or ``auto`` (RAFT at HR as upstream, LK at LR)."""
    kind = (kind or "auto").lower()
    if kind == "auto":
        from ..base import missing_package

        have = raft_weights_path(raft_weights) is not None and missing_package("torchvision") is None
        kind = "raft" if device.type == "cuda" and have else "lk"
    at = (at or "auto").lower()
    if at == "auto":
        at = "hr" if kind == "raft" else "lr"
    if kind == "lk":
        return LKFlow(scale, at)
    if kind == "raft":
        return RaftFlow(device, scale, raft_weights, raft_iters, at=at)
    if kind == "none":
        return FlowEstimator(scale, at)
    raise ValueError(f"unknown flow estimator {kind!r}: use auto, raft, lk or none")
