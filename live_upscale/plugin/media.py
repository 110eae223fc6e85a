"""Files in and out for the CLI: video through PyAV (frame rate and timestamps kept, audio
remuxed untouched), or folders of image frames (names and format kept).

Frames between here and the node are uint8 RGB ``(H,W,3)`` numpy arrays.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import InputError

VIDEO_EXTS = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# audio codecs an mp4/mov can carry as they are; anything else is re-encoded to AAC there
_MP4_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}


def is_video_path(p: str | Path) -> bool:
    return Path(p).suffix.lower() in VIDEO_EXTS


def list_frames(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise InputError(f"no image frames ({', '.join(sorted(IMAGE_EXTS))}) in folder {folder}")
    return files


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def write_image(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(frame).save(path)


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
class Job:
    """What ``run`` reports back."""

    frames_in: int = 0
    frames_out: int = 0
    fps: float | None = None
    out_size: tuple[int, int] | None = None
    audio: bool = False


Processor = Callable[[torch.Tensor], torch.Tensor | None]


class _Batcher:
    """Feeds frames to the node in batches and hands results out in order, with their tags."""

    def __init__(self, node, batch: int, emit: Callable[[np.ndarray, object], None]):
        self.node, self.batch, self.emit = node, max(1, batch), emit
        self.frames: list[np.ndarray] = []
        self.tags: deque = deque()
        self.last_shape: tuple | None = None
        self.job = Job()

    def push(self, frame: np.ndarray, tag) -> None:
        if self.last_shape is not None and frame.shape != self.last_shape:
            # a new size ends the old stream: collect a buffering engine's tail before the node resets
            self._run()
            self._emit(self.node.flush())
        self.last_shape = frame.shape
        self.frames.append(frame)
        self.tags.append(tag)
        self.job.frames_in += 1
        if len(self.frames) >= self.batch:
            self._run()

    def _run(self) -> None:
        if not self.frames:
            return
        y = self.node.process(to_tensor(self.frames, self.node.device))
        self.frames = []
        self._emit(y)

    def _emit(self, y: torch.Tensor | None) -> None:
        if y is None or y.shape[0] == 0:
            return
        for f in to_uint8(y):
            self.job.out_size = (f.shape[1], f.shape[0])
            self.emit(f, self.tags.popleft())
            self.job.frames_out += 1

    def finish(self) -> Job:
        self._run()
        self._emit(self.node.flush())
        return self.job


def iter_folder(folder: Path) -> Iterator[tuple[np.ndarray, Path]]:
    for p in list_frames(folder):
        yield read_image(p), p


def probe_count(src: Path) -> int | None:
    if src.is_dir():
        return len(list_frames(src))
    import av

    with av.open(str(src)) as c:
        n = c.streams.video[0].frames if c.streams.video else 0
        return n or None


def run(
    node,
    src: str | Path,
    dst: str | Path,
    *,
    batch: int = 1,
    fps: float | None = None,
    crf: int = 16,
    progress: Callable[[int], None] | None = None,
) -> Job:
    """Upscale ``src`` (video file or frame folder) into ``dst`` (video file or folder)."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"input not found: {src}")
    if src.is_dir():
        source: Iterator = iter_folder(src)
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(30)
    elif src.suffix.lower() in IMAGE_EXTS:
        source = iter([(read_image(src), src)])
        rate = Fraction(fps or 30)
    else:
        source, rate = None, None  # a video file
    if is_video_path(dst):
        return _to_video(node, src, source, rate, dst, batch, crf, progress, fps)
    dst.mkdir(parents=True, exist_ok=True)

    def save(frame: np.ndarray, tag) -> None:
        name = Path(tag).name if isinstance(tag, Path) else f"{tag:06d}.png"
        write_image(dst / name, frame)
        if progress:
            progress(1)

    b = _Batcher(node, batch, save)
    if source is None:  # video -> folder
        for i, (frame, _pts) in enumerate(_decode_video(src)):
            b.push(frame, i + 1)
    else:
        for frame, p in source:
            b.push(frame, p)
    job = b.finish()
    job.fps = float(rate) if rate else None
    return job


def _decode_video(path: Path) -> Iterator[tuple[np.ndarray, int | None]]:
    import av

    with av.open(str(path)) as c:
        if not c.streams.video:
            raise InputError(f"{path} has no video stream")
        for frame in c.decode(c.streams.video[0]):
            yield frame.to_ndarray(format="rgb24"), frame.pts


def _to_video(node, src, source, rate, dst, batch, crf, progress, fps_override) -> Job:
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    inp = None if source is not None else av.open(str(src))
    out = None
    try:
        vin = ain = None
        if inp is not None:
            if not inp.streams.video:
                raise InputError(f"{src} has no video stream")
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            rate = vin.average_rate or vin.guessed_rate or Fraction(30)
            if fps_override:
                rate = Fraction(fps_override).limit_denominator(1001)
            ain = inp.streams.audio[0] if inp.streams.audio else None
            in_w, in_h = vin.codec_context.width, vin.codec_context.height
        else:
            first, tag = next(source)
            source = _chain([(first, tag)], source)
            in_h, in_w = first.shape[:2]
        time_base = vin.time_base if (vin is not None and not fps_override and vin.time_base) else 1 / Fraction(rate)
        out_h, out_w = node.output_size(in_h, in_w)
        out = av.open(str(dst), "w")
        # every stream exists before the first packet is muxed (the header is written then)
        vout = _video_stream(out, out_w, out_h, rate, time_base, crf, dst)
        aout, a_transcode = _audio_stream(out, ain, dst)

        def write(frame: np.ndarray, pts) -> None:
            if frame.shape[:2] != (out_h, out_w):
                raise InputError(
                    f"frame size changed to {frame.shape[1]}x{frame.shape[0]} mid-stream; a video file has one size "
                    f"({out_w}x{out_h}): write to a folder instead"
                )
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = pts
            vf.time_base = time_base
            for pkt in vout.encode(vf):
                out.mux(pkt)
            if progress:
                progress(1)

        b = _Batcher(node, batch, write)
        if inp is None:
            for i, (frame, _p) in enumerate(source):
                b.push(frame, i)
        else:
            streams = [s for s in (vin, ain) if s is not None]
            for packet in inp.demux(*streams):
                if ain is not None and packet.stream is ain:
                    _audio_packet(out, packet, aout, a_transcode)
                    continue
                for frame in packet.decode():
                    pts = frame.pts if (frame.pts is not None and not fps_override) else b.job.frames_in
                    b.push(frame.to_ndarray(format="rgb24"), pts)
            if a_transcode is not None:
                for pkt in aout.encode(None):
                    out.mux(pkt)
        job = b.finish()
        for pkt in vout.encode(None):
            out.mux(pkt)
        job.fps = float(rate)
        job.audio = aout is not None
        return job
    finally:
        if out is not None:
            out.close()
        if inp is not None:
            inp.close()


def _chain(head, tail):
    yield from head
    yield from tail


def _video_stream(out, width: int, height: int, rate, time_base, crf: int, dst: Path):
    import av

    codec = "libvpx-vp9" if dst.suffix.lower() == ".webm" else "libx264"
    if codec not in av.codecs_available:
        codec = "mpeg4"
    s = out.add_stream(codec, rate=rate)
    s.width, s.height = width, height
    odd = width % 2 or height % 2
    s.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
    s.time_base = time_base
    if codec == "libx264":
        s.options = {"crf": str(crf), "preset": "medium"}
    if odd and codec != "libx264":
        raise InputError(f"{codec} cannot encode odd sizes ({width}x{height}); write a folder or use .mp4/.mkv")
    return s


def _audio_stream(out, ain, dst: Path):
    """Returns (output audio stream, transcode flag): remux when the container takes the codec."""
    if ain is None:
        return None, None
    name = ain.codec_context.name
    if dst.suffix.lower() in (".mp4", ".mov", ".m4v") and name not in _MP4_AUDIO:
        aout = out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
        return aout, True
    return out.add_stream_from_template(ain), None


def _audio_packet(out, packet, aout, transcode) -> None:
    if packet.dts is None:  # demuxer flush packet
        if transcode:
            for frame in packet.decode():
                _encode_audio(out, aout, frame)
        return
    if transcode:
        for frame in packet.decode():
            _encode_audio(out, aout, frame)
        return
    packet.stream = aout
    out.mux(packet)


def _encode_audio(out, aout, frame) -> None:
    frame.pts = None
    for pkt in aout.encode(frame):
        out.mux(pkt)


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
                    audio: bool = True) -> Path:
    """Write a short H.264 clip (with a 440 Hz AAC tone when ``audio``)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p" if (w % 2 or h % 2) else "yuv420p"
        a_s = out.add_stream("aac", rate=48000) if audio else None
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(synth_frame(i, w, h), format="rgb24")
            vf.pts = i
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
