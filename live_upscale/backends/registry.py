"""The backend registry: which engines exist, which can run here and why not.

Backends register by class. Third-party packages can add theirs through the
``live_upscale.backends`` entry-point group (value: ``module:BackendClass``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch

from ..errors import BackendUnavailable
from .base import Backend, Probe

log = logging.getLogger(__name__)

_BACKENDS: dict[str, type[Backend]] = {}
_entry_points_loaded = False


def register(cls: type[Backend]) -> type[Backend]:
    """Add a backend class (usable as a decorator). Re-registering an id replaces it."""
    _BACKENDS[cls.id] = cls
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    try:
        eps = entry_points(group="live_upscale.backends")
    except Exception:  # noqa: BLE001 - broken metadata must not break the node
        return
    for ep in eps:
        try:
            register(ep.load())
        except Exception as e:  # noqa: BLE001
            log.warning("backend entry point %s failed to load: %s", ep.name, e)


def backends() -> list[type[Backend]]:
    """All registered backends, best first (the order ``auto`` tries them in)."""
    _load_entry_points()
    return sorted(_BACKENDS.values(), key=lambda b: -b.priority)


def get(backend_id: str) -> type[Backend]:
    _load_entry_points()
    key = backend_id.strip().lower().replace("-", "_")
    if key not in _BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend_id!r}; known: {', '.join(b.id for b in backends())}")
    return _BACKENDS[key]


@dataclass(frozen=True)
class BackendStatus:
    id: str
    label: str
    probe: Probe
    description: str


def safe_probe(cls: type[Backend], device: torch.device, model: str | None = None) -> Probe:
    try:
        return cls.probe(device, model)
    except Exception as e:  # noqa: BLE001 - a probe must never raise into a host
        return Probe(False, f"probe failed: {type(e).__name__}: {e}")


def table(device: torch.device, model: str | None = None) -> list[BackendStatus]:
    """Every backend with whether it can run on ``device`` and why not."""
    return [BackendStatus(b.id, b.label, safe_probe(b, device, model), b.description) for b in backends()]


def choose(backend_id: str, device: torch.device, model: str | None = None) -> tuple[type[Backend], str]:
    """Resolve ``auto`` (or check a named backend). Returns the class and a one-line why."""
    if backend_id != "auto":
        cls = get(backend_id)
        p = safe_probe(cls, device, model)
        if not p and not p.downloadable:  # missing registered weights are fetched at load
            raise BackendUnavailable(f"backend '{cls.id}' cannot run here: {p.reason}")
        return cls, f"{cls.id} (asked for)"
    skipped = []
    for cls in backends():
        if model and not cls.needs_weights:
            skipped.append(f"{cls.id}: takes no model file")  # a model was named: only backends that load one
            continue
        # 'auto' never triggers a download: a backend whose weights are not on disk is skipped
        p = safe_probe(cls, device, model if cls.needs_weights else None)
        if p:
            why = f"{cls.id} (auto: best that can run here"
            return cls, why + (f"; skipped {'; '.join(skipped)})" if skipped else ")")
        skipped.append(f"{cls.id}: {p.reason}")
    raise BackendUnavailable("no backend can run here: " + "; ".join(skipped))
