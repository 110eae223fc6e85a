"""Stand-in for ``scope.server`` (only what drives a pipeline)."""
