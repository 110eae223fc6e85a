"""The node's parameters: one pydantic model every host maps its UI onto."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Precision = Literal["auto", "fp32", "fp16", "bf16"]
Quality = Literal["fast", "balanced", "high"]
Route = Literal["input", "output"]
Compile = Literal["off", "default", "reduce-overhead", "max-autotune", "tensorrt"]


class UpscaleParams(BaseModel):
    """What a host can set on the upscale node.

    Load-time fields (``LOAD_FIELDS``) re-create the backend when they change; the rest
    are runtime knobs applied on the next cook.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # NaN/inf: "not finite"

    backend: str = Field("auto", description="Engine id ('auto' picks the best that can run here).")
    model: str | None = Field(None, description="Model name from the weights registry, or a path to a weights file.")
    scale: float = Field(2.0, ge=1.0, le=8.0, description="Output size / input size.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    precision: Precision = Field("auto", description="Compute dtype; 'auto' = fp16/bf16 on CUDA where the model supports it.")
    prescale: Route = Field(
        "input",
        description="When the model's scale differs from the target: resize the input first ('input', cheaper) "
        "or resize the model's output ('output', more detail, more cost).",
    )
    compile: Compile = Field(
        "off",
        description="torch.compile the model (CUDA): 'reduce-overhead' adds CUDA graphs, 'max-autotune' also tunes "
        "kernels (slow first load), 'tensorrt' uses torch-tensorrt when installed (engines cached on disk; else "
        "max-autotune). Each new input size compiles once; call node.warmup(h, w) at load.",
    )
    quality: Quality = Field("balanced", description="Speed/quality trade-off; each backend maps it to its own knobs.")
    sharpen: float = Field(0.0, ge=0.0, le=2.0, description="Unsharp-mask amount on the output (classic: added to its own).")
    stabilize: float = Field(0.0, ge=0.0, le=1.0, description="Temporal stabilizer strength (0 = off).")
    scene_cut: float = Field(
        0.12, ge=0.0, le=1.0, description="Mean low-res thumbnail difference above which temporal state is reset (0 = never)."
    )
    download: bool = Field(True, description="Fetch registered weights that are not cached yet.")
    backend_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Backend-specific load options (e.g. RTX VSR strength, a diffusion seed); see each backend.",
    )

    LOAD_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"backend", "model", "scale", "device", "precision", "prescale", "quality", "compile", "backend_options"}
    )

    @field_validator("backend")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower().replace("-", "_")

    @field_validator("model")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if isinstance(v, str) else v

    def load_key(self) -> tuple:
        return tuple(
            tuple(sorted(v.items())) if isinstance(v := getattr(self, f), dict) else v for f in sorted(self.LOAD_FIELDS)
        )
