"""Frame format conversion: the one place where host layouts meet the internal one.

Hosts hand frames as uint8 or float, HWC or CHW, RGB/RGBA/BGR/BGRA/gray, sometimes
with a leading batch dimension of one (Scope) or stored bottom row first
(TouchDesigner).  Inside the package every frame is a float32 tensor
``(1, 3, H, W)`` in [0, 1] on the compute device; alpha, when the host has one,
travels beside it as ``(1, 1, H, W)``.

``decode`` turns a host frame into the internal form, ``encode`` turns an
internal frame back into any host format.  Both stay on the GPU when the frame is
there: no host round trip, no sync.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

try:  # the CPU fast paths below; without OpenCV the torch paths do the same
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

Layout = Literal["HWC", "CHW"]
Channels = Literal["RGB", "RGBA", "BGR", "BGRA", "GRAY"]
DType = Literal["uint8", "uint16", "float16", "bfloat16", "float32"]

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "uint8": torch.uint8,
    "uint16": torch.uint16 if hasattr(torch, "uint16") else torch.int32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}
_DTYPE_NAMES = {v: k for k, v in _TORCH_DTYPES.items()}
_DTYPE_NAMES[torch.float64] = "float32"  # accepted on input, produced as float32
_INT_MAX = {"uint8": 255.0, "uint16": 65535.0}
_N_CHANNELS = {"GRAY": 1, "RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4}
_DEFAULT_ORDER = {1: "GRAY", 3: "RGB", 4: "RGBA"}


@dataclass(frozen=True)
class FrameFormat:
    """How a host stores one frame.

    ``flipped``: rows are stored bottom row first (TouchDesigner's origin).
    ``batched``: the frame carries a leading batch dimension of one (Scope's ``(1,H,W,3)``).
    """

    layout: Layout = "HWC"
    channels: Channels = "RGB"
    dtype: DType = "uint8"
    flipped: bool = False
    batched: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("HWC", "CHW"):
            raise InputError(f"layout must be HWC or CHW, not {self.layout!r}")
        if self.channels not in _N_CHANNELS:
            raise InputError(f"channels must be one of {sorted(_N_CHANNELS)}, not {self.channels!r}")
        if self.dtype not in _TORCH_DTYPES:
            raise InputError(f"dtype must be one of {sorted(_TORCH_DTYPES)}, not {self.dtype!r}")

    @property
    def n_channels(self) -> int:
        return _N_CHANNELS[self.channels]

    @property
    def torch_dtype(self) -> torch.dtype:
        return _TORCH_DTYPES[self.dtype]

    def with_(self, **changes) -> "FrameFormat":
        return replace(self, **changes)

    @classmethod
    def parse(cls, spec: "FrameFormat | str | None") -> "FrameFormat | None":
        """Accept a FrameFormat or a compact string such as ``"HWC:BGRA:uint8:flipped"``."""
        if spec is None or isinstance(spec, FrameFormat):
            return spec
        kw: dict = {}
        for part in str(spec).replace(",", ":").split(":"):
            p = part.strip()
            if not p:
                continue
            if p.upper() in ("HWC", "CHW"):
                kw["layout"] = p.upper()
            elif p.upper() in _N_CHANNELS:
                kw["channels"] = p.upper()
            elif p.lower() in _TORCH_DTYPES:
                kw["dtype"] = p.lower()
            elif p.lower() in ("flip", "flipped"):
                kw["flipped"] = True
            elif p.lower() == "batched":
                kw["batched"] = True
            else:
                raise InputError(f"unknown frame-format token {p!r} in {spec!r}")
        return cls(**kw)


def as_tensor(frame) -> torch.Tensor:
    """numpy arrays, tensors and anything with ``__cuda_array_interface__``/DLPack -> tensor (no copy when possible)."""
    if isinstance(frame, torch.Tensor):
        return frame
    if isinstance(frame, np.ndarray):
        if frame.dtype == np.uint16:
            return torch.from_numpy(frame.astype(np.int32))
        if frame.dtype == np.bool_:
            frame = frame.astype(np.uint8) * 255
        if not frame.flags.writeable:
            frame = frame.copy()
        return torch.from_numpy(np.ascontiguousarray(frame))
    if hasattr(frame, "__cuda_array_interface__"):
        return torch.as_tensor(frame, device="cuda")
    if hasattr(frame, "__dlpack__"):
        return torch.from_dlpack(frame)
    if frame is None:
        raise InputError("frame is None")
    try:
        return torch.as_tensor(np.asarray(frame))
    except Exception as e:  # noqa: BLE001 - we turn anything into one clear line
        raise InputError(f"cannot read a frame from {type(frame).__name__}: {e}") from None


def infer_format(frame: torch.Tensor) -> FrameFormat:
    """Guess the host format of a tensor from its shape and dtype.

    4 dims -> batched; a last dim of 1, 3 or 4 -> HWC; else a first dim of 1, 3 or 4 -> CHW;
    2 dims -> gray.  Channel order defaults to RGB(A): pass a format for BGR(A).
    """
    dt = frame.dtype
    if dt in (torch.int32, torch.int64, torch.int16):
        dtype = "uint16"
    elif dt == torch.float64:
        dtype = "float32"
    elif dt in _DTYPE_NAMES:
        dtype = _DTYPE_NAMES[dt]
    else:
        raise InputError(f"unsupported frame dtype {dt}; use uint8, uint16, float16, bfloat16 or float32")
    shape = tuple(frame.shape)
    batched = False
    if len(shape) == 4:
        if shape[0] != 1:
            raise InputError(f"a frame has a batch dimension of 1 at most, got shape {shape}")
        batched = True
        shape = shape[1:]
    if len(shape) == 2:
        return FrameFormat(layout="HWC", channels="GRAY", dtype=dtype, batched=batched)
    if len(shape) != 3:
        raise InputError(f"a frame has 2, 3 or 4 dimensions (HW, HWC/CHW, 1HWC/1CHW), got shape {tuple(frame.shape)}")
    if shape[-1] in _DEFAULT_ORDER and not (shape[0] in _DEFAULT_ORDER and shape[-1] > shape[0]):
        layout, c = "HWC", shape[-1]
    elif shape[0] in _DEFAULT_ORDER:
        layout, c = "CHW", shape[0]
    else:
        raise InputError(f"cannot find a channel dimension of 1, 3 or 4 in shape {tuple(frame.shape)}")
    return FrameFormat(layout=layout, channels=_DEFAULT_ORDER[c], dtype=dtype, batched=batched)


class PinnedUpload:
    """CPU frames -> CUDA through reused page-locked buffers, so the copy is truly asynchronous.

    A copy from ordinary (pageable) memory makes the driver stage it and may wait for the stream;
    from pinned memory it is a plain DMA queued on the stream. Two buffers per frame shape take
    turns: before one is refilled, the event recorded after its previous copy is waited on (by then
    long done), so the host never overwrites memory a copy is still reading.
    """

    SLOTS = 2

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._ring: list[tuple[torch.Tensor, torch.cuda.Event]] = []
        self._i = 0
        self.disabled = False  # pinning failed once (no driver, memory locked out): plain copies from then on

    def __call__(self, t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        device = torch.device(device)
        if self.disabled or t.device.type != "cpu" or device.type != "cuda":
            return t.to(device, non_blocking=True)
        key = (tuple(t.shape), t.dtype)
        try:
            if key != self._key:  # a new frame shape: new buffers (the old ones go with their last copies)
                self._ring = [(torch.empty(t.shape, dtype=t.dtype, pin_memory=True), torch.cuda.Event())
                              for _ in range(self.SLOTS)]
                self._key, self._i = key, 0
        except RuntimeError:
            self.disabled = True
            return t.to(device, non_blocking=True)
        buf, done = self._ring[self._i % self.SLOTS]
        self._i += 1
        done.synchronize()  # the copy that last read this buffer (returns at once if never recorded)
        buf.copy_(t)
        out = buf.to(device, non_blocking=True)
        done.record(torch.cuda.current_stream(device))
        return out


def decode(
    frame,
    fmt: FrameFormat | str | None = None,
    device: torch.device | str | None = None,
    upload: PinnedUpload | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, FrameFormat]:
    """Host frame -> ``(rgb (1,3,H,W) float32 [0,1], alpha (1,1,H,W) or None, format used)``.

    NaN becomes 0 and +/-Inf is clamped, so one broken frame cannot poison temporal state.
    ``upload``: reusable pinned buffers for CPU frames bound for a CUDA device (the node keeps one).
    """
    fast = _decode_cv(frame, fmt, device)
    if fast is not None:
        return fast
    t = as_tensor(frame)
    if t.device.type == "meta":
        raise InputError("frame has no data (a meta tensor)")
    fmt = FrameFormat.parse(fmt) or infer_format(t)
    if device is not None:
        t = upload(t, device) if upload is not None else t.to(device, non_blocking=True)
    x = t
    if fmt.batched or x.dim() == 4:
        if x.dim() != 4 or x.shape[0] != 1:
            raise InputError(f"format says batched (1,...) but frame has shape {tuple(t.shape)}")
        x = x[0]
    if x.dim() == 2:
        x = x.unsqueeze(-1) if fmt.layout == "HWC" else x.unsqueeze(0)
    if x.dim() != 3:
        raise InputError(f"frame of shape {tuple(t.shape)} does not match format {fmt}")
    if fmt.layout == "HWC":
        x = x.permute(2, 0, 1)
    c = x.shape[0]
    if c != fmt.n_channels:
        raise InputError(
            f"format {fmt.channels} has {fmt.n_channels} channels but the frame has {c} (shape {tuple(t.shape)})"
        )
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise InputError(f"empty frame of shape {tuple(t.shape)}")
    if fmt.dtype in _INT_MAX:
        x = x.to(torch.float32) * (1.0 / _INT_MAX[fmt.dtype])
    else:
        x = torch.nan_to_num(x.to(torch.float32), nan=0.0, posinf=1.0, neginf=0.0)
    x = x.clamp_(0.0, 1.0) if x is not t else x.clamp(0.0, 1.0)
    if fmt.flipped:
        x = x.flip(1)
    order = fmt.channels
    alpha = None
    if order == "GRAY":
        rgb = x.expand(3, -1, -1)
    elif order in ("RGB", "RGBA"):
        rgb = x[:3]
    else:  # BGR / BGRA: a reversed view (an index list would copy the list to the device first)
        rgb = x[:3].flip(0)
    if fmt.n_channels == 4:
        alpha = x[3:4].unsqueeze(0).contiguous()
    return rgb.unsqueeze(0).contiguous(), alpha, fmt


def encode(
    rgb: torch.Tensor,
    fmt: FrameFormat | str,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Internal ``(1,3,H,W)`` float [0,1] (+ optional alpha at any size) -> host frame in ``fmt``.

    Alpha is resized (bilinear) to the frame's size; without one, an opaque alpha is written.
    """
    fmt = FrameFormat.parse(fmt)
    if rgb.dim() != 4 or rgb.shape[0] != 1 or rgb.shape[1] != 3:
        raise InputError(f"encode expects (1,3,H,W), got {tuple(rgb.shape)}")
    fast = _encode_cv(rgb, fmt, alpha)
    if fast is not None:
        return fast
    x = rgb[0].float().clamp(0.0, 1.0).nan_to_num_(0.0)  # NaN -> 0, as the OpenCV path
    h, w = x.shape[-2:]
    order = fmt.channels
    if order == "GRAY":
        x = 0.299 * x[0:1] + 0.587 * x[1:2] + 0.114 * x[2:3]
    elif order in ("BGR", "BGRA"):
        x = x.flip(0)
    if fmt.n_channels == 4:
        if alpha is None:
            a = torch.ones((1, h, w), device=x.device, dtype=x.dtype)
        else:
            a = alpha.to(x.device, torch.float32)
            if a.shape[-2:] != (h, w):
                a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
            a = a[0].clamp(0.0, 1.0).nan_to_num_(0.0)
        x = torch.cat([x, a], 0)
    if fmt.flipped:
        x = x.flip(1)
    if fmt.layout == "HWC":
        x = x.permute(1, 2, 0)
    if fmt.dtype in _INT_MAX:
        x = (x * _INT_MAX[fmt.dtype]).round_()
        x = x.to(torch.int32 if fmt.dtype == "uint16" else torch.uint8)
    else:
        x = x.to(fmt.torch_dtype)
    if fmt.batched:
        x = x.unsqueeze(0)
    return x.contiguous()


# --- CPU fast paths (OpenCV): HWC uint8/float32 <-> planar float32, one pass per plane ---------------------

_CV_DTYPES = {"uint8": np.uint8, "float32": np.float32}
_CV_CHANNELS = ("RGB", "RGBA", "BGR", "BGRA")


def _cv_frame(frame) -> np.ndarray | None:
    """A CPU frame as a numpy array (no copy), or None when the fast path does not apply."""
    if isinstance(frame, np.ndarray):
        return frame
    if isinstance(frame, torch.Tensor) and frame.device.type == "cpu" and not frame.requires_grad:
        if frame.dtype in (torch.uint8, torch.float32):
            return frame.numpy()
    return None


def _decode_cv(frame, fmt, device) -> tuple[torch.Tensor, torch.Tensor | None, FrameFormat] | None:
    """HWC uint8/float32 RGB(A)/BGR(A) on the host, bound for the CPU: converted in OpenCV, one pass, into a
    channels-last ``(1,3,H,W)`` tensor (the layout the OpenCV paths work in; no transpose). None when it
    does not apply."""
    if cv2 is None or (device is not None and torch.device(device).type != "cpu"):
        return None
    a = host = _cv_frame(frame)
    if a is None or a.dtype not in (np.uint8, np.float32) or a.ndim not in (3, 4):
        return None
    try:
        shape_only = SimpleNamespace(dtype=torch.uint8 if a.dtype == np.uint8 else torch.float32, shape=a.shape)
        fmt = FrameFormat.parse(fmt) or infer_format(shape_only)
    except InputError:
        return None
    if (
        fmt.layout != "HWC" or fmt.channels not in _CV_CHANNELS or _CV_DTYPES.get(fmt.dtype) is not a.dtype.type
        or (a.ndim == 4) != fmt.batched
    ):
        return None
    if a.ndim == 4:
        if a.shape[0] != 1:
            return None
        a = a[0]
    h, w, c = a.shape
    if c != fmt.n_channels or h < 1 or w < 1:
        return None
    a = cv2.flip(a, 0) if fmt.flipped else np.ascontiguousarray(a)
    conv = {"RGB": None, "BGR": cv2.COLOR_BGR2RGB, "RGBA": cv2.COLOR_RGBA2RGB, "BGRA": cv2.COLOR_BGRA2RGB}[fmt.channels]
    rgb = cv2.cvtColor(a, conv) if conv is not None else a
    alpha = cv2.extractChannel(a, 3) if c == 4 else None
    if a.dtype == np.uint8:
        s = 1.0 / 255.0
        rgb = cv2.multiply(rgb, (s, s, s, s), dtype=cv2.CV_32F)
        alpha = cv2.multiply(alpha, s, dtype=cv2.CV_32F) if alpha is not None else None
    else:  # NaN -> 0, clamp to [0, 1] (+Inf -> 1, -Inf -> 0); never in the host's own memory
        rgb = rgb.copy() if np.shares_memory(rgb, host) else rgb
        for x in (rgb, alpha) if alpha is not None else (rgb,):
            flat = x.reshape(h, -1)
            cv2.patchNaNs(flat, 0.0)
            cv2.threshold(flat, 1.0, 1.0, cv2.THRESH_TRUNC, dst=flat)
            cv2.threshold(flat, 0.0, 0.0, cv2.THRESH_TOZERO, dst=flat)
    rgb_t = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    alpha_t = torch.from_numpy(alpha).view(1, 1, h, w) if alpha is not None else None
    return rgb_t, alpha_t, fmt


def _encode_cv(rgb: torch.Tensor, fmt: FrameFormat, alpha: torch.Tensor | None) -> torch.Tensor | None:
    """CPU float32 ``(1,3,H,W)`` (channels-last or planar) -> HWC uint8/float32 RGB(A)/BGR(A): clamped, scaled
    and interleaved in OpenCV (uint8: rounded to nearest, as the torch path). None when it does not apply."""
    if (
        cv2 is None or rgb.device.type != "cpu" or rgb.dtype != torch.float32 or rgb.requires_grad
        or fmt.layout != "HWC" or fmt.channels not in _CV_CHANNELS or fmt.dtype not in _CV_DTYPES
    ):
        return None
    h, w = rgb.shape[-2:]
    hwc = rgb[0].permute(1, 2, 0)
    if hwc.is_contiguous():
        x = hwc.detach().numpy()
        x = cv2.cvtColor(x, cv2.COLOR_RGB2BGR) if fmt.channels.startswith("BGR") else x
    else:
        planes = list(rgb[0].detach().contiguous().numpy())
        x = cv2.merge(planes[::-1] if fmt.channels.startswith("BGR") else planes)
    u8 = fmt.dtype == "uint8"
    x = cv2.threshold(x, 0.0, 0.0, cv2.THRESH_TOZERO)[1]  # a new array: the frame itself is never written
    cv2.patchNaNs(x, 0.0)  # NaN -> 0, as the torch path
    x = cv2.threshold(x, 1.0, 1.0, cv2.THRESH_TRUNC, dst=x)[1]  # +Inf -> 1 (convertScaleAbs would make it 0)
    x = cv2.convertScaleAbs(x, alpha=255.0) if u8 else x
    if fmt.n_channels == 4:
        if alpha is None:
            a = np.full((h, w), 255 if u8 else 1.0, np.uint8 if u8 else np.float32)
        else:
            at = alpha.detach().to("cpu", torch.float32)
            if at.shape[-2:] != (h, w):
                at = F.interpolate(at.reshape(1, 1, *at.shape[-2:]), size=(h, w), mode="bilinear", align_corners=False)
            a = cv2.threshold(np.ascontiguousarray(at.reshape(h, w).numpy()), 0.0, 0.0, cv2.THRESH_TOZERO)[1]
            cv2.patchNaNs(a, 0.0)
            a = cv2.threshold(a, 1.0, 1.0, cv2.THRESH_TRUNC, dst=a)[1]
            a = cv2.convertScaleAbs(a, alpha=255.0) if u8 else a
        x = cv2.merge([x, a])
    if x.ndim == 2:
        x = x[..., None]
    if fmt.flipped:
        x = cv2.flip(x, 0)
    t = torch.from_numpy(x)
    return t.unsqueeze(0) if fmt.batched else t
