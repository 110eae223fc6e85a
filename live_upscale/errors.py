"""Errors the package raises on purpose.

Every message is one line a user can act on: hosts show ``str(err)`` verbatim, so
no traceback is ever needed to understand what went wrong.
"""

from __future__ import annotations


class LiveUpscaleError(Exception):
    """Base class: anything this package raises deliberately."""


class InputError(LiveUpscaleError, ValueError):
    """A frame (or a parameter) the node cannot interpret."""


class BackendUnavailable(LiveUpscaleError):
    """A backend cannot run here (missing package, no CUDA, wrong OS, missing weights)."""


class WeightsError(LiveUpscaleError):
    """Weights are missing, corrupt, unsafe or of the wrong architecture."""


class WeightsMissing(WeightsError, FileNotFoundError):
    """Weights are not on disk and could not (or may not) be downloaded."""


def one_line(e: BaseException, limit: int = 240) -> str:
    """``Type: message`` squeezed onto one line (hosts show it in a status field)."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}"
