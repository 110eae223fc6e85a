"""Stand-in for ``scope.core.nodes``."""

from .base import BaseNode, Node, NodeDefinition, NodePort, Requirements
from .registry import NodeRegistry

__all__ = ["BaseNode", "Node", "NodeDefinition", "NodePort", "NodeRegistry", "Requirements"]
