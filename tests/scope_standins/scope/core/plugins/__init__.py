"""Stand-in for ``scope.core.plugins``."""

from .hookspecs import hookimpl
from .manager import (
    FailedPluginInfo,
    PluginManager,
    get_plugin_manager,
    load_plugins,
    register_plugin_nodes,
)

register_plugin_pipelines = register_plugin_nodes

__all__ = [
    "FailedPluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "hookimpl",
    "load_plugins",
    "register_plugin_nodes",
    "register_plugin_pipelines",
]
