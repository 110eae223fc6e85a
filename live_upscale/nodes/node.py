"""The upscale node: host-free, holds one engine and its temporal state across cooks.

Two ways in:

- ``cook(frame)``: one host frame in, one host frame out, every call (what a TouchDesigner
  TOP or a per-frame host needs). While a buffering engine warms up, the input is resized
  and returned instead, so the host never waits.
- ``process(frames)`` / ``flush()``: exact streaming on internal tensors ``(N,3,H,W)``; a
  buffering engine may return fewer frames, ``flush()`` returns the rest (files, Scope).

The node re-creates its engine only when a load-time parameter changes, and resets the
engine's temporal state when the input size changes (or on ``reset()``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import torch

from .. import backends as _backends  # registers built-in backends
from ..backends.base import Engine, EngineConfig
from ..errors import InputError, LiveUpscaleError, one_line
from . import formats
from .params import UpscaleParams
from ..ops.resample import out_size, resize
from .temporal import SceneCutDetector, Stabilizer

log = logging.getLogger(__name__)

MAX_QUEUE = 64  # frames a buffering engine may run ahead of cook() before the oldest are dropped


def resolve_device(spec: str) -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise InputError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {spec!r} asked for, but torch sees no CUDA GPU (use device='auto' or 'cpu')")
    return dev


def is_oom(e: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator giving up."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(e, MemoryError)
    )


class _GpuTimer:
    """Milliseconds per frame without syncing: CUDA events are read only once they have completed."""

    def __init__(self) -> None:
        self.ms_per_frame: float | None = None
        self._pending: deque = deque()

    def _update(self, ms: float, n: int) -> None:
        per = ms / max(1, n)
        self.ms_per_frame = per if self.ms_per_frame is None else 0.9 * self.ms_per_frame + 0.1 * per

    def start(self, device: torch.device):
        if device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def stop(self, token, n: int) -> None:
        if isinstance(token, float):
            self._update((time.perf_counter() - token) * 1000.0, n)
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self._pending.append((token, end, n))
        while self._pending and self._pending[0][1].query():
            s, e, k = self._pending.popleft()
            self._update(s.elapsed_time(e), k)
        while len(self._pending) > 32:
            self._pending.popleft()


def frame_is_int(frame) -> bool:
    dt = getattr(frame, "dtype", None)
    return dt is not None and ("int" in str(dt) or "uint" in str(dt))


class UpscaleNode:
    """The operator every host wraps. See the module docstring."""

    def __init__(self, params: UpscaleParams | None = None, **overrides: Any):
        base = params.model_dump() if params is not None else {}
        self.params = UpscaleParams(**{**base, **overrides})
        self.device = resolve_device(self.params.device)
        self.engine: Engine | None = None
        self.backend_id: str | None = None
        self.backend_reason = ""
        self._load_key: tuple | None = None
        self._in_size: tuple[int, int] | None = None
        self._queue: deque[torch.Tensor] = deque()  # engine outputs not yet handed to cook()
        self._alpha: deque[torch.Tensor | None] = deque()  # input alphas, aligned with engine outputs
        self._alpha_hist: deque[torch.Tensor | None] = deque(maxlen=256)  # live engines: recent input alphas
        self._timer = _GpuTimer()
        self._stabilizer = Stabilizer(cut_threshold=self.params.scene_cut or 2.0)
        self._cuts = SceneCutDetector()
        self._upload = formats.PinnedUpload()  # CPU host frames -> GPU without a staged, blocking copy
        self.frames_in = 0
        self.frames_out = 0
        self.resets = 0
        self.last_error = ""
        self.notices: list[str] = []  # things the node changed by itself (e.g. tiling after OOM), newest last
        self._lock = threading.RLock()  # held while a frame is processed
        self._pending: dict[str, Any] = {}  # updates that arrived mid-frame, applied before the next one
        self._live = False  # inside cook(): engines with a live path (remote) take it
        # a host that calls process() per frame, live (Scope): engines with a live path take it there too
        self.live_host = False

    # --- parameters and engine lifetime ------------------------------------------------------------

    def update(self, **changes: Any) -> bool:
        """Apply parameter changes between frames. Returns True when the engine will be re-created.

        Safe to call from another thread while frames are processed: the changes are validated now and
        applied atomically before the next frame (never half-way through one).
        """
        if not changes:
            return False
        merged = {**self.params.model_dump(), **self._pending, **changes}
        new = UpscaleParams(**merged)  # validate now: a bad value raises in the caller's thread
        reload = new.load_key() != self.params.load_key()
        if self._lock.acquire(blocking=False):
            try:
                self._pending.update(changes)
                self._apply_pending()
            finally:
                self._lock.release()
        else:
            self._pending.update(changes)
        return reload

    def _apply_pending(self) -> None:
        if not self._pending:
            return
        changes, self._pending = self._pending, {}
        new = UpscaleParams(**{**self.params.model_dump(), **changes})
        reload = new.load_key() != self.params.load_key()
        if new.device != self.params.device:
            self.device = resolve_device(new.device)
        self.params = new
        self._stabilizer.cut_threshold = new.scene_cut or 2.0  # 0 = never cut (diffs are <= 1)
        if reload:
            self._drop_engine()
        elif self.engine is not None:
            self.engine.set_options(sharpen=new.sharpen, stabilize=new.stabilize, scene_cut=new.scene_cut)

    def load(self) -> Engine:
        """Create the engine now (hosts call this at load time so the first cook is not slow)."""
        if self.engine is None or self._load_key != self.params.load_key():
            self._drop_engine()
            p = self.params
            cls, why = _backends.choose(p.backend, self.device, p.model)
            cfg = EngineConfig(
                device=self.device,
                scale=p.scale,
                model=p.model,
                precision=p.precision,
                options={
                    **p.backend_options,
                    "quality": p.quality,
                    **({} if p.prescale == "auto" else {"prescale": p.prescale}),  # auto: the backend's default
                    "sharpen": p.sharpen,
                    "stabilize": p.stabilize,
                    "scene_cut": p.scene_cut,
                    "download": p.download,
                    "compile": p.compile,
                },
            )
            self.engine = cls.load(cfg)
            self.backend_id, self.backend_reason = cls.id, why
            self._load_key = p.load_key()
            log.info("live-upscale: using %s: %s", why, self.engine.describe())
        return self.engine

    def warmup(self, height: int, width: int, batch: int = 1) -> None:
        """Load the engine and run one batch of this size, so compilation and allocation happen now, not
        on the first live frame. Temporal state is reset afterwards."""
        x = torch.zeros((batch, 3, height, width), device=self.device)
        self.process(x)
        self.flush()
        self.reset()
        self.resets -= 1  # a warm-up is not a reset the host should see
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _drop_engine(self) -> None:
        if self.engine is not None:
            try:
                self.engine.close()
            finally:
                self.engine = None
                self._load_key = None
        self._clear_state()

    def _clear_state(self) -> None:
        self._stabilizer.reset()
        self._cuts.reset()
        self._queue.clear()
        self._alpha.clear()
        self._alpha_hist.clear()
        self._in_size = None

    def reset(self) -> None:
        """Drop all temporal state (engine history, queued frames). The engine stays loaded."""
        with self._lock:
            if self.engine is not None:
                self.engine.reset()
            self._clear_state()
            self.resets += 1

    def close(self) -> None:
        with self._lock:  # never under a frame another thread is processing
            self._drop_engine()

    # --- streaming on internal tensors ------------------------------------------------------------

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        return out_size(h, w, self.params.scale)

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` float in [0,1] -> upscaled ``(M,3,h,w)``; ``M < N`` while a temporal engine buffers.

        A new input size starts a new stream (state reset): call ``flush()`` before it to collect the
        old stream's buffered tail, as the CLI does.
        """
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[1] != 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise InputError(f"process() takes (N,3,H,W) float frames, got {shape}")
        if not frames.is_floating_point():
            raise InputError(f"process() takes float frames in [0,1], got {frames.dtype} (use cook() for host formats)")
        with self._lock:
            self._apply_pending()
            return self._process_locked(frames)

    def _process_locked(self, frames: torch.Tensor) -> torch.Tensor:
        engine = self.load()
        x = frames.to(self.device, torch.float32, non_blocking=True)
        if not x.is_contiguous() and not getattr(engine, "channels_last_ok", False):
            x = x.contiguous()  # CPU host frames decode channels-last; engines that may .view() get NCHW
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if size != self._in_size:
            if self._in_size is not None:
                log.info("live-upscale: input size %s -> %s, temporal state reset", self._in_size, size)
                self.reset()
            self._in_size = size
        token = self._timer.start(self.device)
        y = self._run_engine(engine, x)
        if engine.caps.remote:
            pass  # the far side's node stabilizes
        elif not engine.caps.temporal and self.params.stabilize > 0 and y.shape[0] == x.shape[0]:
            y = self._stabilizer(x, y, self.params.stabilize)
        elif self._stabilizer.prev_hr is not None:
            self._stabilizer.reset()  # turned off: the next time it starts from a fresh history
        self._timer.stop(token, x.shape[0])
        self.frames_in += x.shape[0]
        y = self._check_output(y, size)
        self.frames_out += y.shape[0]
        return y

    def _run_engine(self, engine: Engine, x: torch.Tensor) -> torch.Tensor:
        """Run the engine; on out-of-memory let it switch to a lighter path and retry (said once)."""
        for _ in range(8):
            try:
                if (self._live or self.live_host) and hasattr(engine, "process_live"):
                    return engine.process_live(x)  # a per-frame host: never wait (remote engines)
                if engine.caps.temporal and self.params.scene_cut > 0 and not engine.caps.remote:
                    return self._process_with_cuts(engine, x)
                return engine.process(x)
            except Exception as e:  # noqa: BLE001 - only OOM is handled here, the rest re-raised
                if not is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                lighter = engine.on_oom()
                if lighter is None:
                    raise LiveUpscaleError(
                        f"out of memory at {tuple(x.shape[-2:])} with {self.backend_id} and no lighter path left; "
                        "use a smaller scale or batch, or another backend"
                    ) from None
                note = f"out of memory at {tuple(x.shape[-2:])}: {self.backend_id} now uses {lighter}"
                log.warning("live-upscale: %s", note)
                self.notices.append(note)
        raise LiveUpscaleError("out of memory: retried 8 times")

    def _process_with_cuts(self, engine: Engine, x: torch.Tensor) -> torch.Tensor:
        """Temporal engines: at a hard cut, flush what belongs to the old scene, then reset."""
        cuts = self._cuts.cuts(x, self.params.scene_cut)
        if not cuts:
            return engine.process(x)
        outs = []
        edges = sorted({0, *cuts, x.shape[0]})
        for a, b in zip(edges[:-1], edges[1:]):
            if a in cuts:
                tail = engine.flush()
                if tail is not None and tail.shape[0]:
                    outs.append(tail)
                engine.reset()
                self.resets += 1
                log.info("live-upscale: scene cut, temporal state reset")
            outs.append(engine.process(x[a:b]))
        outs = [o for o in outs if o.shape[0]] or outs[-1:]
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def flush(self) -> torch.Tensor | None:
        """End of stream: whatever a buffering engine still holds (None if nothing)."""
        with self._lock:
            if self.engine is None:
                return None
            y = self.engine.flush()
            if y is None or y.shape[0] == 0:
                return None
            y = self._check_output(y, self._in_size or tuple(y.shape[-2:]))
            self.frames_out += y.shape[0]
            return y

    def _check_output(self, y: torch.Tensor, in_size: tuple[int, int]) -> torch.Tensor:
        want = self.output_size(*in_size)
        if y.shape[0] and tuple(y.shape[-2:]) != want:
            # a backend that rounds differently must not change the host's texture size
            y = resize(y.float(), want, "bicubic").clamp_(0.0, 1.0)
        return y

    # --- host frames ------------------------------------------------------------------------------

    def cook(
        self,
        frame,
        in_format: formats.FrameFormat | str | None = None,
        out_format: formats.FrameFormat | str | None = None,
        stream=None,
    ):
        """One host frame in, one upscaled host frame out (same format unless ``out_format`` is given).

        numpy in -> numpy out; tensors stay on the compute device. ``stream``: a ``torch.cuda.Stream`` or a
        raw CUDA stream handle (int) the host works on; all of the node's GPU work is queued on it.
        """
        with self._lock, self._on_stream(stream):
            rgb, alpha, fmt = formats.decode(frame, in_format, self.device, self._upload)
            out_fmt = formats.FrameFormat.parse(out_format) or fmt
            self._live = True
            try:
                ys = self.process(rgb)
            finally:
                self._live = False
            self._alpha.append(alpha)
            for i in range(ys.shape[0]):
                self._queue.append(ys[i : i + 1])
            while len(self._queue) > MAX_QUEUE:
                self._queue.popleft()
            while len(self._alpha) > len(self._queue) + MAX_QUEUE:
                self._alpha.popleft()
            if self._queue:
                y = self._queue.popleft()
                a = self._alpha.popleft() if self._alpha else alpha
                age = getattr(self.engine, "live_age", None)  # remote: the frame of `age` cooks ago came back
                if age is not None and ys.shape[0] == 1:
                    self._alpha_hist.append(alpha)
                    a = self._alpha_hist[-1 - age] if age < len(self._alpha_hist) else alpha
            else:  # a buffering engine is warming up: hand back the input, resized, so the host never waits
                y = resize(rgb, self.output_size(*rgb.shape[-2:]), "bicubic").clamp_(0.0, 1.0)
                a = alpha
            out = formats.encode(y, out_fmt, a)
        if isinstance(frame, np.ndarray):
            return out.cpu().numpy()
        return out

    def _on_stream(self, stream):
        if stream is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        if isinstance(stream, int):
            stream = torch.cuda.ExternalStream(stream, device=self.device)
        return torch.cuda.stream(stream)

    def cook_safe(
        self,
        frame,
        in_format: formats.FrameFormat | str | None = None,
        out_format: formats.FrameFormat | str | None = None,
        stream=None,
    ):
        """``cook`` for hosts: never raises. On any error the input comes back resized (a pass-through),
        ``last_error`` holds one line saying what went wrong, and the error is logged once."""
        try:
            out = self.cook(frame, in_format, out_format, stream)
            self.last_error = ""
            return out
        except Exception as e:  # noqa: BLE001 - a host's cook must never see an exception
            msg = one_line(e) if not isinstance(e, LiveUpscaleError) else str(e)
            if msg != self.last_error:
                log.error("live-upscale: %s (passing the input through)", msg)
            self.last_error = msg
            return self.passthrough(frame, in_format, out_format)

    def passthrough(self, frame, in_format=None, out_format=None):
        """The input resized to the node's output size, in the output format; the frame itself if unreadable."""
        try:
            rgb, alpha, fmt = formats.decode(frame, in_format)
        except Exception:  # noqa: BLE001
            try:  # salvage: first three channels (or gray) of whatever came in
                t = formats.as_tensor(frame)
                if t.device.type == "meta":
                    return frame
                t = t.float()
                t = t[0] if t.dim() == 4 else t
                t = t.unsqueeze(-1) if t.dim() == 2 else t
                hwc = t if t.shape[-1] <= 5 else t.permute(1, 2, 0)
                c = hwc.shape[-1]
                hwc = hwc[..., :3] if c >= 3 else hwc[..., :1].expand(*hwc.shape[:2], 3)
                if c >= 3 and frame_is_int(frame):
                    hwc = hwc / 255.0
                rgb, alpha = hwc.permute(2, 0, 1)[None].nan_to_num(0.0).clamp(0, 1).contiguous(), None
                fmt = formats.FrameFormat()
            except Exception:  # noqa: BLE001
                return frame
        try:
            out_fmt = formats.FrameFormat.parse(out_format) or fmt
            y = resize(rgb.float(), self.output_size(*rgb.shape[-2:]), "bilinear").clamp_(0.0, 1.0)
            out = formats.encode(y, out_fmt, alpha)
            return out.cpu().numpy() if isinstance(frame, np.ndarray) else out
        except Exception:  # noqa: BLE001
            return frame

    # --- status ----------------------------------------------------------------------------------

    @property
    def ms_per_frame(self) -> float | None:
        return self._timer.ms_per_frame

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend_id,
            "why": self.backend_reason,
            "engine": self.engine.describe() if self.engine is not None else None,
            "device": str(self.device),
            "scale": self.params.scale,
            "ms_per_frame": self.ms_per_frame,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "resets": self.resets,
            "last_error": self.last_error,
            "status": getattr(self.engine, "status", "") if self.engine is not None else "",
        }


__all__ = ["UpscaleNode", "UpscaleParams", "LiveUpscaleError", "resolve_device"]
