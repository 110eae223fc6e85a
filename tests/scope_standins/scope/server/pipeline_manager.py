"""Stand-in for ``scope.server.pipeline_manager``: how a plugin pipeline is constructed and unloaded.

Construction: ``cls(**{non-None schema defaults, **load_params})``, no device, no dtype.
Loading several (``load_pipelines``): an instance whose key, pipeline id and *whole* load-param
dict are unchanged is kept; any other is unloaded first. Unloading only drops the manager's
reference and runs ``gc.collect()`` (+ ``torch.cuda.empty_cache()``): ``shutdown()`` is never called.
"""

from __future__ import annotations

import asyncio
import gc
import threading

import torch


class PipelineNotAvailableException(Exception):
    pass


class PipelineManager:
    def __init__(self):
        self._lock = threading.RLock()
        self._pipelines: dict = {}
        self._pipeline_load_params: dict[str, dict] = {}
        self._pipeline_registry_ids: dict[str, str] = {}
        self.error_message = None

    def _load_pipeline_implementation(self, pipeline_id, load_params=None, stage_callback=None, node_id=None):
        from scope.core.nodes.registry import NodeRegistry

        cls = NodeRegistry.get(pipeline_id)
        if cls is None or cls.get_config_class() is None:
            raise ValueError(f"unknown pipeline {pipeline_id!r}")
        config = cls.get_config_class()
        merged = {name: f.default for name, f in config.model_fields.items() if f.default is not None}
        merged.update(load_params or {})
        return cls(**merged)

    def get_pipeline_by_id(self, pipeline_id):
        with self._lock:
            if pipeline_id not in self._pipelines:
                raise PipelineNotAvailableException(pipeline_id)
            return self._pipelines[pipeline_id]

    def _unload_pipeline_by_id_unsafe(self, key):
        self._pipelines.pop(key, None)
        self._pipeline_load_params.pop(key, None)
        self._pipeline_registry_ids.pop(key, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def unload_all_pipelines(self):
        with self._lock:
            for key in list(self._pipelines):
                self._unload_pipeline_by_id_unsafe(key)

    def _load_pipelines_sync(self, pipelines) -> bool:
        with self._lock:
            wanted = {node_id for node_id, _, _ in pipelines}
            todo = []
            for node_id, pid, params in pipelines:
                same = (
                    node_id in self._pipelines
                    and self._pipeline_registry_ids.get(node_id) == pid
                    and self._pipeline_load_params.get(node_id, {}) == (params or {})
                )
                if not same:
                    todo.append((node_id, pid, params))
            for key in list(self._pipelines):
                if key not in wanted or any(key == n for n, _, _ in todo):
                    self._unload_pipeline_by_id_unsafe(key)
        ok = True
        for node_id, pid, params in todo:
            try:
                pipe = self._load_pipeline_implementation(pid, params, node_id=node_id)
            except Exception as e:  # noqa: BLE001
                self.error_message = str(e)
                ok = False
                continue
            with self._lock:
                self._pipelines[node_id] = pipe
                self._pipeline_load_params[node_id] = params or {}
                self._pipeline_registry_ids[node_id] = pid
        return ok

    async def load_pipelines(self, pipelines, connection_id=None, connection_info=None, user_id=None) -> bool:
        return await asyncio.to_thread(self._load_pipelines_sync, pipelines)
