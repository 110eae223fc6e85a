"""The pipeline's config class: what Scope's UI shows for the upscaler.

Imports Scope (``scope.core.pipelines.base_schema``): loaded only by Scope, through ``plugin``.
Defaults, bounds and descriptions of the node's own knobs come from ``UpscaleParams`` so the
UI cannot drift from the node.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from scope.core.pipelines.base_schema import (
    BasePipelineConfig,
    ModeDefaults,
    UsageType,
    ui_field_config,
)

from ... import __version__
from ...backends import backends
from ...backends.realesrgan import DEFAULT_MODEL, NATIVE_DEFAULTS, estimated_vram_gb
from ...weights import KNOWN_MODELS
from .adapter import (
    DEFAULT_BACKEND,
    MAX_BATCH,
    PIPELINE_ID,
    SCALES,
    field_bounds,
    node_field,
)

_BACKENDS = tuple(dict.fromkeys(["auto", *(b.id for b in backends())]))
_MODELS = tuple(KNOWN_MODELS)
# realesrgan's VRAM at 512² in, 2x, batch 1, fp16, on its default route: the 4x default at full size, or a
# native 2x model when cached (whichever is heavier), plus ~0.5 GB for the CUDA context and allocator slack
_VRAM_GB = round(0.5 + max(estimated_vram_gb(m, 2.0) for m in (DEFAULT_MODEL, *NATIVE_DEFAULTS[2])), 1)


def _knob(name: str, order: int, label: str, modulatable: bool = True):
    lo, hi = field_bounds(name)
    f = node_field(name)
    return Field(
        default=f.default,
        ge=lo,
        le=hi,
        description=f.description,
        json_schema_extra=ui_field_config(order=order, label=label, modulatable=modulatable),
    )


class LiveUpscaleConfig(BasePipelineConfig):
    """Live Upscale: the upscale node as a postprocessor (after the main pipeline)."""

    pipeline_id = PIPELINE_ID
    pipeline_name = "Live Upscale"
    pipeline_description = (
        "Upscales the stream 1.5-4x: Real-ESRGAN family models or any spandrel SR model, or the "
        "weight-free classic filter; keeps temporal state across chunks (stabilizer, scene-cut reset)."
    )
    pipeline_version = __version__
    supports_prompts = False
    usage = [UsageType.POSTPROCESSOR]
    modes = {"video": ModeDefaults(default=True)}
    estimated_vram_gb = _VRAM_GB

    # load-time: the pipeline is re-created when one changes (the UI locks them while streaming)
    upscale_backend: Literal[_BACKENDS] = Field(  # type: ignore[valid-type]
        default=DEFAULT_BACKEND,
        description="Engine. realesrgan: the model below (downloaded once, then cached); classic: "
        "Lanczos + sharpening, no weights; auto: the best that can run here without a download.",
        json_schema_extra=ui_field_config(order=1, label="Backend", is_load_param=True),
    )
    upscale_model: str = Field(
        default="",
        description=f"Empty: realesrgan's default ({DEFAULT_MODEL}, or at 2x a native 2x model when cached: "
        f"{', '.join(NATIVE_DEFAULTS[2])}). realesrgan: {', '.join(_MODELS)}, or the path of any spandrel SR weights file "
        "(.pth/.safetensors). rtx_vsr: an SDK spec such as ULTRA,denoise=low. Ignored by classic.",
        json_schema_extra=ui_field_config(order=2, label="Model", is_load_param=True),
    )
    upscale_scale: Literal[SCALES] = Field(  # type: ignore[valid-type]
        default=2.0,
        description="Output size / input size.",
        json_schema_extra=ui_field_config(order=3, label="Scale", is_load_param=True),
    )
    upscale_precision: Literal["auto", "fp16", "bf16", "fp32"] = Field(
        default="auto",
        description=node_field("precision").description,
        json_schema_extra=ui_field_config(order=4, label="Precision", is_load_param=True),
    )
    upscale_prescale: Literal["auto", "input", "output"] = Field(
        default=node_field("prescale").default,
        description=node_field("prescale").description,
        json_schema_extra=ui_field_config(order=5, label="Model scale route", is_load_param=True),
    )
    upscale_quality: Literal["fast", "balanced", "high"] = Field(
        default="balanced",
        description=node_field("quality").description,
        json_schema_extra=ui_field_config(order=6, label="Quality", is_load_param=True),
    )
    upscale_compile: Literal["off", "default", "reduce-overhead", "max-autotune", "tensorrt"] = Field(
        default="off",
        description=node_field("compile").description
        + " Scope compiles at load, for the main pipeline's output size.",
        json_schema_extra=ui_field_config(order=7, label="Compile (realesrgan)", is_load_param=True),
    )

    # runtime: read on every call, applied to the next frame without a reload
    upscale_sharpen: float = _knob("sharpen", 10, "Sharpen")
    upscale_stabilize: float = _knob("stabilize", 11, "Stabilize")
    upscale_scene_cut: float = _knob("scene_cut", 12, "Scene-cut threshold", modulatable=False)
    upscale_batch: int = Field(
        default=0,
        ge=0,
        le=MAX_BATCH,
        description="Frames per call (0 = automatic: 1 for frame-by-frame engines, one chunk for "
        "chunked ones). Scope drops queued frames beyond this count, so raise it only when the "
        "frames before the upscaler arrive one at a time and the GPU is the bottleneck.",
        json_schema_extra=ui_field_config(order=13, label="Frames per call"),
    )

