"""Stand-in for ``scope.core.plugins.manager``: discovery and registration only (no installs)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import distributions

import pluggy

from .hookspecs import ScopeHookSpec

logger = logging.getLogger(__name__)


@dataclass
class FailedPluginInfo:
    package_name: str
    entry_point_name: str
    error_type: str
    error_message: str


class PluginManager:
    def __init__(self):
        self._pm = pluggy.PluginManager("scope")
        self._pm.add_hookspecs(ScopeHookSpec)
        self._failed_plugins: list[FailedPluginInfo] = []

    @property
    def pm(self) -> pluggy.PluginManager:
        return self._pm

    def _prevalidate_entrypoints(self, group: str) -> None:
        # Scope rejects a distribution with zero or several entry points in the group, and one
        # whose entry point fails to import; rejected names are blocked in pluggy.
        for dist in distributions():
            eps = [ep for ep in dist.entry_points if ep.group == group]
            if not eps:
                continue
            name = dist.metadata.get("Name", "unknown")
            if len(eps) != 1:
                self._failed_plugins.append(
                    FailedPluginInfo(name, ", ".join(e.name for e in eps), "InvalidPluginError", f"{len(eps)} entry points")
                )
                for ep in eps:
                    self._pm.set_blocked(ep.name)
                continue
            try:
                eps[0].load()
            except Exception as e:  # noqa: BLE001
                self._failed_plugins.append(FailedPluginInfo(name, eps[0].name, type(e).__name__, str(e)))
                self._pm.set_blocked(eps[0].name)

    def load_plugins(self) -> None:
        self._failed_plugins.clear()
        self._prevalidate_entrypoints("scope")
        self._pm.load_setuptools_entrypoints("scope")

    def get_failed_plugins(self) -> list[FailedPluginInfo]:
        return list(self._failed_plugins)

    def register_plugin_nodes(self, registry=None) -> None:
        from scope.core.nodes.registry import NodeRegistry

        def register(cls) -> None:
            NodeRegistry.register(cls)

        self._pm.hook.register_nodes(register=register)
        self._pm.hook.register_pipelines(register=register)

    register_plugin_pipelines = register_plugin_nodes


_plugin_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    global _plugin_manager
    if _plugin_manager is None:
        _plugin_manager = PluginManager()
    return _plugin_manager


def load_plugins() -> None:
    get_plugin_manager().load_plugins()


def register_plugin_nodes(registry=None) -> None:
    get_plugin_manager().register_plugin_nodes(registry)
