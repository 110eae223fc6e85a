"""TouchDesigner CUDA buffers <-> torch tensors, without a host copy.

``TOP.cudaMemory(stream=...)`` gives a ``CUDAMemory`` (``ptr``, ``size``, ``shape``): a tightly
packed interleaved ``(height, width, numComps)`` buffer, bottom row first, BGRA for uint8
4-component textures and RGBA for every other data type. ``scriptTOP.copyCUDAMemory(address,
size, shape, stream=...)`` copies a buffer of that layout back into a Script TOP.

The one place that touches a raw device pointer is :func:`tensor_from_memory`: it describes the
buffer with ``__cuda_array_interface__`` (version 3) and lets torch alias it. Everything else here
(layout, dtype, channel order, sizes) is plain data and is tested on CPU: with
``allow_host=True`` the same description is handed to numpy as ``__array_interface__``, which
stand-ins built on host memory use. Real TouchDesigner buffers are always device memory, so the
host path is off by default (reading a device pointer as host memory would crash TD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import BackendUnavailable, InputError
from ...nodes.formats import FrameFormat

_DTYPES = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16", np.dtype(np.float16): "float16", np.dtype(np.float32): "float32"}


@dataclass(frozen=True)
class TexLayout:
    """What one TD buffer holds: size, components, numpy dtype, and the node's frame format for it."""

    height: int
    width: int
    comps: int
    dtype: np.dtype
    fmt: FrameFormat

    @property
    def nbytes(self) -> int:
        return self.height * self.width * self.comps * self.dtype.itemsize

    def resized(self, height: int, width: int) -> "TexLayout":
        return TexLayout(height, width, self.comps, self.dtype, self.fmt)


def _np_dtype(dt) -> np.dtype:
    try:
        return np.dtype(dt)
    except TypeError:
        raise InputError(f"TouchDesigner data type {dt!r} is not a numpy dtype") from None


def layout_of(shape) -> TexLayout:
    """A ``CUDAMemoryShape`` -> layout and frame format (HWC, flipped; BGRA only for uint8)."""
    if getattr(shape, "is3D", False) or getattr(shape, "isCube", False) or int(getattr(shape, "depth", 1) or 1) > 1:
        raise InputError("3D, cube and array textures are not supported: feed a 2D TOP")
    h, w, c = int(shape.height), int(shape.width), int(shape.numComps)
    dt = _np_dtype(shape.dataType)
    if dt not in _DTYPES:
        raise InputError(f"texture data type {dt} is not supported: use 8-bit fixed, 16-bit fixed, 16- or 32-bit float")
    if h < 1 or w < 1:
        raise InputError(f"empty texture ({w}x{h})")
    u8 = dt == np.uint8
    if c == 4:
        channels = "BGRA" if u8 else "RGBA"
    elif c == 3:
        channels = "BGR" if u8 else "RGB"
    elif c == 1:
        channels = "GRAY"
    else:
        raise InputError(f"{c}-component textures are not supported: set the input's pixel format to RGBA or mono")
    return TexLayout(h, w, c, dt, FrameFormat(layout="HWC", channels=channels, dtype=_DTYPES[dt], flipped=True))


class _Described:
    """An object that only describes memory: ``__cuda_array_interface__`` or ``__array_interface__``."""

    def __init__(self, key: str, desc: dict):
        setattr(self, key, desc)


def describe(ptr: int, lay: TexLayout) -> dict:
    """The array-interface dictionary (version 3) for a packed HWC buffer at ``ptr``."""
    return {
        "version": 3,
        "shape": (lay.height, lay.width, lay.comps),
        "typestr": lay.dtype.str,
        "data": (int(ptr), False),
        "strides": None,  # C-contiguous: rows are tightly packed
        # No stream: TD's copy and all our work are queued on the one stream the adapter owns,
        # so the consumer has nothing to wait for (and must not sync a stream it does not own).
        "stream": None,
    }


def tensor_from_memory(mem, device: torch.device, allow_host: bool = False) -> tuple[torch.Tensor, TexLayout]:
    """Alias a ``CUDAMemory`` as an ``(H, W, C)`` tensor on ``device`` (no copy). Keep ``mem`` alive while in use."""
    lay = layout_of(mem.shape)
    size = int(mem.size)
    if size < lay.nbytes:
        raise InputError(f"TouchDesigner buffer holds {size} bytes, a {lay.width}x{lay.height}x{lay.comps} {lay.dtype} texture needs {lay.nbytes}")
    ptr = int(mem.ptr)
    if not ptr:
        raise InputError("TouchDesigner returned a null CUDA buffer")
    desc = describe(ptr, lay)
    if device.type == "cuda":
        return torch.as_tensor(_Described("__cuda_array_interface__", desc), device=device), lay
    if not allow_host:
        raise BackendUnavailable(
            "TouchDesigner hands textures over as CUDA memory, but this node runs on the CPU: install the CUDA "
            "build of torch into the venv (windows\\setup.ps1) and leave Device on auto"
        )
    desc = dict(desc)
    desc.pop("stream")
    return torch.from_numpy(np.asarray(_Described("__array_interface__", desc))), lay


def buffer_of(t: torch.Tensor, lay: TexLayout) -> tuple[int, int]:
    """``(address, nbytes)`` of a tensor laid out as ``lay`` (checked: a wrong size here would corrupt memory)."""
    if not t.is_contiguous():
        raise InputError("output tensor must be contiguous")
    want = (lay.height, lay.width, lay.comps)
    have = tuple(t.shape) if t.dim() == 3 else (*t.shape, 1)
    if have != want or t.element_size() != lay.dtype.itemsize:
        raise InputError(f"output tensor {tuple(t.shape)} {t.dtype} does not match the texture {want} {lay.dtype}")
    return t.data_ptr(), t.numel() * t.element_size()


# --- output data type: a choice, with a fallback TD cannot refuse --------------------------------------

OUT_DTYPES: dict[str, np.dtype | None] = {
    "input": None,  # the input texture's data type
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
}
SAFE_DTYPE = np.dtype(np.float32)  # what TD documents for copyCUDAMemory (with uint8)


def layout_for(lay: TexLayout, dtype: np.dtype) -> TexLayout:
    """``lay`` with another data type: same size and components, TD's channel order for that type."""
    dt = np.dtype(dtype)
    u8 = dt == np.uint8
    ch = lay.fmt.channels
    if ch in ("BGRA", "RGBA"):
        ch = "BGRA" if u8 else "RGBA"
    elif ch in ("BGR", "RGB"):
        ch = "BGR" if u8 else "RGB"
    return TexLayout(lay.height, lay.width, lay.comps, dt, FrameFormat(layout="HWC", channels=ch, dtype=_DTYPES[dt], flipped=True))


class OutputDtype:
    """Which data type the Script TOP writes, remembering the ones TD refused.

    ``copyCUDAMemory`` is documented for uint8 and float32; 16-bit buffers work in public code but a
    TD build may refuse them. A refused type is retried once as float32 and never used again for
    this TOP; ``notice`` says so (the Info page shows it).
    """

    def __init__(self) -> None:
        self.refused: set[np.dtype] = set()
        self.notice = ""

    def layout(self, lay: TexLayout, choice: str | None) -> TexLayout:
        want = OUT_DTYPES.get(str(choice or "input").strip().lower(), None) or lay.dtype
        if want in self.refused:
            want = SAFE_DTYPE
        return lay if want == lay.dtype else layout_for(lay, want)

    def can_fall_back(self, lay: TexLayout) -> bool:
        """16-bit types may be refused; uint8 and float32 are the documented ones."""
        return lay.dtype not in (SAFE_DTYPE, np.dtype(np.uint8))

    def refuse(self, lay: TexLayout, err: BaseException) -> TexLayout:
        """TD refused ``lay.dtype``: remember it; the float32 layout to retry with."""
        self.refused.add(lay.dtype)
        self.notice = (
            f"TouchDesigner refused {lay.dtype} output ({type(err).__name__}: {' '.join(str(err).split())[:120]}); "
            "writing float32 from now on"
        )
        return layout_for(lay, SAFE_DTYPE)

    def forget(self, lay: TexLayout) -> None:
        self.refused.discard(lay.dtype)
        self.notice = ""

    def in_use(self, lay: TexLayout | None) -> str:
        name = str(lay.dtype) if lay is not None else ""
        return f"{name} ({self.notice})" if self.notice and name else name


def source_bits(lay: TexLayout) -> int:
    """Bits per channel of a TD texture: 8 for uint8, 16 for uint16/float16, 32 for float32."""
    return 8 * lay.dtype.itemsize


def tell_source_bits(engine, lay: TexLayout) -> None:
    """Engines that care about the input precision (RTX VSR's 10-bit path) hear it when it changes."""
    if engine is not None and hasattr(engine, "source_bits"):
        bits = source_bits(lay)
        if engine.source_bits != bits:
            engine.set_options(source_bits=bits)
