"""Stand-in for ``scope.core``: re-exports the hook marker, as Scope does."""

from scope.core.plugins import hookimpl

__all__ = ["hookimpl"]
