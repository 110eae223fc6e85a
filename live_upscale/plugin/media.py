"""Files in and out for the CLI: video through PyAV (frame rate, timestamps and rotation kept, audio
remuxed untouched), single images, or folders of image frames (names, format, bit depth, grey and
alpha kept).

Nothing lost on files:

- ``plan`` checks the input (every frame's header, or the video's first frame) and the destination
  before anything is written, so most problems are one ``InputError``/``OutputError`` line up front;
- the input is never written: an output that is (or would overwrite, or would contain) the input is
  refused, and so is an existing output unless ``overwrite``;
- output goes to a hidden temporary sibling (``.NAME.part.EXT`` or a ``.NAME.part`` folder) that is
  renamed over the destination only once it is complete; on any error or interruption (any
  ``BaseException``) it is removed, with any folder that was created for it.

Frames go to the node as ``(1,3,H,W)`` float tensors through ``nodes.formats`` (alpha beside them,
upscaled as the node does for hosts); video frames come and go as uint8 RGB ``(H,W,3)`` arrays.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import signal
import struct
import threading
import warnings
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import InputError, LiveUpscaleError

VIDEO_EXTS = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# audio codecs an mp4/mov can carry as they are; anything else is re-encoded to AAC there
_MP4_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}
# audio codecs each container takes as they are, and what others are re-encoded to (MKV and AVI take all)
_AUDIO_FOR = {".mp4": (_MP4_AUDIO, "aac"), ".m4v": (_MP4_AUDIO, "aac"), ".mov": (_MP4_AUDIO, "aac"),
              ".webm": ({"opus", "vorbis"}, "libopus")}
# A header promising more pixels than this is refused before anything is allocated (Pillow's own
# decompression-bomb limit, ~89 Mpx: a 9459x9459 image; 8K video is 33 Mpx).
MAX_PIXELS = 89_478_485
_ALPHA_MODES = ("RGBA", "LA", "La", "PA", "RGBa")
_SAVE_OPTIONS = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95}, ".webp": {"quality": 95}}


class OutputError(LiveUpscaleError, OSError):
    """The destination cannot be written (exists, is the input, no permission, disk full, ...)."""


def is_video_path(p: str | Path) -> bool:
    return Path(p).suffix.lower() in VIDEO_EXTS


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


# --- reading the input --------------------------------------------------------------------------------


@dataclass
class Still:
    """One image file's header: read without decoding the pixels."""

    path: Path
    size: tuple[int, int]  # (w, h)
    mode: str  # Pillow's mode
    deep: bool  # 16 bits per channel
    meta: dict = field(default_factory=dict)  # EXIF (orientation), ICC profile, dpi: written back unchanged
    alpha: bool = False  # an alpha channel, or PNG/GIF colour-key transparency (tRNS)


def list_frames(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name; hidden files (``.x.png``, macOS ``._x.png``) are skipped."""
    folder = Path(folder)
    try:
        files = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file())
    except PermissionError:
        raise InputError(f"cannot read folder {folder}: permission denied") from None
    if not files:
        raise InputError(f"no image frames ({', '.join(sorted(IMAGE_EXTS))}) in folder {folder}")
    return files


def _check_pixels(path: Path, w: int, h: int, what: str = "image") -> None:
    if w <= 0 or h <= 0:
        raise InputError(f"{path}: the {what} header gives an empty size ({w}x{h}); the file is corrupt")
    if w * h > MAX_PIXELS:
        raise InputError(
            f"{path}: the {what} header says {w}x{h} ({w * h / 1e6:.0f} Mpx), above the {MAX_PIXELS / 1e6:.0f} Mpx "
            "limit; refused without decoding (a decompression bomb, or a corrupt header)"
        )


def _check_file(path: Path) -> None:
    if not os.path.lexists(path):
        raise InputError(f"input not found: {path}")
    if not path.exists():
        raise InputError(f"input {path} is a broken symbolic link")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)")
    if path.is_file() and not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied")


def image_header(path: Path) -> Still:
    """Size, mode and depth of an image from its header: fast, allocates nothing for the pixels."""
    from PIL import Image

    _check_file(path)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # opening reads the header only; the size is checked below, with a message
        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
            tile = im.tile[0] if im.tile else None
            meta = {k: im.info[k] for k in ("exif", "icc_profile", "dpi") if im.info.get(k)}
            transparent = "transparency" in im.info
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise InputError(f"{path} is not an image Pillow can read ({_short(e)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    _check_pixels(path, w, h)
    raw = tile[3] if tile is not None and len(tile) > 3 else None
    raw = raw[0] if isinstance(raw, tuple) and raw else raw
    deep = mode.startswith("I;16") or (isinstance(raw, str) and ";16" in raw)
    alpha = mode in _ALPHA_MODES or transparent
    return Still(path, (w, h), mode, deep, meta, alpha)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)  # FFmpeg's error numbers mean nothing to a reader
    return text if len(text) < 160 else text[:157] + "..."


def read_image(path: Path | Still) -> tuple[np.ndarray, str]:
    """Decode an image into an array and the ``FrameFormat`` string that describes it.

    8-bit grey/RGB/RGBA stay as they are; 16-bit PNG (grey, RGB, RGBA) stays 16-bit; palette images
    become RGB(A), grey+alpha RGBA; other modes (CMYK, float, ...) are converted to RGB.
    """
    from PIL import Image

    s = path if isinstance(path, Still) else image_header(Path(path))
    try:
        if s.deep and s.mode in ("RGB", "RGBA"):  # Pillow reads 16-bit colour PNG as 8 bits: PyAV keeps 16
            return _read_deep_png(s), f"HWC:{s.mode}:uint16"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(s.path) as im:
                im.load()
                if im.size != s.size:
                    raise InputError(f"{s.path} changed while it was read")
                if s.deep or im.mode in ("I", "I;16", "I;16B", "I;16L"):
                    a = np.asarray(im)
                    a = np.clip(a, 0, 65535).astype(np.uint16) if a.dtype != np.uint16 else a
                    return a, "HWC:GRAY:uint16"
                if im.mode == "L" and "transparency" not in im.info:
                    return np.asarray(im), "HWC:GRAY:uint8"
                if im.mode == "RGBA" or (im.mode == "RGB" and "transparency" not in im.info):
                    return np.asarray(im), f"HWC:{im.mode}:uint8"
                if im.mode == "1":
                    return np.asarray(im.convert("L")), "HWC:GRAY:uint8"
                alpha = im.mode in _ALPHA_MODES or "transparency" in im.info  # tRNS becomes alpha
                im2 = im.convert("RGBA" if alpha else "RGB")
                return np.asarray(im2), f"HWC:{im2.mode}:uint8"
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{s.path}: truncated or corrupt image ({_short(e)})") from None


def _read_deep_png(s: Still) -> np.ndarray:
    import av

    with av.open(str(s.path), metadata_errors="replace") as c:
        frame = next(c.decode(video=0))
        if (frame.width, frame.height) != s.size:
            raise InputError(f"{s.path}: truncated or corrupt image (decoded size differs from its header)")
        return frame.to_ndarray(format="rgba64le" if s.mode == "RGBA" else "rgb48le")


def write_image(path: Path, frame: np.ndarray, fmt: str = "HWC:RGB:uint8", mode: str | None = None,
                meta: dict | None = None) -> None:
    """Save an ``encode``d frame; 16-bit colour PNG through PyAV's PNG encoder (Pillow writes 8 bits).

    A file type that cannot hold what the frame has gets the nearest it can: 8 bits for 16-bit
    colour outside PNG, no alpha in JPEG (``_describe`` says so before the run).
    """
    from PIL import Image

    suffix = path.suffix.lower()
    if frame.dtype != np.uint8 and "uint16" in fmt:
        frame = frame.astype(np.uint16)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    if frame.dtype == np.uint16 and (suffix != ".png" and not (frame.ndim == 2 and suffix in (".tif", ".tiff"))):
        frame = ((frame.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if frame.dtype == np.uint16 and frame.ndim == 3:
        _write_deep_png(path, frame)
        return
    im = Image.fromarray(frame)
    if mode in ("L", "LA", "La") and im.mode == "RGBA" and suffix != ".bmp":  # grey+alpha (BMP has no LA)
        im = im.convert("LA")
    if suffix in (".jpg", ".jpeg") and im.mode in ("RGBA", "LA"):
        im = im.convert("RGB" if im.mode == "RGBA" else "L")
    opts = dict(_SAVE_OPTIONS.get(suffix, {}))
    for k, v in (meta or {}).items():
        if k != "dpi" or suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
            opts[k] = v
    im.save(path, **opts)


def _write_deep_png(path: Path, frame: np.ndarray) -> None:
    import av

    h, w, c = frame.shape
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height = w, h
    cc.pix_fmt = "rgba64be" if c == 4 else "rgb48be"
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgba64le" if c == 4 else "rgb48le")
    data = b"".join(bytes(p) for p in [*cc.encode(vf), *cc.encode(None)])
    with open(path, "wb") as f:
        f.write(data)


def to_tensor(frames: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 HWC RGB list -> (N,3,H,W) float on device (pinned + non_blocking for CUDA)."""
    t = torch.from_numpy(np.stack(frames))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(frames: torch.Tensor) -> list[np.ndarray]:
    u8 = frames.clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(u8)


@dataclass
class VideoInfo:
    size: tuple[int, int]  # (w, h) of the first decoded frame
    rate: Fraction
    time_base: Fraction | None
    frames: int | None  # as the container declares (None: unknown)
    audio: str | None  # codec of the first audio stream
    matrix: list[int] | None  # display matrix (rotation/flip) to keep
    rotation: int = 0
    deep: bool = False  # more than 8 bits per channel
    gray: bool = False  # one channel (luma only)

    @property
    def image_format(self) -> tuple[str, str]:
        """(PyAV pixel format, ``FrameFormat``) its frames are decoded to for images: depth and grey kept."""
        if self.gray:
            return ("gray16le", "HWC:GRAY:uint16") if self.deep else ("gray", "HWC:GRAY:uint8")
        return ("rgb48le", "HWC:RGB:uint16") if self.deep else ("rgb24", "HWC:RGB:uint8")


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError, ValueError, RuntimeError, MemoryError, UnicodeDecodeError)


def probe_video(path: Path) -> VideoInfo:
    """Open a video, check it has a video stream and that its first frame decodes; nothing is written."""
    import av

    _check_file(path)
    try:
        c = av.open(str(path), metadata_errors="replace")
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except _av_errors() as e:
        raise InputError(f"{path} is not a video or image file FFmpeg can read, or it is corrupt ({_short(e)})") from None
    try:
        if not c.streams.video:
            what = "audio only" if c.streams.audio else "no streams it can use"
            raise InputError(f"{path} has no video stream ({what})")
        v = c.streams.video[0]
        if v.codec_context is None:
            raise InputError(f"{path}: truncated or corrupt video: its video codec is unknown to this FFmpeg")
        _check_pixels(path, v.codec_context.width or 1, v.codec_context.height or 1, "video")
        first = None
        try:
            for first in c.decode(v):
                break
        except _av_errors() as e:
            raise InputError(f"{path}: truncated or corrupt video: the first frame does not decode ({_short(e)})") from None
        if first is None:
            raise InputError(f"{path}: truncated or corrupt video: no frame decodes")
        _check_pixels(path, first.width, first.height, "video frame")
        rate = v.average_rate or v.guessed_rate or Fraction(30)
        if not (0 < float(rate) < 10_000):
            rate = Fraction(30)
        matrix, rot = _display_matrix(first)
        try:
            deep = max(c.bits for c in first.format.components) > 8
            gray = len(first.format.components) == 1 or first.format.name.startswith(("gray", "ya"))
        except (AttributeError, ValueError):
            deep = gray = False
        return VideoInfo(
            size=(first.width, first.height), rate=Fraction(rate), time_base=v.time_base,
            frames=v.frames or None, audio=_audio_codec(c),
            matrix=matrix, rotation=rot, deep=deep, gray=gray,
        )
    finally:
        c.close()


def _audio_codec(c) -> str | None:
    a = c.streams.audio[0] if c.streams.audio else None
    return a.codec_context.name if a is not None and a.codec_context is not None else None


def _display_matrix(frame) -> tuple[list[int] | None, int]:
    try:
        for sd in frame.side_data:
            if "DISPLAYMATRIX" in str(sd.type):
                m = list(struct.unpack("=9i", bytes(sd)[:36]))
                rot = int(round(getattr(frame, "rotation", 0) or 0))
                identity = m == [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]
                return (None, 0) if identity else (m, rot)
    except Exception:  # noqa: BLE001 - a broken side-data block is not worth failing for
        pass
    return None, 0


# --- the plan: everything checked before anything is written ------------------------------------------


@dataclass
class Plan:
    src: Path
    dst: Path
    kind: str  # input: "video" | "image" | "folder"
    out: str  # output: "video" | "image" | "folder"
    stills: list[Still] = field(default_factory=list)
    video: VideoInfo | None = None
    overwrite: bool = False
    replace: bool = False  # dst exists and will be replaced on success
    create: list[Path] = field(default_factory=list)  # missing parent folders, outermost first
    resize_to: tuple[int, int] | None = None  # (w, h): frames of other sizes are resized to this
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int | None:
        return self.video.frames if self.video is not None else len(self.stills)

    @property
    def in_size(self) -> tuple[int, int]:
        return self.video.size if self.video is not None else self.stills[0].size


def _output_kind(dst: Path, raw: str) -> str:
    if dst.is_dir() and not dst.is_symlink():
        return "folder"
    suf = dst.suffix.lower()
    if suf in VIDEO_EXTS:
        return "video"
    if suf in IMAGE_EXTS:
        return "image"
    if not suf or raw.endswith(("/", os.sep)):
        return "folder"
    raise OutputError(
        f"output {dst}: unknown file type {dst.suffix!r}; use a video ({' '.join(sorted(VIDEO_EXTS))}), "
        f"an image ({' '.join(sorted(IMAGE_EXTS))}) or a folder (end the name with /)"
    )


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def plan(src: str | Path, dst: str | Path, *, overwrite: bool = False) -> Plan:
    """Check input and destination; raise one ``InputError``/``OutputError`` line, or return what to do."""
    raw = str(dst)
    src, dst = Path(src), Path(os.path.abspath(dst))  # "." and ".." become names a temporary sibling can take
    if not dst.name:
        raise OutputError(f"output {raw}: cannot replace the root of a file system; choose a folder inside it")
    if not os.path.lexists(src):
        raise InputError(f"input not found: {src}")
    _check_name_lengths(dst)
    if src.is_dir():
        stills = [image_header(p) for p in list_frames(src)]
        p = Plan(src, dst, "folder", _output_kind(dst, raw), stills=stills, overwrite=overwrite)
    elif src.suffix.lower() in IMAGE_EXTS:
        p = Plan(src, dst, "image", _output_kind(dst, raw), stills=[image_header(src)], overwrite=overwrite)
    else:
        p = Plan(src, dst, "video", _output_kind(dst, raw), video=probe_video(src), overwrite=overwrite)
    _check_destination(p)
    _describe(p)
    return p


_TMP_EXTRA = 16  # what the temporary sibling adds to the output's name: ".NAME.PID.part"


def _check_name_lengths(dst: Path) -> None:
    """Each folder name fits the file system's limit, and the output's name leaves room for the temporary's."""
    base = dst
    while not os.path.isdir(base) and base != base.parent:  # (isdir: False for a name too long)
        base = base.parent
    try:
        limit = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    for part in dst.parts[1:]:
        room = limit - (_TMP_EXTRA if part == dst.name else 0)
        n = len(os.fsencode(part))
        if n > room:
            raise OutputError(f"output {part[:24]}...{part[-12:]}: the name is {n} bytes, the file system takes at "
                              f"most {room} here; choose a shorter name")


def _check_destination(p: Plan) -> None:
    src, dst = p.src.resolve(), p.dst.resolve()
    # 1. never the input
    if p.out != "folder":
        if p.kind != "folder" and (src == dst or (p.dst.exists() and os.path.samefile(p.src, p.dst))):
            link = " (through a link)" if p.src.absolute() != p.dst.absolute() else ""
            raise OutputError(f"output {p.dst} is the input file{link}; "
                              "choose another output name")
        if p.kind == "folder" and p.out == "image":
            raise OutputError(f"output {p.dst} is one image but the input folder has {len(p.stills)} frames; "
                              "give an output folder or a video file")
        if p.kind == "video" and p.out == "image":
            raise OutputError(f"output {p.dst} is one image but the input is a video; give an output folder or a video file")
    else:
        if p.kind == "folder" and (_inside(dst, src) or _inside(src, dst)):
            where = "is the input folder" if dst == src else "is inside the input folder" if _inside(dst, src) \
                else "contains the input folder"
            raise OutputError(f"output folder {p.dst} {where}; choose a folder outside {p.src}")
        if p.kind != "folder" and _inside(src, dst):
            raise OutputError(f"output folder {p.dst} contains the input {p.src}; choose another folder")
    # 2. what is already there
    if os.path.lexists(p.dst):
        if p.out == "folder" and not p.dst.is_dir():
            raise OutputError(f"output {p.dst} is a file, not a folder; remove it or choose another name")
        if p.out != "folder" and p.dst.is_dir():
            raise OutputError(f"output {p.dst} is a folder, not a file; choose a file name")
        if p.out == "folder":
            try:
                empty = not any(p.dst.iterdir())
            except PermissionError:
                raise OutputError(f"cannot write to {p.dst}: permission denied") from None
            if not empty and not p.overwrite:
                raise OutputError(f"output folder {p.dst} is not empty; pass --overwrite (-y) to replace it "
                                  "(the old folder is kept until the new one is complete)")
            p.replace = True
        else:
            if not p.overwrite:
                raise OutputError(f"output {p.dst} exists; pass --overwrite (-y) to replace it "
                                  "(the old file is kept until the new one is complete)")
            p.replace = True
    # 3. the folder it goes in: missing parents are created (and removed again on failure)
    parent = p.dst.absolute().parent
    missing: list[Path] = []
    while not parent.exists():
        if os.path.lexists(parent):
            raise OutputError(f"cannot create {p.dst}: {parent} is a broken link")
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {p.dst}: {parent} is a file, not a folder")
    # an existing output folder is written inside (see _Atomic); anything else beside it, in its parent
    _check_writable(p.dst if (p.out == "folder" and p.dst.is_dir()) else parent, p.dst)
    p.create = list(reversed(missing))
    if p.create:
        p.notes.append(f"creating folder {p.create[-1]}")


def _check_writable(folder: Path, dst: Path) -> None:
    try:
        st = os.statvfs(folder)
        if st.f_flag & os.ST_RDONLY:
            raise OutputError(f"cannot write {dst}: {folder} is on a read-only file system")
    except (AttributeError, OSError) as e:
        if isinstance(e, OutputError):
            raise
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {folder}: permission denied")


def _describe(p: Plan) -> None:
    """Notes on what the output keeps and what it changes."""
    if p.stills:
        sizes = {s.size for s in p.stills}
        if len(sizes) > 1:
            first = p.stills[0]
            other = next(s for s in p.stills if s.size != first.size)
            n_other = sum(s.size != first.size for s in p.stills)
            if p.out == "video":
                p.resize_to = first.size
                p.notes.append(
                    f"{n_other} of {len(p.stills)} frames differ in size from the first ({first.path.name} is "
                    f"{first.size[0]}x{first.size[1]}, {other.path.name} is {other.size[0]}x{other.size[1]}): they are "
                    f"resized to {first.size[0]}x{first.size[1]} for the video")
            else:
                p.notes.append(
                    f"the frames have {len(sizes)} sizes ({first.path.name} is {first.size[0]}x{first.size[1]}, "
                    f"{other.path.name} is {other.size[0]}x{other.size[1]}): each is upscaled at its own size")
        if p.out == "video":
            if any(s.deep for s in p.stills):
                p.notes.append("16-bit frames are written as 8-bit video")
            if any(s.alpha for s in p.stills):
                p.notes.append("alpha is dropped: the video has no alpha channel")
        else:
            if any(s.mode == "P" for s in p.stills):
                p.notes.append("palette images are written as RGB(A) (an upscale has more colours than a palette)")
            def suffix(s: Still) -> str:
                return (p.dst.suffix if p.out == "image" else s.path.suffix).lower()

            lose = sorted({suffix(s) for s in p.stills if s.deep and not (
                suffix(s) == ".png" or (suffix(s) in (".tif", ".tiff") and s.mode.startswith("I")))})
            if lose:
                p.notes.append(f"16-bit images are written with 8 bits as {', '.join(lose)} (use .png to keep 16)")
            if any(s.alpha and suffix(s) in (".jpg", ".jpeg") for s in p.stills):
                p.notes.append("alpha is dropped: JPEG has no alpha channel (use .png)")
    if p.video is not None:
        if p.video.deep and p.out == "video":
            p.notes.append("a video of more than 8 bits per channel is written as 8-bit H.264")
        if p.video.matrix is not None and p.out != "video":
            m = p.video.matrix
            turn = round(p.video.rotation / 90) % 4 * 90
            mirrored = m[0] * m[4] - m[1] * m[3] < 0
            if mirrored or turn != p.video.rotation % 360:
                p.notes.append(f"the input's display matrix ({p.video.rotation} degrees{', mirrored' if mirrored else ''})"
                               f" is applied only as a {turn} degree turn to the frames")
            elif turn:
                p.notes.append(f"the frames are turned {turn} degrees counterclockwise, as the video is displayed")
        if p.video.audio and p.out != "video":
            p.notes.append("the audio is not written: a folder of frames has no audio")


# --- atomic output -----------------------------------------------------------------------------------


class _Atomic:
    """A temporary output renamed into place by ``commit``; ``abort`` removes it.

    A file, or a folder that does not exist yet, is written as a hidden sibling (``.NAME.part.EXT``,
    ``.NAME.part``) and renamed over the destination. An existing folder (empty, or replaced with
    ``--overwrite``) keeps its own inode, owner and mode, and may be the working directory or a mount
    point: the new frames are written into a hidden folder inside it, and ``commit`` swaps the
    contents (old entries into a hidden trash folder, new ones in, trash removed) with a way back
    at every step.
    """

    def __init__(self, p: Plan):
        self.plan, self.dst = p, p.dst
        self.folder = p.out == "folder"
        self.inside = self.folder and p.dst.is_dir()
        pid = os.getpid()
        name = p.dst.name
        if self.inside:
            self.tmp = p.dst / f".live-upscale.part-{pid}"
        else:
            self.tmp = p.dst.with_name(f".{name}.part" if self.folder else f".{p.dst.stem}.part{p.dst.suffix}")
            if os.path.lexists(self.tmp):  # a leftover of a killed run, or another run at work: never share it
                self.tmp = p.dst.with_name(f".{name}.{pid}.part{'' if self.folder else p.dst.suffix}")
        self.created: list[Path] = []
        self.free: int | None = None  # bytes free on the destination's disk when writing began

    def __enter__(self) -> Path:
        try:
            for d in self.plan.create:
                d.mkdir()
                self.created.append(d)
            try:
                self.free = shutil.disk_usage(self.dst if self.inside else self.dst.parent).free
            except OSError:
                pass
            if self.folder:
                self.tmp.mkdir()
            else:
                self.tmp.touch(exist_ok=False)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise _as_output_error(e, self.dst) from None
            raise
        return self.tmp

    def __exit__(self, et, ev, tb) -> bool:
        if et is None:
            try:
                with _signals_held():  # a Ctrl-C now would only race the rename
                    self.commit()
            except BaseException as e:
                self.abort()
                if isinstance(e, OSError) and not isinstance(e, LiveUpscaleError):
                    raise _as_output_error(e, self.dst) from None
                raise
        else:
            self.abort()
        return False

    def _taken(self) -> bool:
        """Something not ours is at the destination (it was absent, or an empty folder, when we began)."""
        if not os.path.lexists(self.dst):
            return False
        if not (self.folder and self.dst.is_dir()):
            return True
        return any(e != self.tmp for e in self.dst.iterdir())

    def commit(self) -> None:
        if not self.plan.overwrite and self._taken():
            raise OutputError(f"output {self.dst} appeared while writing; pass --overwrite (-y) to replace it")
        if not self.folder:
            _fsync(self.tmp)
            os.replace(self.tmp, self.dst)
            return
        for f in self.tmp.iterdir():
            _fsync(f)
        if not self.inside:
            os.rename(self.tmp, self.dst)
            return
        trash = self.dst / f".live-upscale.old-{os.getpid()}"
        trash.mkdir()
        old: list[str] = []
        new: list[str] = []
        try:
            for e in list(self.dst.iterdir()):
                if e not in (self.tmp, trash):
                    os.rename(e, trash / e.name)
                    old.append(e.name)
            for e in list(self.tmp.iterdir()):
                os.rename(e, self.dst / e.name)
                new.append(e.name)
        except BaseException:
            for n in new:
                os.rename(self.dst / n, self.tmp / n)
            for n in old:
                os.rename(trash / n, self.dst / n)
            trash.rmdir()
            raise
        self.tmp.rmdir()
        shutil.rmtree(trash, ignore_errors=True)

    def abort(self) -> None:
        with _signals_held():
            try:
                if self.tmp.is_dir() and not self.tmp.is_symlink():
                    shutil.rmtree(self.tmp, ignore_errors=True)
                elif os.path.lexists(self.tmp):
                    self.tmp.unlink()
            except OSError:
                pass
            for d in reversed(self.created):
                try:
                    d.rmdir()
                except OSError:
                    pass


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise
    finally:
        os.close(fd)


class _signals_held:
    """Ctrl-C/SIGTERM wait while the temporary output is removed (main thread only)."""

    def __enter__(self):
        self.saved = []
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                try:
                    self.saved.append((s, signal.signal(s, signal.SIG_IGN)))
                except (ValueError, OSError):
                    pass
        return self

    def __exit__(self, *exc):
        for s, h in self.saved:
            signal.signal(s, h)
        return False


def _as_output_error(e: OSError, dst: Path, written: int | None = None, needed: int | None = None,
                     free: int | None = None) -> OutputError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        parts = []
        if needed:
            parts.append(f"it needs about {_mb(needed)}")
        if free is not None:
            parts.append(f"{_mb(free)} were free")
        if written:
            parts.append(f"{_mb(written)} were written before it filled")
        extra = f" ({', '.join(parts)})" if parts else ""
        what = "quota exceeded" if e.errno == errno.EDQUOT else "disk full"
        return OutputError(f"{what} writing {dst}{extra}; nothing was written")
    if e.errno in (errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write {dst}: permission denied")
    if e.errno == errno.EROFS:
        return OutputError(f"cannot write {dst}: read-only file system")
    return OutputError(f"cannot write {dst}: {e.strerror or _short(e)}")


def _size_of(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.iterdir())
        return path.stat().st_size
    except OSError:
        return 0


# --- running ------------------------------------------------------------------------------------------


@dataclass
class Job:
    """What ``run`` reports back."""

    frames_in: int = 0
    frames_out: int = 0
    fps: float | None = None
    out_size: tuple[int, int] | None = None
    audio: bool = False
    notes: list[str] = field(default_factory=list)


class _Batcher:
    """Feeds frames to the node in batches and hands results out in order, with their tags.

    ``push`` takes a host array and its ``FrameFormat`` string (None: uint8 RGB, the video fast path);
    the frame's alpha travels in the tag queue and is upscaled beside the frame in ``emit``.
    """

    def __init__(self, node, batch: int, emit: Callable[[np.ndarray, object], None], *,
                 resize_to: tuple[int, int] | None = None, rgb_u8: bool = False):
        self.node, self.batch, self.emit = node, max(1, batch), emit
        self.resize_to = (resize_to[1], resize_to[0]) if resize_to else None  # (h, w)
        self.rgb_u8 = rgb_u8  # hand uint8 RGB to emit (video), else the input's own format
        self.frames: list[torch.Tensor] = []
        self.tags: deque = deque()
        self.last_shape: tuple | None = None
        self.job = Job()

    def push(self, frame: np.ndarray, tag, fmt: str | None = None) -> None:
        from ..nodes import formats
        from ..ops.resample import resize

        if fmt is None:
            x, alpha = to_tensor([frame], self.node.device), None
        else:
            x, alpha, _ = formats.decode(frame, fmt, self.node.device)
        if self.resize_to is not None and tuple(x.shape[-2:]) != self.resize_to:
            x = resize(x, self.resize_to, "bicubic").clamp_(0.0, 1.0)
            alpha = None if alpha is None else resize(alpha, self.resize_to, "bilinear").clamp_(0.0, 1.0)
        if self.last_shape is not None and x.shape != self.last_shape:
            # a new size ends the old stream: collect a buffering engine's tail before the node resets
            self._run()
            self._emit(self.node.flush())
        self.last_shape = x.shape
        self.frames.append(x)
        self.tags.append((tag, fmt, alpha))
        self.job.frames_in += 1
        if len(self.frames) >= self.batch:
            self._run()

    def _run(self) -> None:
        if not self.frames:
            return
        x = self.frames[0] if len(self.frames) == 1 else torch.cat(self.frames)
        self.frames = []
        self._emit(self.node.process(x))

    def _emit(self, y: torch.Tensor | None) -> None:
        from ..nodes import formats

        if y is None or y.shape[0] == 0:
            return
        if self.rgb_u8:
            outs = [(f, self.tags.popleft()) for f in to_uint8(y)]
        else:
            outs = []
            for i in range(y.shape[0]):
                tag = self.tags.popleft()
                _, fmt, alpha = tag
                outs.append((formats.encode(y[i : i + 1], fmt or "HWC:RGB:uint8", alpha).cpu().numpy(), tag))
        for f, (tag, fmt, _alpha) in outs:
            self.job.out_size = (f.shape[1], f.shape[0])
            self.emit(f, (tag, fmt))
            self.job.frames_out += 1

    def finish(self) -> Job:
        self._run()
        self._emit(self.node.flush())
        return self.job


def run(
    node,
    src: str | Path | Plan,
    dst: str | Path | None = None,
    *,
    batch: int = 1,
    fps: float | None = None,
    crf: int = 16,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> Job:
    """Upscale ``src`` (video file, image or frame folder) into ``dst`` (video file, image or folder).

    ``src`` may be a ``plan(...)`` already made (the CLI checks files before it loads the backend).
    The destination appears complete, or not at all; raises ``InputError``/``OutputError``.
    """
    p = src if isinstance(src, Plan) else plan(src, dst, overwrite=overwrite)
    if batch < 1:
        raise InputError(f"batch must be at least 1, not {batch}")
    if p.out == "video":
        out_w, out_h = _video_size(node, p)
        _codec_for(p.dst, out_w, out_h)  # refuse a size the codec cannot take before anything is created
    atomic = _Atomic(p)
    with atomic as tmp:
        try:
            if p.out == "video":
                job = _to_video(node, p, tmp, batch, crf, progress, fps)
            else:
                job = _to_images(node, p, tmp, batch, progress)
        except OutputError:
            raise
        except OSError as e:  # reading errors are InputErrors by now: this one is the destination's
            if e.errno is None:
                raise OutputError(f"cannot write {p.dst}: {_short(e)}") from None
            written = _size_of(tmp)
            n = getattr(e, "_frames_out", 0)
            total = p.count
            needed = int(written / n * total) if (n and total and written) else None
            raise _as_output_error(e, p.dst, written, needed, atomic.free) from None
    return job


def _video_size(node, p: Plan) -> tuple[int, int]:
    w, h = p.resize_to or p.in_size
    oh, ow = node.output_size(h, w)
    return ow, oh


def _to_images(node, p: Plan, tmp: Path, batch: int, progress) -> Job:
    single = p.out == "image"
    stills = {s.path: s for s in p.stills}

    def save(frame: np.ndarray, tag) -> None:
        key, fmt = tag
        if single:
            path = tmp
        elif isinstance(key, Path):
            path = tmp / key.name
        else:
            path = tmp / f"{key:06d}.png"
        fmt = fmt or "HWC:RGB:uint8"
        st = stills.get(key) if isinstance(key, Path) else None
        write_image(path, frame, fmt, st.mode if st else None, st.meta if st else None)
        if progress:
            progress(1)

    b = _Batcher(node, batch, save)
    try:
        if p.kind == "video":
            pix, fmt = p.video.image_format
            turn = round(p.video.rotation / 90) % 4 if p.video.matrix is not None else 0
            for i, (frame, _pts) in enumerate(_decode_video(p.src, pix)):
                b.push(np.ascontiguousarray(np.rot90(frame, turn)) if turn else frame, i + 1, fmt)
        else:
            for s in p.stills:
                arr, fmt = read_image(s)
                b.push(arr, s.path, fmt)
        return b.finish()
    except OSError as e:
        if not isinstance(e, LiveUpscaleError):
            e._frames_out = b.job.frames_out  # type: ignore[attr-defined]
        raise


def _decode_video(path: Path, pix_fmt: str = "rgb24") -> Iterator[tuple[np.ndarray, int | None]]:
    import av

    with av.open(str(path), metadata_errors="replace") as c:
        v = c.streams.video[0]
        v.thread_type = "AUTO"
        n = 0
        try:
            for frame in c.decode(v):
                n += 1
                yield frame.to_ndarray(format=pix_fmt), frame.pts
        except av.FFmpegError as e:
            raise InputError(f"{path}: truncated or corrupt video after frame {n} ({_short(e)})") from None


def _codec_for(dst: Path, width: int, height: int) -> tuple[str, str]:
    """(codec, pixel format) for a video output of this size."""
    import av

    codec = "libvpx-vp9" if dst.suffix.lower() == ".webm" else "libx264"
    if codec not in av.codecs_available:
        codec = "mpeg4"
    side = {"libx264": 16384, "mpeg4": 8191, "libvpx-vp9": 65536}[codec]  # the encoders' largest side
    if max(width, height) > side:
        other = " use .webm (VP9 takes up to 65536 px)," if codec != "libvpx-vp9" else ""
        raise OutputError(f"{dst}: the output would be {width}x{height} and {codec} encodes at most {side} px a "
                          f"side;{other} write a folder of frames, or choose a smaller --scale")
    odd = width % 2 or height % 2
    if odd and codec == "mpeg4":
        raise OutputError(f"{codec} cannot encode odd sizes ({width}x{height}); write a folder or use an even --scale")
    return codec, "yuv444p" if odd else "yuv420p"


def _rate(fps: float) -> Fraction:
    """A frame rate as a fraction (NTSC's x/1001 exact); never 0, whatever the caller let through."""
    r = Fraction(fps).limit_denominator(1001)
    return r if r > 0 else Fraction(1, 1001)


def _to_video(node, p: Plan, tmp: Path, batch, crf, progress, fps_override) -> Job:
    import av

    vi = p.video
    src = p.src
    if vi is not None:
        rate = _rate(fps_override) if fps_override else vi.rate
        time_base = vi.time_base if (vi.time_base and not fps_override) else 1 / rate
    else:
        rate = _rate(fps_override) if fps_override else Fraction(30)
        time_base = 1 / rate
    out_w, out_h = _video_size(node, p)
    codec, pix_fmt = _codec_for(p.dst, out_w, out_h)
    notes: list[str] = []
    if pix_fmt == "yuv444p":
        notes.append(f"{out_w}x{out_h} is odd and 4:2:0 video needs even sizes: written as {pix_fmt} at the exact "
                     "size (some players, e.g. browsers, cannot play 4:4:4; a --scale that gives an even size gets yuv420p)")
    inp = av.open(str(src), metadata_errors="replace") if vi is not None else None
    out = None
    b: _Batcher | None = None
    try:
        vin = ain = None
        if inp is not None:
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            ain = inp.streams.audio[0] if vi.audio else None
        out = av.open(str(tmp), "w", format=_muxer(p.dst))
        vout = out.add_stream(codec, rate=rate)
        vout.width, vout.height, vout.pix_fmt = out_w, out_h, pix_fmt
        vout.time_base = time_base
        if codec == "libx264":
            vout.options = {"crf": str(crf), "preset": "medium"}
        elif codec == "libvpx-vp9":
            vout.options = {"crf": str(min(63, crf * 63 // 51)), "b": "0"}
        if vi is not None and vi.matrix is not None:
            if hasattr(vout, "set_display_matrix"):
                vout.set_display_matrix(vi.matrix)
            else:
                notes.append(f"the input's rotation ({vi.rotation} degrees) is not kept: this PyAV cannot write it")
        aout, a_transcode = _audio_stream(out, ain, p.dst)
        if a_transcode:
            notes.append(f"the audio ({vi.audio}) is re-encoded as {aout.codec_context.name.removeprefix('lib')}: "
                         f"{p.dst.suffix.lower()} cannot hold {vi.audio}")
        bad_audio = [0]
        last = {"pts": None, "fixed": 0}
        step = max(1, round(1 / (float(rate) * float(time_base))))  # one frame in time_base units

        def write(frame: np.ndarray, tag) -> None:
            pts, _fmt = tag
            if pts is None or (last["pts"] is not None and pts <= last["pts"]):  # missing or going back:
                pts = 0 if last["pts"] is None else last["pts"] + step  # one frame at the nominal rate later
                last["fixed"] += 1
            last["pts"] = pts
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = pts
            vf.time_base = time_base
            for pkt in vout.encode(vf):
                out.mux(pkt)
            if progress:
                progress(1)

        b = _Batcher(node, batch, write, resize_to=p.resize_to or p.in_size, rgb_u8=True)
        if inp is None:
            for i, s in enumerate(p.stills):
                arr, fmt = read_image(s)
                b.push(arr, i, fmt)
        else:
            streams = [s for s in (vin, ain) if s is not None]
            n = 0
            try:
                for packet in inp.demux(*streams):
                    if ain is not None and packet.stream is ain:
                        _audio_packet(out, packet, aout, a_transcode, bad_audio)
                        continue
                    for frame in packet.decode():
                        n += 1
                        pts = frame.pts if not fps_override else b.job.frames_in
                        b.push(frame.to_ndarray(format="rgb24"), pts)
            except av.FFmpegError as e:
                if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EIO):
                    raise
                raise InputError(f"{src}: truncated or corrupt video after frame {n} ({_short(e)})") from None
            if a_transcode is not None:
                for pkt in aout.encode(None):
                    out.mux(pkt)
            if vi.frames and n < vi.frames:
                notes.append(f"{src} lists {vi.frames} frames but only {n} decode (truncated?): wrote {n}")
        job = b.finish()
        for pkt in vout.encode(None):
            out.mux(pkt)
        out.close()
        out = None
        if job.frames_out == 0:
            raise InputError(f"{src}: no frame could be decoded")
        if last["fixed"] > 1:
            notes.append(f"{last['fixed']} frames had missing or out-of-order timestamps and were renumbered")
        if bad_audio[0]:
            notes.append(f"{bad_audio[0]} audio packets could not be copied (out of order or corrupt) and were dropped")
        job.fps = float(rate)
        job.audio = aout is not None
        job.notes = notes
        return job
    except OSError as e:
        if not isinstance(e, LiveUpscaleError) and b is not None:
            e._frames_out = b.job.frames_out  # type: ignore[attr-defined]
        raise
    except av.FFmpegError as e:
        raise LiveUpscaleError(f"cannot encode {p.dst}: {_short(e)}") from None
    finally:
        for c in (out, inp):
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001 - the error that brought us here matters, not this one
                    pass


def _muxer(dst: Path) -> str | None:
    """The muxer for the destination's extension (the temporary name keeps it, but say it outright)."""
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}.get(
        dst.suffix.lower())


def _audio_stream(out, ain, dst: Path):
    """Returns (output audio stream, transcode flag): remux when the container takes the codec."""
    if ain is None:
        return None, None
    name = ain.codec_context.name
    takes, codec = _AUDIO_FOR.get(dst.suffix.lower(), (None, None))
    if takes is not None and name not in takes:  # re-encoded to a codec the container takes
        rate = ain.codec_context.sample_rate or 48000
        aout = out.add_stream(codec, rate=48000 if codec == "libopus" else rate)  # Opus: 48 kHz (resampled)
        return aout, True
    return out.add_stream_from_template(ain), None


def _audio_packet(out, packet, aout, transcode, bad: list[int]) -> None:
    import av

    try:
        if transcode:
            for frame in packet.decode():
                frame.pts = None
                for pkt in aout.encode(frame):
                    out.mux(pkt)
            return
        if packet.dts is None:  # demuxer flush packet
            return
        packet.stream = aout
        out.mux(packet)
    except av.FFmpegError as e:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise
        bad[0] += 1  # a corrupt audio packet: dropped (and counted), the video goes on


# --- a generated test clip (demo and tests) ------------------------------------------------------------


def synth_frame(i: int, width: int, height: int) -> np.ndarray:
    """A moving test pattern with fine detail: text, circles, stripes and a gradient."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = i / 24.0
    r = 0.5 + 0.5 * np.sin(2 * np.pi * (xx / width + 0.15 * t))
    g = 0.5 + 0.5 * np.sin(2 * np.pi * (yy / height * 1.5 - 0.1 * t))
    bch = 0.5 + 0.5 * np.sin(2 * np.pi * ((xx + yy) / 9.0))  # fine diagonal stripes
    img = (np.stack([r, 0.6 * g + 0.2, 0.35 * bch + 0.3], -1) * 255).astype(np.uint8)
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    cx = (0.2 + 0.6 * (0.5 + 0.5 * math.sin(2 * math.pi * t * 0.5))) * width
    cy = height * 0.55
    rad = max(3, height // 6)
    d.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], outline=(255, 255, 255), width=2, fill=(30, 30, 160))
    for k in range(6):
        x0 = int((k * width / 6 + i * 2) % width)
        d.line([(x0, 0), (x0, height // 4)], fill=(0, 0, 0), width=1)
    d.text((4 + (i % 40), 4), f"live-upscale {i:03d}", fill=(255, 255, 0))
    return np.asarray(im)


def write_test_clip(path: str | Path, frames: int = 24, size: tuple[int, int] = (160, 96), fps: int = 24,
                    audio: bool = True, pts: list[int] | None = None, time_base: Fraction | None = None,
                    rotation: int = 0) -> Path:
    """Write a short H.264 clip (with a 440 Hz AAC tone when ``audio``).

    ``pts``/``time_base``: explicit frame timestamps (a variable frame rate); ``rotation``: display
    rotation in degrees stored as metadata (the pixels are not rotated).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p" if (w % 2 or h % 2) else "yuv420p"
        if time_base is not None:
            vs.time_base = time_base
        if rotation:
            vs.set_display_rotation(rotation)
        a_s = out.add_stream("aac", rate=48000) if audio else None
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(synth_frame(i, w, h), format="rgb24")
            vf.pts = pts[i] if pts is not None else i
            if time_base is not None:
                vf.time_base = time_base
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        if a_s is not None:
            sr, n = 48000, int(48000 * frames / fps)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)
            chunk = 1024
            for k in range(0, n, chunk):
                part = tone[k : k + chunk]
                af = av.AudioFrame.from_ndarray(part[None, :], format="fltp", layout="mono")
                af.sample_rate = sr
                af.pts = k
                for pkt in a_s.encode(af):
                    out.mux(pkt)
            for pkt in a_s.encode(None):
                out.mux(pkt)
    return path
