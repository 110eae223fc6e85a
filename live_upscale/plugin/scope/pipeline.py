"""The pipeline classes Scope constructs and calls; all the work is in ``adapter.ScopeUpscaler``.

Imports Scope (``scope.core.pipelines.interface``): loaded only by Scope, through ``plugin``.

One class per tier (``adapter.TIERS``): "Live Upscale" (the user picks the backend) and one per
weight-bearing backend, whose config declares the weights as Scope artifacts so that Scope's own
download flow (with progress, before the load) fetches them. They share the adapter.

Lifetime: Scope unloads a pipeline by dropping its reference and running ``gc`` (it never calls
``shutdown()`` on pipelines), so the engine is closed by a ``weakref.finalize`` on the pipeline
object, and nothing the engine runs (FlashVSR's worker thread) holds the pipeline strongly.
"""

from __future__ import annotations

import logging
import queue
import sys
import weakref
from typing import Any

import torch
from scope.core.pipelines.interface import Pipeline, Requirements

from .adapter import TIERS, ScopeUpscaler
from .schema import CONFIGS, LiveUpscaleConfig

log = logging.getLogger("live_upscale.plugin.scope")

_DRAINS: bool | None = None


def scope_drains_single_frame() -> bool | None:
    """Does this Scope's ``prepare_chunk`` drain the queue for ``input_size=1`` (PR #532)?

    Asked of Scope's own code once, on a throwaway queue of three frames: True when it hands over
    the newest and empties the queue, False when it hands over the oldest and leaves the rest
    (Scope 0.2.4), None when it cannot be told.
    """
    global _DRAINS
    if _DRAINS is not None:
        return _DRAINS
    try:
        from scope.server.media_packets import MediaTimestamp, VideoPacket
        from scope.server.pipeline_processor import PipelineProcessor

        q: queue.Queue = queue.Queue()
        for i in range(3):
            q.put_nowait(VideoPacket(tensor=torch.zeros(1, 1, 1, 3, dtype=torch.uint8), timestamp=MediaTimestamp(pts=i)))
        got = PipelineProcessor.prepare_chunk(object.__new__(PipelineProcessor), q, 1)
        pts = [getattr(getattr(p, "timestamp", None), "pts", None) for p in got]
        if pts == [2] and q.empty():
            _DRAINS = True
        elif pts == [0] and q.qsize() == 2:
            _DRAINS = False
        else:
            return None
    except Exception as e:  # noqa: BLE001 - an unknown Scope: assume the documented behaviour
        log.debug("live-upscale: cannot tell how Scope samples its queue: %s", e)
        return None
    return _DRAINS


def _queued_frames(pipeline: Any) -> int | None:
    """Frames waiting in the video queue of the processor that is calling ``pipeline.prepare``.

    Found by looking at the caller (Scope's ``PipelineProcessor.process_chunk``, whose ``self``
    holds this pipeline); None when the caller is anything else.
    """
    try:
        f = sys._getframe(2)
        for _ in range(3):
            if f is None:
                return None
            proc = f.f_locals.get("self")
            if proc is not None and getattr(proc, "pipeline", None) is pipeline:
                queues = getattr(proc, "input_queues", None) or {}
                q = queues.get("video")
                return int(q.qsize()) if q is not None else None
            f = f.f_back
    except Exception:  # noqa: BLE001 - never raise into Scope's tick
        return None
    return None


class LiveUpscalePipeline(Pipeline):
    """Scope postprocessor wrapping the upscale node ("Live Upscale": the user picks the backend).

    Scope builds it as ``cls(**schema_defaults, **load_params)`` (no device: the node picks CUDA
    when there is one), then per tick calls ``prepare(**params)`` and
    ``__call__(video=[...], init_cache=..., **params)``.
    """

    config_class = LiveUpscaleConfig

    @classmethod
    def get_config_class(cls):
        return cls.config_class

    def __init__(self, device: Any = None, **kwargs: Any):
        super().__init__()
        tier = TIERS[self.config_class.pipeline_id]
        upscaler = ScopeUpscaler(kwargs, device=device, tier=tier)
        upscaler.drains_single = bool(scope_drains_single_frame())
        self.upscaler = upscaler
        # closes the engine when Scope drops the pipeline (it never calls shutdown() on pipelines)
        self._finalizer = weakref.finalize(self, upscaler.close)

    def prepare(self, **kwargs: Any) -> Requirements:
        queued = _queued_frames(self) if self.upscaler.drains_single else None
        return Requirements(input_size=self.upscaler.input_size(kwargs, queued=queued))

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        return self.upscaler(**kwargs)

    def shutdown(self) -> None:
        self._finalizer()

    def info(self) -> dict[str, Any]:
        return self.upscaler.info()


def _tier_class(config) -> type[LiveUpscalePipeline]:
    name = "LiveUpscale" + "".join(p.capitalize() for p in config.pipeline_id.split("-")[2:]) + "Pipeline"
    return type(name, (LiveUpscalePipeline,), {"config_class": config, "__doc__": f"Scope pipeline '{config.pipeline_name}'."})


PIPELINES: list[type[LiveUpscalePipeline]] = [LiveUpscalePipeline] + [
    _tier_class(c) for c in CONFIGS if c is not LiveUpscaleConfig
]
