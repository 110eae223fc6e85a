"""Daydream Scope's entry point for live-upscale (``[project.entry-points."scope"]`` in pyproject).

Scope loads this module with pluggy and calls ``register_pipelines``; the pipeline module (and
with it torch, spandrel and the node) is imported only then.
"""

from __future__ import annotations

try:
    from scope.core.plugins import hookimpl
except ImportError as e:  # pragma: no cover - only without Scope
    raise ImportError(
        "live_upscale.plugin.scope.plugin is the Daydream Scope entry point and needs Scope "
        "(daydream-scope, installed from its repository); the rest of live_upscale works without it"
    ) from e


@hookimpl
def register_pipelines(register):
    from .pipeline import LiveUpscalePipeline

    register(LiveUpscalePipeline)
