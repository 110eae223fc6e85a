"""Stand-in for ``scope.core.nodes.base``: the node base class the processor drives."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field


class NodePort(BaseModel):
    name: str
    port_type: str
    required: bool = True
    description: str = ""
    default_value: Any = None


class NodeDefinition(BaseModel):
    node_type_id: str
    display_name: str
    category: str = "general"
    description: str = ""
    inputs: list[NodePort] = Field(default_factory=list)
    outputs: list[NodePort] = Field(default_factory=list)
    pipeline_meta: dict[str, Any] | None = None


class Requirements(BaseModel):
    input_size: int


class Node:
    node_type_id: ClassVar[str] = ""

    def __init__(self, node_id: str = "", config: dict[str, Any] | None = None):
        self.node_id = node_id
        self.config = config or {}

    @classmethod
    def get_config_class(cls):
        return None

    @classmethod
    def get_definition(cls) -> NodeDefinition:
        config = cls.get_config_class()
        if config is None:
            raise NotImplementedError(f"{cls.__name__}: no config class")

        def ports(names):
            return [p if isinstance(p, NodePort) else NodePort(name=str(p), port_type="video") for p in names]

        return NodeDefinition(
            node_type_id=config.pipeline_id,
            display_name=config.pipeline_name,
            category="pipeline",
            description=config.pipeline_description,
            inputs=ports(config.inputs or ["video"]),
            outputs=ports(config.outputs or ["video"]),
            pipeline_meta=config.get_schema_with_metadata(),
        )

    def shutdown(self) -> None:
        pass

    def prepare(self, **kwargs) -> Requirements | None:
        return None

    def execute(self, inputs: dict[str, Any], **kwargs) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, **kwargs) -> dict[str, Any]:
        raise NotImplementedError


BaseNode = Node
