"""Stand-in for ``scope.core.plugins.hookspecs``: pluggy markers for the project ``"scope"``."""

import pluggy

hookspec = pluggy.HookspecMarker("scope")
hookimpl = pluggy.HookimplMarker("scope")


class ScopeHookSpec:
    @hookspec
    def register_pipelines(self, register):
        """Call ``register(PipelineClass)`` for each pipeline the plugin provides."""

    @hookspec
    def register_nodes(self, register):
        """Call ``register(NodeClass)`` for each node the plugin provides."""
