"""Engines behind one small protocol (see ``base``), plus the registry that probes them.

Importing this package registers the built-in backends.
"""

from . import classic, realesrgan, rtx_vsr  # noqa: F401  (registration side effect)
from .base import Backend, Capabilities, Engine, EngineConfig, Probe
from .registry import BackendStatus, backends, choose, get, register, table

__all__ = [
    "Backend",
    "BackendStatus",
    "Capabilities",
    "Engine",
    "EngineConfig",
    "Probe",
    "backends",
    "choose",
    "get",
    "register",
    "table",
]
