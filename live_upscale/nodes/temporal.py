"""Temporal stages of the node: a motion-compensated stabilizer and a scene-cut detector.

Stabilizer (for frame-by-frame backends: classic, realesrgan, RTX VSR). Each frame:

1. motion between the previous and the current *low-res* frame, on the luma, at a working size of
   at most ``max_flow_side`` px (halvings; 512: on Vid4 city halving it once more costs 1.3 warping-error
   points): on CUDA/MPS pyramid Lucas-Kanade in torch (a few dozen small convolutions, no host
   sync); on the CPU OpenCV's DIS flow (ultrafast preset, no weights; about 1 ms) refined by two
   Lucas-Kanade iterations at the working size (``ops.flow.lk_flow_cv``), which on Vid4 is slightly
   better than the full pyramid and a fraction of its cost (DIS alone is worse, see the README);
2. the previous *output* is warped onto the current frame (bicubic sampling keeps detail when
   the history is resampled frame after frame) and clamped to the current output's 3x3
   min/max (the TAA neighbourhood clamp that stops ghost trails);
3. evidence gate per pixel: the warped history, downscaled, must explain the current low-res
   frame about as well as the current output does; where it does worse (occlusion, wrong
   motion, new content) its weight falls to zero. A global gate drops the history on a scene
   cut, on the device, without a host sync;
4. blend: ``out = cur + 0.9*strength*gate*(history - cur)``; ``out`` becomes the next history.

On the CPU every step runs in OpenCV on channels-last float32 images: the warp is one
``cv2.remap`` (bicubic, relative map), the clamp is ``erode``/``dilate`` + ``max``/``min``, the gates
are computed at low resolution and the blend is one ``cv2.blendLinear`` (its result needs no clamp:
it is a convex mix of the current output and a history clamped into its range). On CUDA/MPS the
same steps run in torch on the device.

Scene cuts for temporal backends (whose state lives in the engine) are found with thumbnails
(16x16, mean absolute difference) and need one tiny host read per batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.flow import area_resize, box_filter, lk_flow, lk_flow_cv, luma, minmax3, scale_flow, thumbnails, warp
from ..ops.resample import from_hwc, hwc_view

try:
    import cv2
except ImportError:  # pragma: no cover - the torch path below needs no OpenCV
    cv2 = None
CV_OK = cv2 is not None and hasattr(cv2, "WARP_RELATIVE_MAP")  # OpenCV >= 4.10; else the torch path on CPU too


def _hwc(t: torch.Tensor) -> np.ndarray:
    """``(1,3,H,W)`` CPU float32 as an ``(H,W,3)`` array: a view when channels-last, else interleaved once."""
    v = hwc_view(t)
    return v if v is not None else cv2.merge(list(t[0].detach().float().contiguous().numpy()))


class Stabilizer:
    """Motion-compensated recursive blend of the upscaler's outputs. See the module docstring."""

    DIS_PRESET = "ULTRAFAST"
    # OpenCV's DIS refuses frames under 12 px and crashes the process (segfault, OpenCV 4.x) on short wide
    # ones, e.g. 20x200; from 32 px on both sides it is sound: smaller flow images take the LK flow
    DIS_MIN_SIDE = 32

    def __init__(self, cut_threshold: float = 0.12, tau: float = 0.01, max_flow_side: int = 512,
                 detail_sigma: float | None = 0.05, cpu_flow: str = "dis+lk", refine_iters: int = 2):
        self.cut_threshold = cut_threshold
        self.detail_sigma = detail_sigma
        self.max_flow_side = max_flow_side
        # CPU flow: "dis+lk" = DIS (ultrafast) refined by `refine_iters` Lucas-Kanade iterations at the working
        # size; "lk" = the full pyramid LK (as the torch path, slower); "dis" alone (worse on Vid4, see README)
        if cpu_flow not in ("dis+lk", "lk", "dis"):
            raise ValueError(f"cpu_flow must be 'dis+lk', 'lk' or 'dis', not {cpu_flow!r}")
        self.cpu_flow = cpu_flow
        self.refine_iters = refine_iters
        self.tau = tau
        self._dis = None
        self.reset()

    def reset(self) -> None:
        self.prev_lr: torch.Tensor | None = None
        self.prev_hr: torch.Tensor | None = None
        self.prev_thumb: torch.Tensor | None = None
        self._cv_prev: tuple | None = None  # CPU path: (luma at the flow size, 16x16 thumbnail, lr shape)

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor, strength: float) -> torch.Tensor:
        """``lr (N,3,h,w)`` inputs and ``hr (N,3,H,W)`` backend outputs, in order -> stabilized outputs."""
        if strength <= 0:
            self.reset()
            return hr
        one = self._one_cv if CV_OK and hr.device.type == "cpu" else self._one
        outs = [one(lr[i : i + 1], hr[i : i + 1], strength) for i in range(hr.shape[0])]
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _flow(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Flow at a working size of at most ``max_flow_side`` px (halvings), returned at full low-res size."""
        h, w = cur.shape[-2:]
        k = 1
        while max(h, w) // k > self.max_flow_side:
            k *= 2
        if k == 1:
            return lk_flow(cur, prev)
        small = lk_flow(F.avg_pool2d(cur, k, ceil_mode=True), F.avg_pool2d(prev, k, ceil_mode=True))
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False) * float(k)

    def _one(self, lr: torch.Tensor, hr: torch.Tensor, strength: float) -> torch.Tensor:
        lr = lr.float()
        hr = hr.float()
        thumb = thumbnails(lr)
        if self.prev_hr is None or self.prev_hr.shape != hr.shape or self.prev_lr.shape != lr.shape:
            self.prev_lr, self.prev_hr, self.prev_thumb = lr, hr, thumb
            return hr
        h, w = lr.shape[-2:]
        big_h, big_w = hr.shape[-2:]
        flow = self._flow(luma(lr), luma(self.prev_lr))
        flow_hr = F.interpolate(flow, size=(big_h, big_w), mode="bilinear", align_corners=False)
        flow_hr = scale_flow(flow_hr, big_w / w, big_h / h)
        hist = warp(self.prev_hr, flow_hr, mode="bicubic")
        # neighbourhood clamp: history may only take values the current output has within 3x3
        lo, hi = minmax3(hr)
        hist = torch.minimum(torch.maximum(hist, lo), hi)
        # evidence: does the history explain the low-res frame as well as the current output does?
        # (signed differences are averaged over 3x3 first: noise cancels, structure does not)
        e_hist = box_filter(area_resize(hist, (h, w)) - lr, 3).abs().mean(1, keepdim=True)
        e_cur = box_filter(area_resize(hr, (h, w)) - lr, 3).abs().mean(1, keepdim=True)
        excess = (e_hist - e_cur).clamp_min(0)
        gate = (1.0 - excess / self.tau).clamp_(0.0, 1.0)
        # scene cut: drop the history everywhere, decided on the device (no host sync)
        same_scene = ((thumb - self.prev_thumb).abs().mean() < self.cut_threshold).to(gate.dtype)
        gate = F.interpolate(gate * same_scene, size=(big_h, big_w), mode="bilinear", align_corners=False)
        d = hist - hr
        if self.detail_sigma:
            # differences much larger than flicker are real change or misalignment: blend them less
            gate = gate * torch.exp(-(d.abs().mean(1, keepdim=True) / self.detail_sigma) ** 2)
        out = hr + (0.9 * strength) * gate * d
        out = out.clamp_(0.0, 1.0)
        self.prev_lr, self.prev_hr, self.prev_thumb = lr, out, thumb
        return out


    # --- CPU: OpenCV ------------------------------------------------------------------------------------

    def _gray(self, lr: np.ndarray) -> np.ndarray:
        """Luma at the CPU flow size: halvings of the low-res frame until its longer side is at most
        ``max_flow_side`` (as the torch path)."""
        g = cv2.cvtColor(lr, cv2.COLOR_RGB2GRAY)  # 0.299 R + 0.587 G + 0.114 B, as ops.flow.luma
        while max(g.shape) > self.max_flow_side:
            g = cv2.resize(g, ((g.shape[1] + 1) // 2, (g.shape[0] + 1) // 2), interpolation=cv2.INTER_AREA)
        return g

    def _one_cv(self, lr_t: torch.Tensor, hr_t: torch.Tensor, strength: float) -> torch.Tensor:
        lr, hr = _hwc(lr_t.float()), _hwc(hr_t.float())
        h, w = lr.shape[:2]
        big_h, big_w = hr.shape[:2]
        gray = self._gray(lr)
        thumb = cv2.resize(lr, (16, 16), interpolation=cv2.INTER_AREA)
        prev = self._cv_prev
        if prev is None or self.prev_hr is None or self.prev_hr.shape != hr.shape or prev[2] != lr.shape:
            self._cv_prev, self.prev_hr = (gray, thumb, lr.shape), hr
            return hr_t
        hist_prev = self.prev_hr
        self._cv_prev, self.prev_hr = (gray, thumb, lr.shape), hr
        if float(np.abs(thumb - prev[1]).mean()) >= self.cut_threshold:  # scene cut: the current output as is
            return hr_t
        # backward flow: cur(p) ~ prev(p + flow(p)), in pixels of `gray`
        if self.cpu_flow == "lk" or min(gray.shape) < self.DIS_MIN_SIDE:
            flow = lk_flow_cv(gray, prev[0])
        else:
            if self._dis is None:
                self._dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{self.DIS_PRESET}"))
            g8, p8 = cv2.convertScaleAbs(gray, alpha=255.0), cv2.convertScaleAbs(prev[0], alpha=255.0)
            flow = self._dis.calc(g8, p8, None)
            if self.cpu_flow == "dis+lk" and self.refine_iters > 0:
                flow = lk_flow_cv(gray, prev[0], iters=self.refine_iters, init=flow)
        fh, fw = flow.shape[:2]
        cv2.multiply(flow, (big_w / fw, big_h / fh, 0.0, 0.0), dst=flow)  # in HR pixels, scaled while small
        flow = cv2.resize(flow, (big_w, big_h), interpolation=cv2.INTER_LINEAR)
        hist = cv2.remap(hist_prev, flow, None, cv2.INTER_CUBIC | cv2.WARP_RELATIVE_MAP, borderMode=cv2.BORDER_REPLICATE)
        # neighbourhood clamp: history may only take values the current output has within 3x3
        cv2.max(hist, cv2.erode(hr, None), dst=hist)
        cv2.min(hist, cv2.dilate(hr, None), dst=hist)
        # evidence, at low resolution: does the history explain the low-res frame as well as the output does?
        e_hist = self._evidence(cv2.resize(hist, (w, h), interpolation=cv2.INTER_AREA), lr)
        e_cur = self._evidence(cv2.resize(hr, (w, h), interpolation=cv2.INTER_AREA), lr)
        excess = cv2.max(cv2.subtract(e_hist, e_cur), 0.0)
        gate = cv2.threshold(cv2.addWeighted(excess, -1.0 / self.tau, excess, 0.0, 1.0), 0.0, 0.0, cv2.THRESH_TOZERO)[1]
        gate = cv2.resize(gate, (big_w, big_h), interpolation=cv2.INTER_LINEAR)
        k = 0.9 * strength
        if self.detail_sigma:
            # differences much larger than flicker are real change or misalignment: blend them less
            m = cv2.transform(cv2.absdiff(hist, hr), np.full((1, 3), 1.0 / 3.0, np.float32))
            detail = cv2.exp(cv2.multiply(m, m, scale=-1.0 / self.detail_sigma**2))
            wgt = cv2.multiply(gate, detail, scale=k)
        else:
            wgt = cv2.multiply(gate, k)
        out = cv2.blendLinear(hist, hr, wgt, cv2.addWeighted(wgt, -1.0, wgt, 0.0, 1.0))
        self.prev_hr = out
        return from_hwc(out)

    @staticmethod
    def _evidence(small: np.ndarray, lr: np.ndarray) -> np.ndarray:
        """Mean over channels of |3x3 average of (small - lr)| (signed differences averaged first: noise
        cancels, structure does not)."""
        d = cv2.blur(cv2.subtract(small, lr), (3, 3), borderType=cv2.BORDER_REPLICATE)
        return cv2.transform(cv2.absdiff(d, 0.0), np.full((1, 3), 1.0 / 3.0, np.float32))


class SceneCutDetector:
    """Finds hard cuts in a batch of low-res frames (one small host read per batch)."""

    def __init__(self) -> None:
        self.prev: torch.Tensor | None = None

    def reset(self) -> None:
        self.prev = None

    def cuts(self, frames: torch.Tensor, threshold: float) -> list[int]:
        """Indices ``i`` in the batch where frame ``i`` starts a new scene (0 = against the last batch)."""
        t = thumbnails(frames.float())
        prev = t[:-1] if self.prev is None else torch.cat([self.prev, t[:-1]])
        self.prev = t[-1:]
        if threshold <= 0 or prev.shape[0] == 0:
            return []
        diffs = (t[-prev.shape[0] :] - prev).abs().mean(dim=(1, 2, 3))
        offset = t.shape[0] - prev.shape[0]
        return [i + offset for i, d in enumerate(diffs.tolist()) if d >= threshold]
