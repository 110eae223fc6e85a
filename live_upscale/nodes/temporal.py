"""Temporal stages of the node: a motion-compensated stabilizer and a scene-cut detector.

Stabilizer (for frame-by-frame backends: classic, realesrgan, RTX VSR). Each frame:

1. motion between the previous and the current *low-res* frame: pyramid Lucas-Kanade on the
   luma, in torch, on the compute device (no weights, a few dozen small convolutions);
2. the previous *output* is warped onto the current frame (bicubic sampling keeps detail when
   the history is resampled frame after frame) and clamped to the current output's 3x3
   min/max (the TAA neighbourhood clamp that stops ghost trails);
3. evidence gate per pixel: the warped history, downscaled, must explain the current low-res
   frame about as well as the current output does; where it does worse (occlusion, wrong
   motion, new content) its weight falls to zero. A global gate drops the history on a scene
   cut, on the device, without a host sync;
4. blend: ``out = cur + 0.9*strength*gate*(history - cur)``; ``out`` becomes the next history.

Scene cuts for temporal backends (whose state lives in the engine) are found with thumbnails
(16x16, mean absolute difference) and need one tiny host read per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.flow import area_resize, box_filter, minmax3, lk_flow, luma, scale_flow, thumbnails, warp

class Stabilizer:
    """Motion-compensated recursive blend of the upscaler's outputs. See the module docstring."""

    def __init__(self, cut_threshold: float = 0.12, tau: float = 0.01, max_flow_side: int = 512,
                 detail_sigma: float | None = 0.05):
        self.cut_threshold = cut_threshold
        self.detail_sigma = detail_sigma
        self.max_flow_side = max_flow_side
        self.tau = tau
        self.reset()

    def reset(self) -> None:
        self.prev_lr: torch.Tensor | None = None
        self.prev_hr: torch.Tensor | None = None
        self.prev_thumb: torch.Tensor | None = None

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor, strength: float) -> torch.Tensor:
        """``lr (N,3,h,w)`` inputs and ``hr (N,3,H,W)`` backend outputs, in order -> stabilized outputs."""
        if strength <= 0:
            self.reset()
            return hr
        outs = [self._one(lr[i : i + 1], hr[i : i + 1], strength) for i in range(hr.shape[0])]
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
