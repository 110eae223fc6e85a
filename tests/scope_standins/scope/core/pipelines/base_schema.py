"""Stand-in for ``scope.core.pipelines.base_schema``.

Same names, field set and defaults as Scope's ``BasePipelineConfig`` (they matter: Scope passes
every non-None field default to the pipeline's constructor), the keyword-only
``ui_field_config`` signature and the ``{"ui": {...}}`` it produces.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


def ui_field_config(
    *,
    order: int | None = None,
    component: str | None = None,
    modes: list[str] | None = None,
    is_load_param: bool = False,
    label: str | None = None,
    category: Literal["configuration", "input"] | None = None,
    modulatable: bool = False,
    modulatable_min: float | None = None,
    modulatable_max: float | None = None,
) -> dict[str, Any]:
    ui: dict[str, Any] = {"category": category or "configuration", "is_load_param": is_load_param}
    optional = {
        "order": order,
        "component": component,
        "modes": modes,
        "label": label,
        "modulatable_min": modulatable_min,
        "modulatable_max": modulatable_max,
    }
    ui.update({k: v for k, v in optional.items() if v is not None})
    if modulatable:
        ui["modulatable"] = True
    return {"ui": ui}


class UsageType(str, Enum):
    PREPROCESSOR = "preprocessor"
    POSTPROCESSOR = "postprocessor"


class ModeDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: bool = False
    height: int | None = None
    width: int | None = None
    denoising_steps: list[int] | None = None
    noise_scale: float | None = None
    noise_controller: bool | None = None
    input_size: int | None = None
    default_temporal_interpolation_steps: int | None = None


class BasePipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline_id: ClassVar[str] = "base"
    pipeline_name: ClassVar[str] = "Base Pipeline"
    pipeline_description: ClassVar[str] = "Base pipeline configuration"
    pipeline_version: ClassVar[str] = "1.0.0"
    docs_url: ClassVar[str | None] = None
    estimated_vram_gb: ClassVar[float | None] = None
    requires_models: ClassVar[bool] = False
    artifacts: ClassVar[list] = []
    supports_lora: ClassVar[bool] = False
    supports_vace: ClassVar[bool] = False
    produces_video: ClassVar[bool] = True
    produces_audio: ClassVar[bool] = False
    usage: ClassVar[list[UsageType]] = []
    inputs: ClassVar[list[str]] = ["video"]
    outputs: ClassVar[list[str]] = ["video"]
    modes: ClassVar[dict[str, ModeDefaults]] = {"text": ModeDefaults(default=True)}
    supports_prompts: ClassVar[bool] = True

    height: int = Field(default=512, ge=1)
    width: int = Field(default=512, ge=1)
    manage_cache: bool = True
    base_seed: int = Field(default=42, ge=0)
    denoising_steps: list[int] | None = None
    lora_merge_strategy: Literal["permanent_merge", "runtime_peft"] | None = None
    noise_scale: float | None = Field(default=None, ge=0.0, le=1.0)
    noise_controller: bool | None = None
    input_size: int | None = Field(default=1, ge=1)
    ref_images: list[str] | None = None
    vace_context_scale: float = Field(default=1.0, ge=0.0, le=2.0)

    @classmethod
    def get_default_mode(cls) -> str:
        return next((name for name, m in cls.modes.items() if m.default), next(iter(cls.modes)))

    @classmethod
    def get_schema_with_metadata(cls) -> dict[str, Any]:
        return {
            "id": cls.pipeline_id,
            "name": cls.pipeline_name,
            "description": cls.pipeline_description,
            "version": cls.pipeline_version,
            "supported_modes": list(cls.modes),
            "default_mode": cls.get_default_mode(),
            "supports_prompts": cls.supports_prompts,
            "estimated_vram_gb": cls.estimated_vram_gb,
            # Scope infers it from the artifacts unless set
            "requires_models": cls.requires_models or bool(cls.artifacts),
            "artifacts": [a.model_dump() for a in cls.artifacts],
            "usage": [u.value for u in cls.usage],
            "inputs": list(cls.inputs),
            "outputs": list(cls.outputs),
            "config_schema": cls.model_json_schema(),
        }
