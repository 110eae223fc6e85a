"""Daydream Scope postprocessor: the upscale node as a Scope pipeline.

Layout (only the last three import Scope, and only when Scope loads them):

- ``adapter``:  everything the pipeline does (frames in, frames out, parameters, batching,
  resets, errors), written against the upscale node only; no Scope import.
- ``plugin``:   the entry point named in ``pyproject.toml`` (``[project.entry-points."scope"]``):
  the ``register_pipelines`` hook.
- ``schema``:   the pipeline's config class (a ``BasePipelineConfig``): the UI fields.
- ``pipeline``: the pipeline class Scope constructs and calls.

Importing ``live_upscale`` or this package never imports Scope.
"""

from .adapter import PIPELINE_ID

__all__ = ["PIPELINE_ID"]
