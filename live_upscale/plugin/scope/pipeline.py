"""The pipeline class Scope constructs and calls; all the work is in ``adapter.ScopeUpscaler``.

Imports Scope (``scope.core.pipelines.interface``): loaded only by Scope, through ``plugin``.
"""

from __future__ import annotations

from typing import Any

from scope.core.pipelines.interface import Pipeline, Requirements

from .adapter import ScopeUpscaler
from .schema import LiveUpscaleConfig


class LiveUpscalePipeline(Pipeline):
    """Scope postprocessor wrapping the upscale node.

    Scope builds it as ``LiveUpscalePipeline(**schema_defaults, **load_params)`` (no device: the
    node picks CUDA when there is one), then per tick calls ``prepare(**params)`` and
    ``__call__(video=[...], init_cache=..., **params)``.
    """

    @classmethod
    def get_config_class(cls) -> type[LiveUpscaleConfig]:
        return LiveUpscaleConfig

    def __init__(self, device: Any = None, **kwargs: Any):
        super().__init__()
        self.upscaler = ScopeUpscaler(kwargs, device=device)

    def prepare(self, **kwargs: Any) -> Requirements:
        return Requirements(input_size=self.upscaler.input_size(kwargs))

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        return self.upscaler(**kwargs)

    def shutdown(self) -> None:
        self.upscaler.close()

    def info(self) -> dict[str, Any]:
        return self.upscaler.info()
