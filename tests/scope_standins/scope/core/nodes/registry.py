"""Stand-in for ``scope.core.nodes.registry``: one dict, keyed like Scope's."""

from __future__ import annotations


def _derive_node_type_id(node_class) -> str | None:
    if getattr(node_class, "node_type_id", None):
        return node_class.node_type_id
    config = node_class.get_config_class()
    return config.pipeline_id if config is not None else None


class NodeRegistry:
    _nodes: dict = {}

    @classmethod
    def register(cls, node_class) -> None:
        key = _derive_node_type_id(node_class)
        if key is None:
            raise ValueError(f"cannot derive a node type id for {node_class.__name__}")
        cls._nodes[key] = node_class

    @classmethod
    def get(cls, node_type_id: str):
        return cls._nodes.get(node_type_id)

    @classmethod
    def list_node_types(cls) -> list[str]:
        return list(cls._nodes)

    @classmethod
    def unregister(cls, node_type_id: str) -> bool:
        return cls._nodes.pop(node_type_id, None) is not None
