"""Stand-in for ``scope.core.pipelines.interface``: ``Pipeline`` is the node base class."""

from scope.core.nodes.base import Node, Requirements

Pipeline = Node

__all__ = ["Pipeline", "Requirements"]
