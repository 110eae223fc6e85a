"""Frame messages between the ``remote`` backend and ``live-upscale serve``.

One binary WebSocket message per frame: a 32-byte little-endian header, then the pixels.

    magic "LU", version, kind (1 = frame), codec (0 raw, 1 png, 2 jpeg), quality, channels (u16),
    frame id (u64), height (u32), width (u32), server ms (f32), queue depth (u32)

Pixels are 8-bit RGB, rows top first. ``raw`` is the exact bytes (loopback, LAN); ``png`` is
lossless and slow; ``jpeg`` (quality 1-100) is what a real network can carry. Control messages
(hello, params, reset, flush, stats, errors) are JSON text messages; see ``server``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

MAGIC = b"LU"
VERSION = 1
KIND_FRAME = 1
HEADER = struct.Struct("<2sBBBBHQIIfI")
CODECS = {"raw": 0, "png": 1, "jpeg": 2}
CODEC_NAMES = {v: k for k, v in CODECS.items()}


@dataclass(frozen=True)
class Frame:
    """One decoded frame message: ``pixels`` is ``(H, W, 3)`` uint8 RGB."""

    id: int
    pixels: np.ndarray
    server_ms: float = 0.0
    queue: int = 0
    nbytes: int = 0  # size of the message on the wire


def _cv2():
    try:
        import cv2  # type: ignore[import-not-found]

        return cv2
    except ImportError:
        return None


def encode(fid: int, pixels: np.ndarray, codec: str = "raw", quality: int = 90, server_ms: float = 0.0,
           queue: int = 0) -> bytes | bytearray:
    """``(H, W, 3)`` uint8 RGB -> one message."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"wire frames are (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    h, w = int(pixels.shape[0]), int(pixels.shape[1])
    quality = int(min(100, max(1, quality)))
    if codec not in CODECS:
        raise InputError(f"unknown codec {codec!r}; use raw, png or jpeg")
    fields = (MAGIC, VERSION, KIND_FRAME, CODECS[codec], quality, 3, fid, h, w, server_ms, queue)
    if codec == "raw":  # one copy: the pixels straight into the message
        msg = bytearray(HEADER.size + h * w * 3)
        HEADER.pack_into(msg, 0, *fields)
        np.frombuffer(msg, np.uint8, offset=HEADER.size).reshape(h, w, 3)[...] = pixels
        return msg  # aiohttp sends a bytearray as it is
    return HEADER.pack(*fields) + _compress(pixels, codec, quality)


def _compress(pixels: np.ndarray, codec: str, quality: int) -> bytes:
    cv2 = _cv2()
    if cv2 is not None:
        bgr = np.ascontiguousarray(pixels[..., ::-1])
        params = [cv2.IMWRITE_JPEG_QUALITY, quality] if codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
        ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", bgr, params)
        if not ok:
            raise InputError(f"{codec} encoding failed")
        return buf.tobytes()
    import io

    from PIL import Image

    out = io.BytesIO()
    if codec == "jpeg":
        Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    else:
        Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


def decode(msg: bytes, max_pixels: int | None = None) -> Frame:
    """One message -> :class:`Frame`. Anything malformed raises ``InputError`` (never anything else)."""
    if len(msg) < HEADER.size:
        raise InputError(f"frame message of {len(msg)} bytes is shorter than its {HEADER.size}-byte header")
    magic, ver, kind, codec, _q, ch, fid, h, w, server_ms, queue = HEADER.unpack_from(msg)
    if magic != MAGIC or ver != VERSION or kind != KIND_FRAME:
        raise InputError("not a live-upscale frame message (bad magic, version or kind)")
    if ch != 3 or h < 1 or w < 1:
        raise InputError(f"frame header says {w}x{h}x{ch}; only RGB frames of at least 1x1 are carried")
    if max_pixels is not None and h * w > max_pixels:
        raise InputError(f"frame of {w}x{h} is over this server's limit of {max_pixels} pixels")
    body = memoryview(msg)[HEADER.size:]
    name = CODEC_NAMES.get(codec)
    if name == "raw":
        if len(body) != h * w * 3:
            raise InputError(f"raw {w}x{h} frame needs {h * w * 3} bytes, got {len(body)}")
        px = np.frombuffer(body, np.uint8).reshape(h, w, 3)
    elif name in ("png", "jpeg"):
        _check_dims(bytes(body[:65536]), name, h, w)  # before decoding: a small file may hold a huge image
        px = _decompress(bytes(body), name)
        if px.shape != (h, w, 3):
            raise InputError(f"{name} frame holds {px.shape[1]}x{px.shape[0]}, its header says {w}x{h}")
    else:
        raise InputError(f"unknown codec number {codec}")
    return Frame(int(fid), px, float(server_ms), int(queue), len(msg))


def _check_dims(head: bytes, name: str, h: int, w: int) -> None:
    """The image's own size (read from its header, nothing decoded) must be the message header's."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(head)) as im:
            iw, ih = im.size
    except Exception as e:  # noqa: BLE001 - an unreadable header is bad input
        raise InputError(f"{name} frame has no readable image header ({type(e).__name__})") from None
    if (ih, iw) != (h, w):
        raise InputError(f"{name} frame holds {iw}x{ih}, its header says {w}x{h}")


def _decompress(body: bytes, name: str) -> np.ndarray:
    try:
        cv2 = _cv2()
        if cv2 is not None:
            bgr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError("undecodable")
            return np.ascontiguousarray(bgr[..., ::-1])
        import io

        from PIL import Image

        with Image.open(io.BytesIO(body)) as im:
            return np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken image is bad input, whatever the decoder raises
        raise InputError(f"{name} frame could not be decoded ({type(e).__name__})") from None


# --- internal tensors <-> wire pixels -----------------------------------------------------------------


def to_pixels(frames: torch.Tensor) -> list[np.ndarray]:
    """``(N,3,H,W)`` float [0,1] (any device) -> N ``(H,W,3)`` uint8 arrays."""
    u8 = frames.detach().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(u8)  # (H,W,3) views of the permuted tensor: encode() copies each once, into its message


def to_tensor(pixels: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """N ``(H,W,3)`` uint8 arrays of one size -> ``(N,3,H,W)`` float [0,1] on ``device``."""
    t = torch.from_numpy(np.stack(pixels))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
