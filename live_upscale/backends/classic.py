"""``classic``: no weights, any device. Antialiased bicubic or Lanczos-3 plus light sharpening.

Lanczos-3 and the unsharp mask are ``ops.resample``'s: on CPU they run in OpenCV (polyphase
filtering, O(taps) per pixel), elsewhere in torch (a gather of the taps).

It is the embedded default: it always runs, so the main job never needs a download.
Quality maps to the filter: fast = bicubic, balanced = Lanczos-3 with a light unsharp
mask, high = Lanczos-3 with a stronger one. ``sharpen`` adds to that amount.
"""

from __future__ import annotations

import torch

from ..ops.resample import clamp01_, out_size, resize, unsharp
from .base import Backend, Capabilities, Engine, EngineConfig, Probe
from .registry import register

_QUALITY = {"fast": ("bicubic", 0.0), "balanced": ("lanczos", 0.3), "high": ("lanczos", 0.5)}


class ClassicEngine(Engine):
    caps = Capabilities(min_scale=1.0, max_scale=8.0, notes="resampling + unsharp mask; no weights")
    channels_last_ok = True  # takes and returns (N,3,H,W) in any memory layout (OpenCV works channels-last)

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        quality = config.options.get("quality", "balanced")
        self.filter, self.base_sharpen = _QUALITY.get(quality, _QUALITY["balanced"])
        self.filter = config.options.get("filter", self.filter)
        self.sharpen = float(config.options.get("sharpen", 0.0))

    def set_options(self, **options) -> None:
        if "sharpen" in options:
            self.sharpen = float(options["sharpen"])

    @torch.inference_mode()
    def process(self, frames: torch.Tensor) -> torch.Tensor:
        size = out_size(frames.shape[-2], frames.shape[-1], self.scale)
        y = resize(frames, size, self.filter)
        # sigma tracks the scale: sharpen the detail band the resampler softened
        y = unsharp(y, self.base_sharpen + self.sharpen, sigma=max(0.6, 0.5 * self.scale))
        return clamp01_(y.clone() if y is frames else y)  # never write into the caller's frames

    def describe(self) -> str:
        return f"classic {self.filter} x{self.scale:g}, sharpen {self.base_sharpen + self.sharpen:.2f}"


@register
class ClassicBackend(Backend):
    id = "classic"
    label = "Classic (Lanczos/bicubic + sharpen)"
    description = "No weights, any device; the always-available default."
    priority = 0

    @classmethod
    def probe(cls, device: torch.device, model: str | None = None) -> Probe:
        return Probe(True, "always available")

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        return ClassicEngine(config)
