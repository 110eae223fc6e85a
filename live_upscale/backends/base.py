"""The backend protocol.

A *backend* is a small class with an ``id``, a ``probe()`` that says whether it can run
here (and why not), and a ``load()`` that returns an :class:`Engine`.  An *engine* is
the loaded thing: it turns a batch of frames ``(N,3,H,W)`` float [0,1] on its device
into upscaled frames, possibly fewer while it buffers (chunked temporal models), and
hands the rest back on ``flush()``.  ``reset()`` drops temporal state.

Backends never see host formats, never sync the host per frame, and never pick the
output size themselves: the node asks for ``round(H*scale) x round(W*scale)``.
"""

from __future__ import annotations

import importlib.util
import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass(frozen=True)
class Probe:
    """Whether a backend can run here; ``reason`` says why not (or notes how it will run)."""

    ok: bool
    reason: str = ""
    downloadable: bool = False  # not ok only because registered weights are not cached yet

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Capabilities:
    """What a loaded engine can do; shown by ``doctor`` and used by hosts."""

    min_scale: float = 1.0
    max_scale: float = 8.0
    native_scale: float | None = None  # the model's own factor, if it has one
    temporal: bool = False  # keeps state across frames
    delay: int = 0  # frames of latency before the first output
    chunk: int = 1  # frames per compute call once streaming (hosts that batch should hand this many)
    remote: bool = False  # runs in another process (``remote``): that side's node stabilizes and detects cuts
    needs_weights: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[torch.dtype, ...] = (torch.float32,)
    notes: str = ""


@dataclass(frozen=True)
class EngineConfig:
    """Everything ``Backend.load`` needs. ``options`` carries the node's knobs by name."""

    device: torch.device
    scale: float = 2.0
    model: str | None = None
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    options: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """A loaded backend. Subclasses implement ``process``; the rest has safe defaults."""

    caps: Capabilities = Capabilities()

    def __init__(self, config: EngineConfig):
        self.config = config
        self.device = config.device
        self.scale = config.scale

    @abstractmethod
    def process(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` float32 [0,1] -> ``(M,3,round(H*s),round(W*s))``, ``M <= N`` for buffering engines."""

    def reset(self) -> None:
        """Drop temporal state (history, caches). Stateless engines have nothing to drop."""

    def flush(self) -> torch.Tensor | None:
        """Return the frames still buffered at the end of a stream (None when there are none)."""
        return None

    def set_options(self, **options: Any) -> None:
        """Runtime knobs (sharpen, strength, ...). Unknown names are ignored."""

    def on_oom(self) -> str | None:
        """Out of memory: switch to a lighter path (tiles, smaller chunks) and say which, or None if there is none."""
        return None

    def describe(self) -> str:
        return type(self).__name__

    def close(self) -> None:
        """Release device memory. The engine is not used afterwards."""


class Backend(ABC):
    """One engine family: an id, a probe, a loader. Register subclasses in ``registry``."""

    id: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    priority: ClassVar[int] = 0  # higher wins for backend='auto'
    needs_weights: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def probe(cls, device: torch.device, model: str | None = None) -> Probe:
        """Can this backend run on ``device`` (with ``model``)? Cheap: no weights are loaded."""

    @classmethod
    @abstractmethod
    def load(cls, config: EngineConfig) -> Engine:
        """Build the engine. Raise ``BackendUnavailable``/``WeightsError`` with a one-line reason."""


# --- helpers shared by backends' probes -------------------------------------------------------------


def missing_package(*modules: str) -> str | None:
    """The first module that cannot be imported, as a reason string, or None."""
    for m in modules:
        if importlib.util.find_spec(m) is None:
            return f"python package '{m}' is not installed"
    return None


def cuda_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"needs a CUDA device (this node runs on {device})"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU; torch sees none"
    return None


def os_reason(*systems: str) -> str | None:
    here = platform.system()
    if here not in systems:
        return f"runs on {'/'.join(systems)} only (this is {here})"
    return None


def resolve_dtype(precision: str, device: torch.device, half_ok: bool = True, bf16_ok: bool = True) -> torch.dtype:
    """Compute dtype for a model: fp32 on CPU for 'auto'; fp16 (else bf16) on CUDA where supported."""
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16 if half_ok else torch.float32
    if precision == "bf16":
        return torch.bfloat16 if bf16_ok else torch.float32
    if device.type == "cuda":
        if half_ok:
            return torch.float16
        if bf16_ok:
            return torch.bfloat16
    return torch.float32
