"""Stand-in for ``scope.server.models_config``: which files a pipeline's artifacts must leave behind."""

from __future__ import annotations

from pathlib import Path


def get_required_model_files(pipeline_id: str) -> list[Path]:
    from scope.core.config import get_models_dir
    from scope.core.nodes.registry import NodeRegistry
    from scope.core.pipelines.artifacts import HuggingfaceRepoArtifact

    cls = NodeRegistry.get(pipeline_id)
    config = cls.get_config_class() if cls is not None else None
    out = []
    for a in getattr(config, "artifacts", []) or []:
        if isinstance(a, HuggingfaceRepoArtifact):
            out += [get_models_dir() / a.repo_id.split("/")[-1] / f for f in a.files]
    return out


def models_are_downloaded(pipeline_id: str) -> bool:
    for p in get_required_model_files(pipeline_id):
        if not p.exists() or (p.is_dir() and not any(p.iterdir())):
            return False
    return True
