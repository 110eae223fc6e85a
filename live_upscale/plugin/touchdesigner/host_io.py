"""TouchDesigner without CUDA (macOS, a PC without an NVIDIA GPU): frames through host memory.

When torch sees no CUDA GPU, the TOP reads its input with ``TOP.numpyArray()`` and writes its output with
``scriptOp.copyNumpyArray(array)`` instead of the CUDA-memory calls; everything else (the node, the
parameters, pass-through on errors) is the same. The node runs on torch's MPS device where it is available
(Apple Silicon), else on the CPU (where classic and the stabilizer run in OpenCV).

What the derivative.ca docs and public TD code say about these two calls, and what is assumed here:

- ``TOP.numpyArray()`` downloads the texture (a GPU->CPU stall) as a ``(height, width, components)`` array,
  32-bit float RGBA by default, rows bottom first (TD's origin is the bottom-left corner);
- ``scriptTOP.copyNumpyArray(array)`` fills the Script TOP from an ``(height, width, 3 or 4)`` array of
  uint8, uint16 or float32 in the same row order (bottom first) and channel order (RGB(A)).

So the node cooks the array in that layout (``HWC``, ``flipped``, RGB(A)), and writes float32 RGBA back
(mono inputs come back as RGBA with the gray in R, G and B and an opaque alpha).
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from ...nodes.formats import FrameFormat
from .interop import TexLayout

PATH_NAME = "numpy (TOP.numpyArray -> copyNumpyArray)"
_DTYPES = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16", np.dtype(np.float32): "float32"}
_OUT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))  # what copyNumpyArray takes


def device() -> torch.device:
    """The compute device for a TOP without CUDA: MPS where torch has it, else the CPU."""
    mps = getattr(torch.backends, "mps", None)
    try:
        if mps is not None and mps.is_available():
            return torch.device("mps")
    except Exception:  # noqa: BLE001 - a broken MPS probe means no MPS
        pass
    return torch.device("cpu")


def read(src) -> tuple[np.ndarray, TexLayout]:
    """``src.numpyArray()`` -> the array (not copied) and its layout (HWC, bottom row first)."""
    a = src.numpyArray()
    if a is None:
        raise InputError("the input TOP returned no image (numpyArray() gave None); is it cooking?")
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"the input TOP's numpyArray() has shape {a.shape}; expected (height, width, components)")
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    name = _DTYPES.get(a.dtype)
    if name is None:
        raise InputError(f"the input TOP's numpyArray() is {a.dtype}; expected float32, uint8 or uint16")
    channels = {1: "GRAY", 3: "RGB", 4: "RGBA"}.get(a.shape[2])
    if channels is None:
        raise InputError(f"{a.shape[2]}-component textures are not supported: set the input's pixel format to RGBA or mono")
    fmt = FrameFormat(layout="HWC", channels=channels, dtype=name, flipped=True)
    return a, TexLayout(a.shape[0], a.shape[1], a.shape[2], a.dtype, fmt)


def out_format(lay: TexLayout) -> FrameFormat:
    """What the TOP writes: the input's layout, with mono widened to RGBA (copyNumpyArray takes 3 or 4)."""
    return lay.fmt.with_(channels="RGBA") if lay.fmt.channels == "GRAY" else lay.fmt


def write(script_op, out) -> tuple[int, int]:
    """``scriptOp.copyNumpyArray`` with an array it accepts (contiguous; uint8, uint16 or float32)."""
    a = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    if a.dtype == np.int32:  # formats writes uint16 as int32 where torch has no uint16
        a = np.clip(a, 0, 65535).astype(np.uint16)
    elif a.dtype not in _OUT_DTYPES:
        a = a.astype(np.float32)
    a = np.ascontiguousarray(a)
    script_op.copyNumpyArray(a)
    return int(a.shape[0]), int(a.shape[1])
