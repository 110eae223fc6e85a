"""Stand-in for ``scope.server.pipeline_manager``: how a plugin pipeline is constructed."""

from __future__ import annotations


class PipelineNotAvailableException(Exception):
    pass


class PipelineManager:
    def _load_pipeline_implementation(self, pipeline_id, load_params=None, stage_callback=None, node_id=None):
        from scope.core.nodes.registry import NodeRegistry

        cls = NodeRegistry.get(pipeline_id)
        if cls is None or cls.get_config_class() is None:
            raise ValueError(f"unknown pipeline {pipeline_id!r}")
        config = cls.get_config_class()
        # plugin pipelines: every schema default that is not None, then the load params on top;
        # no device, no dtype
        merged = {name: f.default for name, f in config.model_fields.items() if f.default is not None}
        merged.update(load_params or {})
        return cls(**merged)
