"""The pipelines' config classes: what Scope's UI shows for the upscaler, one per tier.

Imports Scope (``scope.core.pipelines.base_schema``): loaded only by Scope, through ``plugin``.
Defaults, bounds and descriptions of the node's own knobs come from ``UpscaleParams`` so the
UI cannot drift from the node.

- ``LiveUpscaleConfig`` ("Live Upscale"): the user picks the backend (Real-ESRGAN family, RTX VSR,
  classic); Real-ESRGAN's small files (2-67 MB) are fetched at load into Scope's models folder.
- ``FlashVSRConfig`` / ``StreamDiffVSRConfig``: one backend each, whose multi-GB weights are Scope
  ``artifacts``: Scope's UI downloads them, with progress, before it loads the pipeline, into
  ``get_models_dir()/<repo name>``, where the adapter finds them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from scope.core.pipelines.artifacts import HuggingfaceRepoArtifact
from scope.core.pipelines.base_schema import (
    BasePipelineConfig,
    ModeDefaults,
    UsageType,
    ui_field_config,
)

from ... import __version__
from ...backends import backends
from ...weights import KNOWN_MODELS
from .adapter import (
    DEFAULT_BACKEND,
    MAIN_TIER,
    MAX_BATCH,
    SCALES,
    TIERS,
    Tier,
    field_bounds,
    node_field,
)

_TIER_BACKENDS = {t.backend for t in TIERS.values() if t.backend}
_BACKENDS = tuple(dict.fromkeys(["auto", *(b.id for b in backends() if b.id not in _TIER_BACKENDS)]))
_MODELS = tuple(KNOWN_MODELS)
_DEFAULT_MODEL = "realesr-animevideov3" if "realesr-animevideov3" in KNOWN_MODELS else _MODELS[0]


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


def _artifacts(tier: Tier) -> list:
    return [HuggingfaceRepoArtifact(repo_id=tier.hf_repo, files=list(tier.files))] if tier.hf_repo else []


_SCALE = Field(
    default=2.0,
    description="Output size / input size.",
    json_schema_extra=ui_field_config(order=3, label="Scale", is_load_param=True),
)
_BATCH = Field(
    default=0,
    ge=0,
    le=MAX_BATCH,
    description="Frames Scope hands over per call (0 = automatic: one, for every engine; chunked engines "
    "buffer internally). Scope drops queued frames beyond this count, so leave it at 0 unless the "
    "frames before the upscaler arrive one at a time and the GPU is the bottleneck.",
    json_schema_extra=ui_field_config(order=13, label="Frames per call"),
)


class _UpscaleBase(BasePipelineConfig):
    """Fields every tier has (runtime knobs: read on every call, applied without a reload)."""

    pipeline_version = __version__
    supports_prompts = False
    usage = [UsageType.POSTPROCESSOR]
    modes = {"video": ModeDefaults(default=True)}

    upscale_sharpen: float = _knob("sharpen", 10, "Sharpen")
    upscale_stabilize: float = _knob("stabilize", 11, "Stabilize")
    upscale_scene_cut: float = _knob("scene_cut", 12, "Scene-cut threshold", modulatable=False)
    upscale_batch: int = _BATCH


class LiveUpscaleConfig(_UpscaleBase):
    """Live Upscale: the upscale node as a postprocessor (after the main pipeline)."""

    pipeline_id = MAIN_TIER.pipeline_id
    pipeline_name = MAIN_TIER.name
    pipeline_description = (
        "Upscales the stream 1.5-4x: Real-ESRGAN family models or any spandrel SR model, NVIDIA RTX "
        "Video Super Resolution, or the weight-free classic filter; keeps temporal state across chunks "
        "(stabilizer, scene-cut reset). FlashVSR and Stream-DiffVSR are their own entries."
    )
    estimated_vram_gb = MAIN_TIER.vram_gb

    # load-time: the pipeline is re-created when one changes (the UI locks them while streaming)
    upscale_backend: Literal[_BACKENDS] = Field(  # type: ignore[valid-type]
        default=DEFAULT_BACKEND,
        description="Engine. realesrgan: the model below (downloaded once into Scope's models folder); "
        "rtx_vsr: NVIDIA RTX VSR (nvidia-vfx); classic: Lanczos + sharpening, no weights; auto: the "
        "best that can run here without a download.",
        json_schema_extra=ui_field_config(order=1, label="Backend", is_load_param=True),
    )
    upscale_model: str = Field(
        default=_DEFAULT_MODEL,
        description=f"realesrgan: {', '.join(m for m in _MODELS if KNOWN_MODELS[m].backend == 'realesrgan')}, "
        "or the path of any spandrel SR weights file (.pth/.safetensors). rtx_vsr: an SDK spec such as "
        "ULTRA,denoise=low. Ignored by classic.",
        json_schema_extra=ui_field_config(order=2, label="Model", is_load_param=True),
    )
    upscale_scale: Literal[SCALES] = _SCALE  # type: ignore[valid-type]
    upscale_precision: Literal["auto", "fp16", "bf16", "fp32"] = Field(
        default="auto",
        description=node_field("precision").description,
        json_schema_extra=ui_field_config(order=4, label="Precision", is_load_param=True),
    )
    upscale_prescale: Literal["input", "output"] = Field(
        default="input",
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


_FLASH = TIERS["live-upscale-flashvsr"]
_SDVSR = TIERS["live-upscale-stream-diffvsr"]


class FlashVSRConfig(_UpscaleBase):
    """Live Upscale · FlashVSR: one-step diffusion VSR; Scope downloads the weights."""

    pipeline_id = _FLASH.pipeline_id
    pipeline_name = _FLASH.name
    pipeline_description = (
        "FlashVSR v1.1 (one-step diffusion video SR on a Wan2.1-1.3B DiT), streaming: first output after "
        "25 frames, then 8 per DiT call. Needs a CUDA GPU with 12 GB or more."
    )
    estimated_vram_gb = _FLASH.vram_gb
    artifacts = _artifacts(_FLASH)

    upscale_model: str = Field(
        default="",
        description="Settings for FlashVSR, comma-separated (e.g. sparse_ratio=1.5,async=1), or a folder "
        "holding the official files. Empty: the weights Scope downloaded.",
        json_schema_extra=ui_field_config(order=2, label="FlashVSR settings", is_load_param=True),
    )
    upscale_scale: Literal[SCALES] = _SCALE  # type: ignore[valid-type]
    upscale_precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="bf16 on CUDA unless fp32 (the DiT overflows in fp16).",
        json_schema_extra=ui_field_config(order=4, label="Precision", is_load_param=True),
    )
    upscale_quality: Literal["fast", "balanced", "high"] = Field(
        default="balanced",
        description="fast: sparse_ratio 1.5 unless the settings give one.",
        json_schema_extra=ui_field_config(order=6, label="Quality", is_load_param=True),
    )


class StreamDiffVSRConfig(_UpscaleBase):
    """Live Upscale · Stream-DiffVSR: causal 4-step diffusion VSR; Scope downloads the weights."""

    pipeline_id = _SDVSR.pipeline_id
    pipeline_name = _SDVSR.name
    pipeline_description = (
        "Stream-DiffVSR (causal 4-step diffusion video SR, 4x native; other scales resize the input "
        "first): one frame in, one out, temporal state in the engine. CUDA."
    )
    estimated_vram_gb = _SDVSR.vram_gb
    artifacts = _artifacts(_SDVSR)

    upscale_model: str = Field(
        default="",
        description="A folder in the Jamichsu/Stream-DiffVSR layout. Empty: the weights Scope downloaded.",
        json_schema_extra=ui_field_config(order=2, label="Model folder", is_load_param=True),
    )
    upscale_scale: Literal[SCALES] = _SCALE  # type: ignore[valid-type]
    upscale_quality: Literal["fast", "balanced", "high"] = Field(
        default="balanced",
        description=node_field("quality").description,
        json_schema_extra=ui_field_config(order=6, label="Quality", is_load_param=True),
    )


CONFIGS: list[type[_UpscaleBase]] = [LiveUpscaleConfig, FlashVSRConfig, StreamDiffVSRConfig]
