"""Daydream Scope's entry point for live-upscale (``[project.entry-points."scope"]`` in pyproject).

Scope loads this module with pluggy and calls ``register_pipelines``; the pipeline module (and
with it torch, spandrel and the node) is imported only then. It registers one pipeline per tier:
"Live Upscale" and one per weight-bearing backend (FlashVSR, Stream-DiffVSR), whose weights
Scope's download flow fetches.
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
    from .pipeline import PIPELINES

    for cls in PIPELINES:
        register(cls)
