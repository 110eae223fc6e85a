"""Stand-in for ``scope.core.pipelines``."""
