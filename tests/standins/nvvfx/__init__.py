"""A stand-in for NVIDIA's ``nvidia-vfx`` package (``import nvvfx``), for CPU tests.

It follows the documented Python API (docs.nvidia.com/maxine/vfx-python, NVIDIA's samples):

- ``VideoSuperRes(quality=QualityLevel.HIGH, device=0, strength=..., image_encoding=...)``
  (``strength``/``image_encoding`` are 0.2 arguments; ``use_api("0.1")`` swaps in the 0.1 class:
  no ``strength``/``image_encoding``, no ``ImageEncoding``, no ``input_width``/``input_height``
  (0.1 infers the input size from the frame; setting an attribute the class lacks raises
  ``AttributeError``, as a compiled extension class does); ``SUPPORTS_STRENGTH = False`` refuses
  the 0.2 keyword arguments only);
- ``input_width``/``input_height``/``output_width``/``output_height``/``quality`` properties, ``load()``,
  ``is_loaded``, ``close()``, context manager;
- ``run(input_array, *, non_blocking=False, stream_ptr=0)`` takes a DLPack array ``(3,H,W)`` float32
  in [0,1] and returns an output whose ``image`` is a raw DLPack capsule of a buffer that is
  **reused** by the next ``run`` (as the real SDK does), so callers must copy it;
- errors raise ``NvVFXError``; ``get_sdk_version()``; ``nvvfx.effects.QualityLevel``.

Where the stand-in differs, on purpose:

- ``ACCEPT_CPU = True``: CPU arrays are accepted so tests run without a GPU. The real SDK needs
  CUDA arrays; set ``ACCEPT_CPU = False`` to get its refusal.
- It is strict where the real SDK's limits are only known from practice: output sizes must be
  multiples of 8, 1x..4x, no downscale, DENOISE/DEBLUR same size, and an explicitly set input size
  must match the frame. The "upscale" itself is a bilinear resize (plus a tiny offset per level so
  tests can tell levels apart); a DENOISE/DEBLUR pass is a 3x3 box blur.
- ``FAIL`` injects failures: ``FAIL["init" | "load" | "run"] = "message"`` raises ``NvVFXError``.
- ``INSTANCES`` lists every effect created (tests inspect their arguments and calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import effects
from .effects import QualityLevel

ACCEPT_CPU = True
SUPPORTS_STRENGTH = True
OUTPUT_MULTIPLE = 8
FAIL: dict[str, str | None] = {"init": None, "load": None, "run": None}
INSTANCES: list["VideoSuperRes"] = []


class NvVFXError(RuntimeError):
    """Raised for every SDK failure (the real one carries the NvCV status text)."""


def get_sdk_version() -> str:
    return "1.2.0 (stand-in)"


def reset() -> None:
    """Back to defaults (tests call this between cases)."""
    global ACCEPT_CPU, SUPPORTS_STRENGTH, OUTPUT_MULTIPLE
    ACCEPT_CPU, SUPPORTS_STRENGTH, OUTPUT_MULTIPLE = True, True, 8
    FAIL.update(init=None, load=None, run=None)
    INSTANCES.clear()
    use_api("0.2")


def use_api(version: str) -> None:
    """Act as nvidia-vfx ``0.1`` or ``0.2`` (the module's ``VideoSuperRes`` and ``__version__``)."""
    global VideoSuperRes, __version__
    VideoSuperRes = VideoSuperRes01 if version.startswith("0.1") else VideoSuperRes02
    __version__ = "0.1.0.1" if version.startswith("0.1") else "0.2.0.0"


def _fail(stage: str) -> None:
    msg = FAIL.get(stage)
    if msg:
        raise NvVFXError(msg)


@dataclass
class VideoSuperResOutput:
    image: Any  # raw DLPack capsule


class Effect:
    """Base: lifetime and context manager."""

    def __init__(self) -> None:
        self._loaded = False
        self._closed = False

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    def close(self) -> None:
        self._loaded = False
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _VideoSuperResCore(Effect):
    """What 0.1 and 0.2 share."""

    QualityLevel = QualityLevel

    class ImageEncoding:
        RGB8 = 0
        RGB10A2 = 1

    def __init__(self, quality: QualityLevel = QualityLevel.HIGH, device: int = 0, **kw: Any):
        super().__init__()
        if kw and not SUPPORTS_STRENGTH:
            raise TypeError(f"VideoSuperRes.__init__() got an unexpected keyword argument '{next(iter(kw))}'")
        unknown = set(kw) - {"strength", "image_encoding"}
        if unknown:
            raise TypeError(f"VideoSuperRes.__init__() got an unexpected keyword argument '{unknown.pop()}'")
        _fail("init")
        self._quality = QualityLevel(quality)
        self.device = int(device)
        self.strength = float(kw.get("strength", 1.0))
        if not 0.0 <= self.strength <= 1.0:
            raise NvVFXError(f"strength {self.strength} outside [0, 1]")
        enc = self.ImageEncoding
        self.image_encoding = kw.get("image_encoding", enc.RGB8 if enc is not None else None)
        if enc is not None and self.image_encoding not in (enc.RGB8, enc.RGB10A2):
            raise NvVFXError(f"NVCV_ERR_PARAMETER: unknown image_encoding {self.image_encoding!r}")
        self._in_w: int | None = None
        self._in_h: int | None = None
        self._out_w: int | None = None
        self._out_h: int | None = None
        self._buffer: torch.Tensor | None = None
        self.calls: list[dict] = []
        self.buffer_ptrs: set[int] = set()
        INSTANCES.append(self)

    # properties the docs list
    @property
    def output_width(self) -> int | None:
        return self._out_w

    @output_width.setter
    def output_width(self, v: int) -> None:
        self._out_w = int(v)

    @property
    def output_height(self) -> int | None:
        return self._out_h

    @output_height.setter
    def output_height(self, v: int) -> None:
        self._out_h = int(v)

    @property
    def quality(self) -> QualityLevel:
        return self._quality

    @quality.setter
    def quality(self, q: QualityLevel) -> None:
        self._quality = QualityLevel(q)

    def load(self) -> None:
        if self._closed:
            raise NvVFXError("effect is closed")
        if self._out_w is None or self._out_h is None:
            raise NvVFXError("NVCV_ERR_PARAMETER: set output_width and output_height before load()")
        _fail("load")
        self._loaded = True

    def _check(self, h: int, w: int) -> None:
        ow, oh = self._out_w, self._out_h
        if self._in_w is not None and (self._in_w, self._in_h) != (w, h):
            raise NvVFXError(
                f"NVCV_ERR_MISMATCH: frame is {w}x{h} but the effect was set up for {self._in_w}x{self._in_h}"
            )
        if ow % OUTPUT_MULTIPLE or oh % OUTPUT_MULTIPLE:
            raise NvVFXError(f"NVCV_ERR_RESOLUTION: output {ow}x{oh} is not a multiple of {OUTPUT_MULTIPLE}")
        if self._quality in effects.SAME_SIZE:
            if (ow, oh) != (w, h):
                raise NvVFXError(f"NVCV_ERR_RESOLUTION: {self._quality.name} needs output = input ({w}x{h}), got {ow}x{oh}")
        elif ow < w or oh < h or ow > 4 * w or oh > 4 * h:
            raise NvVFXError(f"NVCV_ERR_RESOLUTION: {w}x{h} -> {ow}x{oh} is outside 1x..4x")

    def run(self, input_array: Any, *, non_blocking: bool = False, stream_ptr: int = 0) -> VideoSuperResOutput:
        if not self._loaded:
            raise NvVFXError("effect is not loaded: call load() first")
        _fail("run")
        try:
            x = torch.from_dlpack(input_array)
        except Exception as e:  # noqa: BLE001
            raise NvVFXError(f"input does not support DLPack: {e}") from None
        if x.device.type != "cuda" and not ACCEPT_CPU:
            raise NvVFXError("input must be a CUDA array")
        if x.dim() != 3 or x.shape[0] != 3 or x.dtype != torch.float32:
            raise NvVFXError(f"input must be (3,H,W) float32, got {tuple(x.shape)} {x.dtype}")
        h, w = int(x.shape[1]), int(x.shape[2])
        self._check(h, w)
        oh, ow = self._out_h, self._out_w
        if self._quality in effects.SAME_SIZE:
            y = F.avg_pool2d(F.pad(x[None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0]
        else:
            y = F.interpolate(x[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]
            y = y + 0.001 * int(self._quality) * self.strength  # levels are distinguishable in tests
        if self._buffer is None or tuple(self._buffer.shape) != (3, oh, ow) or self._buffer.device != x.device:
            self._buffer = torch.empty((3, oh, ow), dtype=torch.float32, device=x.device)
        self._buffer.copy_(y.clamp(0.0, 1.0))  # the SDK writes every result into the same buffer
        self.buffer_ptrs.add(self._buffer.data_ptr())
        self.calls.append({"in": (h, w), "out": (oh, ow), "non_blocking": non_blocking, "stream_ptr": stream_ptr})
        return VideoSuperResOutput(image=self._buffer.__dlpack__())


class VideoSuperRes02(_VideoSuperResCore):
    """nvidia-vfx 0.2: also ``strength``, ``image_encoding`` and settable input size."""

    @property
    def input_width(self) -> int | None:
        return self._in_w

    @input_width.setter
    def input_width(self, v: int) -> None:
        self._in_w = int(v)

    @property
    def input_height(self) -> int | None:
        return self._in_h

    @input_height.setter
    def input_height(self, v: int) -> None:
        self._in_h = int(v)


class VideoSuperRes01(_VideoSuperResCore):
    """nvidia-vfx 0.1: quality and device only; the input size comes from the frame."""

    _ATTRS = frozenset({"output_width", "output_height", "quality"})

    def __init__(self, quality: QualityLevel = QualityLevel.HIGH, device: int = 0, **kw: Any):
        if kw:
            raise TypeError(f"VideoSuperRes.__init__() got an unexpected keyword argument '{next(iter(kw))}'")
        object.__setattr__(self, "_init", True)
        super().__init__(quality, device)
        object.__setattr__(self, "_init", False)

    def __setattr__(self, name: str, value: Any) -> None:
        if not self.__dict__.get("_init") and not name.startswith("_") and name not in self._ATTRS:
            raise AttributeError(f"'VideoSuperRes' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


VideoSuperRes01.ImageEncoding = None  # type: ignore[assignment]  # 0.1 has no ImageEncoding
VideoSuperRes = VideoSuperRes02
__version__ = "0.2.0.0"
