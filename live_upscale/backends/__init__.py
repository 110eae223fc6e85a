"""Engines behind one small protocol (see ``base``), plus the registry that probes them.

Importing this package registers the built-in backends.
"""

from . import classic, realesrgan, rtx_vsr  # noqa: F401  (registration side effect)
from . import stream_diffvsr  # noqa: F401  (registers; diffusers is imported only when it loads)
from . import flashvsr  # noqa: F401  (registers; needs only torch, FlexAttention is looked up when used)
from . import remote  # noqa: F401  (registers; aiohttp is imported only when it loads)
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
