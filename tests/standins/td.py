"""A stand-in for the parts of TouchDesigner's ``td`` module a Script TOP uses (derivative.ca docs:
TOP Class, scriptTOP Class, CUDAMemory, CUDAMemoryShape, Par, Page).

- ``TOP.cudaMemory(stream=None)`` copies the TOP's image into a *new* buffer and returns a
  ``CUDAMemory`` (``ptr``, ``size``, ``shape``) that frees it when garbage-collected. The image is
  stored as TD does: interleaved HWC, bottom row first, BGRA for uint8 4-component data, RGBA else.
- ``ScriptTOP.copyCUDAMemory(address, size, shape, stream=None)`` copies from a raw address into
  the TOP (only inside a cook, as in TD) and keeps the result as ``output`` (numpy, TD's layout).
- The host-memory path (TD without CUDA): ``TOP.numpyArray()`` returns a new float32 ``(H, W, C)``
  array in [0, 1], bottom row first, RGBA channel order whatever the texture's data type;
  ``ScriptTOP.copyNumpyArray(array)`` takes a C-contiguous ``(H, W, 3 or 4)`` uint8, uint16 or
  float32 array in that row and channel order (anything else raises, as TD does) and keeps a copy
  as ``output``.
- Parameters: ``appendCustomPage`` -> ``Page.appendMenu/appendFloat/appendStr/appendPulse/appendToggle``
  return lists of ``Par`` (TD returns a ParGroup; both index with ``[0]``); ``scriptOp.par.Name``.
- ``addError``/``addWarning`` collect messages for the current cook.

Behaviours of other TD builds, switched on per operator (the docs leave them open):

- ``TOP(..., stream_arg=False)``: a ``cudaMemory()`` without the ``stream`` argument (Python's own
  ``TypeError`` for an unexpected keyword);
- ``ScriptTOP(..., stream_arg=False)``: the same for ``copyCUDAMemory``;
- ``ScriptTOP(..., refuse_dtypes={np.float16, np.uint16})``: ``copyCUDAMemory`` refuses data types
  other than the documented uint8 and float32 with ``tdError`` (``copyNumpyArray`` takes only uint8,
  uint16 and float32, and the CUDA docs show only uint8 and float32).

Memory lives where ``device`` says. On CPU (the tests) ``ptr`` is a host address, read back with
ctypes, so pointer, size and layout are checked for real; on CUDA (the GPU benchmark) the copies
are device-to-device on the given stream, like TD's.
"""

from __future__ import annotations

import ctypes
import itertools
from typing import Any

import numpy as np
import torch

_ids = itertools.count(1)


class tdError(Exception):  # noqa: N801 - TD's own name
    """What TD raises for a call it refuses."""


class CUDAMemoryShape:
    def __init__(self) -> None:
        self.width = 0
        self.height = 0
        self.numComps = 4
        self.depth = 1
        self.isCube = False
        self.is3D = False
        self.dataType = np.float32


class CUDAMemory:
    def __init__(self, tensor: torch.Tensor, shape: CUDAMemoryShape):
        self._tensor = tensor  # the allocation; freed with this object
        self.ptr = tensor.data_ptr()
        self.size = tensor.numel() * tensor.element_size()
        self.shape = shape


_TORCH = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}
if hasattr(torch, "uint16"):
    _TORCH[np.dtype(np.uint16)] = torch.uint16


class TOP:
    """An input TOP holding ``image``: numpy ``(H, W, C)`` in TD's layout (bottom row first)."""

    def __init__(self, image: np.ndarray, device: str | torch.device = "cpu", name: str = "in1", stream_arg: bool = True):
        self.stream_arg = stream_arg
        self.image = image
        self.device = torch.device(device)
        self.name = name
        self.path = f"/project1/{name}"
        self.valid = True
        self.streams: list[Any] = []

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def cudaMemory(self, *args, **kwargs) -> CUDAMemory:
        """A new buffer holding a copy of the texture (on CUDA: a device-to-device copy on ``stream``)."""
        if not self.stream_arg and (args or kwargs):
            raise TypeError(f"cudaMemory() got an unexpected keyword argument '{next(iter(kwargs), 'stream')}'")
        stream = kwargs.get("stream", args[0] if args else None)
        self.streams.append(stream)
        img = self.image if self.image.ndim == 3 else self.image[..., None]
        if getattr(self, "_uploaded", (None, None))[0] is not self.image:
            t = torch.from_numpy(np.ascontiguousarray(img).view(np.uint8).copy()).view(_TORCH[img.dtype])
            self._uploaded = (self.image, t.to(self.device).contiguous())  # the "texture"
        tex = self._uploaded[1]
        if self.device.type == "cuda" and stream:
            with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
                t = tex.clone()
        else:
            t = tex.clone()
        shape = CUDAMemoryShape()
        shape.height, shape.width, shape.numComps = img.shape
        shape.dataType = img.dtype.type
        return CUDAMemory(t, shape)


    def numpyArray(self, delayed: bool = False, writable: bool = False) -> np.ndarray:
        """The texture downloaded to host memory: float32 in [0, 1], bottom row first, RGB(A) order."""
        self.numpy_reads = getattr(self, "numpy_reads", 0) + 1
        img = self.image if self.image.ndim == 3 else self.image[..., None]
        if img.dtype == np.uint8:
            x = img.astype(np.float32) / 255.0
            if x.shape[-1] == 4:
                x = x[..., [2, 1, 0, 3]]  # the stored BGRA texture, read back as RGBA
        elif img.dtype == np.uint16:
            x = img.astype(np.float32) / 65535.0
        else:
            x = img.astype(np.float32)
        return np.ascontiguousarray(x)


class Par:
    def __init__(self, owner, name: str, style: str, label: str | None = None):
        self.owner = owner
        self.name = name
        self.style = style
        self.label = label or name
        self.val: Any = "" if style in ("Str", "Menu") else 0.0
        self.default: Any = self.val
        self.menuNames: list[str] = []
        self.menuLabels: list[str] = []
        self.readOnly = False
        self.min = self.max = self.normMin = self.normMax = 0.0
        self.clampMin = self.clampMax = False
        self.expr: str | None = None  # a failing expression makes eval() raise

    def eval(self):
        if self.expr is not None:
            raise RuntimeError(f"expression error in {self.name}: {self.expr}")
        return self.val

    def pulse(self) -> None:
        """What TD does when a pulse par is clicked: call onPulse."""
        cb = getattr(self.owner, "callbacks", None)
        if cb is not None:
            cb.onPulse(self)


class _Pars:
    def __getattr__(self, name):  # TD returns None-ish for missing custom pars; tests check with getattr
        raise AttributeError(name)


class Page:
    def __init__(self, owner, name: str):
        self.owner = owner
        self.name = name
        self.pars: list[Par] = []

    def _append(self, style: str, name: str, label: str | None = None, **_) -> list[Par]:
        p = Par(self.owner, name, style, label)
        setattr(self.owner.par, name, p)
        self.pars.append(p)
        return [p]

    def appendMenu(self, name, label=None, **kw):
        return self._append("Menu", name, label, **kw)

    def appendFloat(self, name, label=None, **kw):
        return self._append("Float", name, label, **kw)

    def appendStr(self, name, label=None, **kw):
        return self._append("Str", name, label, **kw)

    def appendPulse(self, name, label=None, **kw):
        return self._append("Pulse", name, label, **kw)

    def appendToggle(self, name, label=None, **kw):
        return self._append("Toggle", name, label, **kw)


class ScriptTOP:
    def __init__(
        self,
        inputs: list[TOP] | None = None,
        name: str = "script1",
        out_device: str | torch.device = "cpu",
        stream_arg: bool = True,
        refuse_dtypes=(),
    ):
        self.stream_arg = stream_arg
        self.refuse_dtypes = {np.dtype(d) for d in refuse_dtypes}
        self.refused: list[np.dtype] = []
        self.id = next(_ids)
        self.name = name
        self.path = f"/project1/{name}"
        self.valid = True
        self.inputs = list(inputs or [])
        self.par = _Pars()
        self.pages: list[Page] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.output: np.ndarray | torch.Tensor | None = None
        self.copies: list[dict] = []
        self.out_device = torch.device(out_device)
        self._cooking = False
        self.callbacks = None

    def appendCustomPage(self, name: str) -> Page:
        page = Page(self, name)
        self.pages.append(page)
        return page

    def addError(self, msg: str) -> None:
        if not self._cooking:
            raise RuntimeError("addError is only valid during a cook")
        self.errors.append(msg)

    def addWarning(self, msg: str) -> None:
        if not self._cooking:
            raise RuntimeError("addWarning is only valid during a cook")
        self.warnings.append(msg)

    def copyCUDAMemory(self, address: int, size: int, shape: CUDAMemoryShape, *args, **kwargs) -> None:
        if not self.stream_arg and (args or kwargs):
            raise TypeError(f"copyCUDAMemory() got an unexpected keyword argument '{next(iter(kwargs), 'stream')}'")
        stream = kwargs.get("stream", args[0] if args else None)
        if not self._cooking:
            raise RuntimeError("copyCUDAMemory is only valid inside onCook")
        dt = np.dtype(shape.dataType)
        if dt in self.refuse_dtypes:
            self.refused.append(dt)
            raise tdError(f"Unsupported CUDAMemoryShape dataType {dt}")
        want = shape.width * shape.height * shape.numComps * dt.itemsize
        if size != want:
            raise RuntimeError(f"size {size} does not match shape {shape.width}x{shape.height}x{shape.numComps} {dt}")
        if self.out_device.type == "cuda":
            src = torch.as_tensor(
                _CAI(address, (shape.height, shape.width, shape.numComps), dt), device=self.out_device
            )
            dst = getattr(self, "_texture", None)
            if dst is None or dst.shape != src.shape or dst.dtype != src.dtype:
                dst = self._texture = torch.empty_like(src)
            s = torch.cuda.ExternalStream(stream) if stream else torch.cuda.current_stream()
            with torch.cuda.stream(s):
                dst.copy_(src, non_blocking=True)
            self.output = dst
        else:
            raw = ctypes.string_at(address, size)
            self.output = np.frombuffer(raw, dtype=dt).reshape(shape.height, shape.width, shape.numComps).copy()
        self.copies.append({"size": size, "hwc": (shape.height, shape.width, shape.numComps), "dtype": dt, "stream": stream})

    def copyNumpyArray(self, array) -> None:
        if not self._cooking:
            raise RuntimeError("copyNumpyArray is only valid inside onCook")
        if not isinstance(array, np.ndarray) or array.ndim != 3 or array.shape[2] not in (3, 4):
            raise TypeError(f"copyNumpyArray takes an (h, w, 3 or 4) numpy array, got {getattr(array, 'shape', type(array))}")
        if array.dtype not in (np.uint8, np.uint16, np.float32):
            raise TypeError(f"copyNumpyArray takes uint8, uint16 or float32, got {array.dtype}")
        if not array.flags.c_contiguous:
            raise TypeError("copyNumpyArray takes a C-contiguous array")
        self.output = array.copy()
        self.copies.append({"size": array.nbytes, "hwc": array.shape, "dtype": array.dtype, "stream": None, "numpy": True})

    def cook(self, callbacks) -> None:
        """TD's cook: clear the messages, call onCook."""
        self.errors, self.warnings = [], []
        self._cooking = True
        try:
            callbacks.onCook(self)
        finally:
            self._cooking = False


class _CAI:
    def __init__(self, ptr: int, shape: tuple, dt: np.dtype):
        self.__cuda_array_interface__ = {"version": 3, "shape": shape, "typestr": dt.str, "data": (ptr, False), "strides": None}


def td_image(rgba: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """A top-row-first RGBA float image in [0,1] -> TD's layout for ``dtype`` (flipped; BGRA for uint8)."""
    img = rgba[::-1]
    if dtype == np.uint8:
        img = img[..., [2, 1, 0, 3]] if img.shape[-1] == 4 else img
        return np.ascontiguousarray(np.round(img * 255.0).astype(np.uint8))
    if dtype == np.uint16:
        return np.ascontiguousarray(np.round(img * 65535.0).astype(np.uint16))
    return np.ascontiguousarray(img.astype(dtype))


def from_td_image(img: np.ndarray) -> np.ndarray:
    """Inverse of :func:`td_image`: TD layout -> top-row-first RGBA float."""
    x = img.astype(np.float32)
    if img.dtype == np.uint8:
        x = x / 255.0
        if x.shape[-1] == 4:
            x = x[..., [2, 1, 0, 3]]
    elif img.dtype == np.uint16:
        x = x / 65535.0
    return np.ascontiguousarray(x[::-1])
