"""What the Scope pipeline does, without importing Scope.

Scope's side of the contract (``src/scope/server/pipeline_manager.py`` and
``pipeline_processor.py``; checked at daydreamlive/scope 68b0f956):

- the pipeline class is constructed with the config's non-None field defaults merged with a
  *flat* dict of load params, and no device. That dict is shared by every pipeline in the chain
  (the main pipeline's resolution, its quantization, LoRAs, every processor's overrides), and
  runtime updates are broadcast to every pipeline too. So our fields carry an ``upscale_``
  prefix, and anything else that arrives is ignored.
- ``prepare(**params)`` is called every tick; Scope waits until ``input_size`` frames are queued,
  then (``PipelineProcessor.prepare_chunk``) keeps ``input_size`` of the queued frames, spread
  evenly, and DROPS the rest. With bursty input (a main pipeline emitting a chunk of frames at once)
  any ``input_size > 1`` throws frames away. ``input_size = 1`` takes the oldest queued frame and
  leaves the rest queued: nothing is lost. So we ask for one frame per call for *every* engine
  (chunked ones too: the engine buffers until it has a chunk) and hand the engine sub-batches of
  what a call brings. Scope's open PR #532 changes ``input_size = 1`` to "drain the queue, keep the
  newest frame"; the pipeline detects that behaviour (``pipeline.scope_drains_single_frame``) and
  then asks for every queued frame (at least 2), which that path takes without dropping any.
- ``__call__(video=[(1,H,W,3) uint8, ...], video_timestamps=[...], init_cache=bool, **params)``:
  ``init_cache`` is True on the first call and after a reset. Returning ``{}`` means "idle" and
  also keeps ``init_cache`` True for the next call, so we return ``{}`` only when there is no
  input at all.
- output ``{"video": (M,h,w,3) float in [0,1]}``; each frame is queued downstream on its own, so
  ``M`` may differ from the input count: a buffering engine returns fewer frames while it fills
  and the rest later (never duplicated, never padded). ``video_timestamps`` are handed back
  aligned with the frames returned.
- an exception would be logged by Scope's worker loop and the chunk lost; an out-of-memory error
  stops the processor. We catch everything: the frames come back resized (a pass-through at the
  output size, so the stream keeps its resolution) and the error is logged once.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ... import weights
from ...backends.realesrgan import DEFAULT_MODEL, NATIVE_DEFAULTS, estimated_vram_gb
from ...errors import one_line
from ...nodes import UpscaleNode, UpscaleParams

log = logging.getLogger("live_upscale.plugin.scope")

PIPELINE_ID = "live-upscale"

# Scope field -> node parameter. Load-time: passed to __init__ only (the UI locks them while
# streaming; changing one reloads the pipeline). Runtime: read from every __call__.
LOAD_PARAMS: dict[str, str] = {
    "upscale_backend": "backend",
    "upscale_model": "model",
    "upscale_scale": "scale",
    "upscale_precision": "precision",
    "upscale_prescale": "prescale",
    "upscale_quality": "quality",
    "upscale_compile": "compile",
}
RUNTIME_PARAMS: dict[str, str] = {
    "upscale_sharpen": "sharpen",
    "upscale_stabilize": "stabilize",
    "upscale_scene_cut": "scene_cut",
}
BATCH_PARAM = "upscale_batch"  # frames per call; 0 = automatic
MAX_BATCH = 16  # frames per engine call; a Scope call may bring more (they are split)
DRAIN_MIN_FRAMES = 2  # under PR #532's draining input_size=1, never ask for 1

DEFAULT_BACKEND = "realesrgan"
SCALES = (1.5, 2.0, 3.0, 4.0)
FALLBACK_BACKEND = "classic"  # no weights, any device: what we load when the chosen backend cannot

# Estimated GPU memory per backend at Scope's default stream (512x512 in, 2x out), in GB, for the
# postprocessor list and Scope's download dialog. Weights are counted from the parameter counts of
# the architectures (meta-device build); activations from the feature maps of the widest layer.
VRAM_GB: dict[str, float] = {
    # no weights; a 1024x1024 RGB fp32 frame is 12.6 MB, a few buffers alive
    "classic": 0.1,
    # counted on the default route's model at 512² in, 2x, batch 1, fp16 (the 4x default at full size, or
    # a native 2x model when cached, whichever is heavier), plus ~0.5 GB for the CUDA context and slack
    "realesrgan": round(0.5 + max(estimated_vram_gb(m, 2.0) for m in (DEFAULT_MODEL, *NATIVE_DEFAULTS[2])), 1),
    # the SDK's own buffers and models; NVIDIA publishes no figure: the same allowance as realesrgan
    "rtx_vsr": 1.0,
    # 1752 M params in bf16 = 3.5 GB (DiT 1419 M, LQ projection 288 M, TCDecoder 45 M) plus the
    # streaming KV cache and decoder: the backend refuses GPUs under 12 GiB for 512x512 -> 1024x1024
    "flashvsr": 12.0,
    # 681 M params in fp16 = 1.4 GB (UNet 472 M, ControlNet 207 M, TPM decoder 2 M) plus RAFT-large
    # and UNet/ControlNet activations at the 4x path's input size
    "stream_diffvsr": 6.0,
}


@dataclass(frozen=True)
class Tier:
    """One Scope pipeline: the general one, or one per weight-bearing backend (Scope downloads its weights)."""

    pipeline_id: str
    name: str  # what the postprocessor list shows
    backend: str | None  # None: the user picks (upscale_backend); else fixed
    hf_repo: str | None = None  # Scope's HuggingfaceRepoArtifact: downloaded to get_models_dir()/<repo name>
    files: tuple[str, ...] = ()
    extra_models: tuple[str, ...] = ()  # registered parts not on Hugging Face, fetched at load into the folder

    @property
    def models_subdir(self) -> str | None:
        return self.hf_repo.split("/")[-1] if self.hf_repo else None

    @property
    def vram_gb(self) -> float:
        return VRAM_GB.get(self.backend or DEFAULT_BACKEND, 1.0)


def _flashvsr_tier() -> Tier:
    parts = [m for m in weights.KNOWN_MODELS.values() if m.backend == "flashvsr"]
    hf = [m for m in parts if m.hf_repo]
    return Tier(
        "live-upscale-flashvsr",
        "Live Upscale · FlashVSR",
        "flashvsr",
        hf_repo=hf[0].hf_repo if hf else "JunhaoZhuang/FlashVSR-v1.1",
        files=tuple(m.hf_file or m.filename for m in hf),
        extra_models=tuple(m.name for m in parts if not m.hf_repo),
    )


def _stream_diffvsr_tier() -> Tier:
    info = weights.KNOWN_MODELS.get("stream-diffvsr")
    return Tier(
        "live-upscale-stream-diffvsr",
        "Live Upscale · Stream-DiffVSR",
        "stream_diffvsr",
        hf_repo=info.hf_repo if info else "Jamichsu/Stream-DiffVSR",
        files=("model_index.json", "unet", "controlnet", "vae", "scheduler", "text_encoder", "tokenizer"),
    )


MAIN_TIER = Tier(PIPELINE_ID, "Live Upscale (Real-ESRGAN, RTX VSR, classic)", None)
TIERS: dict[str, Tier] = {t.pipeline_id: t for t in (MAIN_TIER, _flashvsr_tier(), _stream_diffvsr_tier())}


def node_field(name: str):
    """The node's pydantic field (default, bounds, description), so the Scope UI follows the node."""
    return UpscaleParams.model_fields[name]


def field_bounds(name: str) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in node_field(name).metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return lo, hi


def scope_models_dir() -> Path | None:
    """Scope's models folder: ``scope.core.config.get_models_dir()`` inside Scope, else its env variable."""
    try:
        from scope.core.config import get_models_dir

        return Path(get_models_dir())
    except Exception:  # noqa: BLE001 - not inside Scope (or an older one): the documented variable
        env = os.environ.get("DAYDREAM_SCOPE_MODELS_DIR")
        return Path(env).expanduser() if env else None


def use_scope_models_dir() -> None:
    """Inside Scope, keep the weights we fetch ourselves in Scope's models folder unless the user chose a cache."""
    models = scope_models_dir()
    if models is not None and not os.environ.get("LIVE_UPSCALE_CACHE"):
        os.environ["LIVE_UPSCALE_CACHE"] = str(models / "live-upscale")


def tier_folder(tier: Tier) -> Path | None:
    """Where Scope's download flow puts the tier's artifact (``models/<repo name>``), if known."""
    models = scope_models_dir()
    return models / tier.models_subdir if models is not None and tier.models_subdir else None


def tier_model(tier: Tier, model: str | None) -> str | None:
    """The ``model`` string for a weight-bearing tier: Scope's downloaded folder, plus any settings.

    ``model`` may be a folder of its own (used as is), ``tiny``/``random:...`` test models, or
    settings only (``sparse_ratio=1.5,async=1``), which are appended to Scope's folder. The parts
    Hugging Face does not hold (FlashVSR's 4 MB prompt embedding) are fetched into the folder here.
    """
    text = (model or "").strip()
    head, _, rest = (p.strip() for p in text.partition(","))
    info = weights.lookup(head) if head and "=" not in head else None
    if info is not None and info.backend != tier.backend:
        # another tier's model in Scope's shared flat dict (e.g. Live Upscale's Real-ESRGAN name)
        text, head = rest, rest.partition(",")[0].strip()
    if head and "=" not in head:
        return text  # a folder, a registered name or a test model: the backend reads it
    folder = tier_folder(tier)
    if folder is None or not folder.is_dir():
        return text or None  # no Scope download yet: the backend's own registered weights (and message)
    for name in tier.extra_models:
        info = weights.lookup(name)
        if info is not None and not (folder / info.filename).is_file():
            src = weights.resolve(name, download=True)
            tmp = folder / (info.filename + ".part")
            tmp.write_bytes(Path(src).read_bytes())
            os.replace(tmp, folder / info.filename)
    return f"{folder},{text}" if text else str(folder)


class ScopeUpscaler:
    """The upscale node behind Scope's pipeline calls. Never raises from ``__call__``/``input_size``."""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        tier: Tier | str = MAIN_TIER,
    ):
        params = dict(params or {})
        self.tier = TIERS.get(tier, MAIN_TIER) if isinstance(tier, str) else tier
        use_scope_models_dir()
        self._load_values = self._read_load_values(params)  # as Scope sent them (normalised)
        node_kw: dict[str, Any] = {"download": True, **self._load_values}
        for key, field in RUNTIME_PARAMS.items():
            if params.get(key) is not None and field in UpscaleParams.model_fields:
                try:
                    node_kw[field] = _runtime_value(field, params[key])
                except (TypeError, ValueError):
                    log.warning("live-upscale: ignored %s=%r: not a number", key, params[key])
        node_kw = {k: v for k, v in node_kw.items() if v is not None}
        node_kw.setdefault("backend", DEFAULT_BACKEND)
        if device is not None:
            node_kw["device"] = str(device)
        self.requested = {k: node_kw[k] for k in ("backend", "model", "scale") if k in node_kw}
        self.batch = self._batch_value(params.get(BATCH_PARAM, 0))
        self.batch_cap = MAX_BATCH  # frames per engine call; lowered after an out-of-memory error
        self.drains_single = False  # set by the pipeline when Scope drains the queue for input_size=1
        self.load_error = ""
        self.node = self._load(node_kw)
        self._timestamps: deque = deque()  # input timestamps of frames the engine still holds
        self._in_size: tuple[int, int] | None = None
        self._seen_errors: set[str] = set()
        self.calls = 0
        self.frames_in = 0
        self.frames_out = 0
        self.pass_through = 0
        self.errors = 0
        self.last_error = ""
        self.reloads = 0  # load fields that arrived with the runtime parameters (graph mode)
        self.call_sizes: Counter = Counter()  # frames per call -> calls
        self._warm_up(params.get("height"), params.get("width"))

    def _read_load_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Our load fields from Scope's flat dict -> node keyword arguments (blank = the default)."""
        out: dict[str, Any] = {}
        for key, field in LOAD_PARAMS.items():
            value = params.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            # Scope's select widget sends the chosen option as a string ("2" for 2.0)
            v = str(value).strip() if field != "scale" else _number(value, default=None)
            if v is not None:
                out[field] = v
        if self.tier.backend is not None:  # a weight-bearing tier: its backend, Scope's downloaded folder
            out["backend"] = self.tier.backend
            out["model"] = out.get("model")
        return out

    # --- load time --------------------------------------------------------------------------------

    def _load(self, node_kw: dict[str, Any]) -> UpscaleNode:
        try:
            if self.tier.backend is not None:
                node_kw = {**node_kw, "model": tier_model(self.tier, node_kw.get("model"))}
                node_kw = {k: v for k, v in node_kw.items() if v is not None}
            node = UpscaleNode(**node_kw)
            node.live_host = True  # Scope's stream never waits on a remote engine (it takes the live path)
            node.load()
            return node
        except Exception as e:  # noqa: BLE001 - the stream still runs, on the fallback
            self.load_error = one_line(e)
            if node_kw.get("backend") == FALLBACK_BACKEND:
                raise
            log.error(
                "live-upscale: backend %r could not load (%s); using %r instead",
                node_kw.get("backend"),
                self.load_error,
                FALLBACK_BACKEND,
            )
        kw = {**node_kw, "backend": FALLBACK_BACKEND, "model": None}
        try:
            node = UpscaleNode(**kw)
        except Exception:  # noqa: BLE001 - e.g. an out-of-range value: drop what the node refused
            kw = {k: v for k, v in kw.items() if k in ("backend", "device", "download")}
            node = UpscaleNode(**kw)
        node.live_host = True
        node.load()  # classic needs nothing: if this fails Scope reports the load error
        node.last_error = self.load_error
        return node

    def _warm_up(self, height: Any, width: Any) -> None:
        """First CUDA call at the stream's size pays for kernel selection and allocation: pay it now."""
        if self.node.device.type != "cuda":
            return
        try:
            h, w = int(height or 512), int(width or 512)  # the main pipeline's output size
            with torch.no_grad():
                if hasattr(self.node, "warmup"):
                    self.node.warmup(h, w, batch=self.input_size())
                else:
                    self.node.process(torch.zeros(1, 3, h, w, device=self.node.device))
                    self.node.reset()
        except Exception as e:  # noqa: BLE001 - warm-up is best effort
            log.debug("live-upscale: warm-up skipped: %s", one_line(e))

    # --- per tick ---------------------------------------------------------------------------------

    @staticmethod
    def _batch_value(v: Any) -> int:
        try:
            return max(0, min(MAX_BATCH, int(float(v))))
        except (TypeError, ValueError):
            return 0

    def input_size(self, params: dict[str, Any] | None = None, queued: int | None = None) -> int:
        """Frames Scope should hand over per call (see the module docstring).

        One frame for every engine, chunked ones included (the engine buffers internally). Where
        Scope drains the queue for ``input_size = 1`` (PR #532) and the pipeline can see the queue
        (``queued``): every queued frame, at least ``DRAIN_MIN_FRAMES``. ``upscale_batch`` overrides both.
        """
        try:
            b = self._batch_value((params or {}).get(BATCH_PARAM, self.batch))
            if b:
                return max(1, b)
            if self.drains_single and queued is not None:
                return max(DRAIN_MIN_FRAMES, int(queued))
            return 1
        except Exception:  # noqa: BLE001 - never raise into Scope's tick
            return 1

    def _apply_runtime(self, params: dict[str, Any]) -> None:
        changes = {}
        for key, field in RUNTIME_PARAMS.items():
            if params.get(key) is None or field not in UpscaleParams.model_fields:
                continue
            try:
                v = _runtime_value(field, params[key])
            except (TypeError, ValueError):
                self._report(f"ignored {key}={params[key]!r}: not a number", recovering="keeping the previous value")
                continue
            if getattr(self.node.params, field) != v:
                changes[field] = v
        if changes:
            self.node.update(**changes)  # runtime knobs: applied on the next frame, no reload
        self._apply_load_fields(params)

    def _apply_load_fields(self, params: dict[str, Any]) -> None:
        """Load fields that arrive with the runtime parameters and differ from what we loaded.

        Scope's graph mode hands a node card's values to the pipeline at run time, not at load: apply
        them by re-creating the engine (on the next frame), and say so once.
        """
        if not any(k in params for k in LOAD_PARAMS):
            return
        present = {field for key, field in LOAD_PARAMS.items() if params.get(key) is not None}
        new = self._read_load_values(params)
        changes = {k: v for k, v in new.items() if k in present and self._load_values.get(k) != v}
        if not changes:
            return
        self._load_values.update(changes)
        if self.tier.backend is not None and "model" in changes:
            changes["model"] = tier_model(self.tier, changes["model"])
        if self.node.update(**changes):
            self._timestamps.clear()  # the engine is re-created: what it buffered is gone
        self.reloads += 1
        self.requested.update({k: v for k, v in changes.items() if k in ("backend", "model", "scale")})
        log.warning("live-upscale: load fields changed while streaming (%s): the engine is re-created",
                    ", ".join(f"{k}={v}" for k, v in changes.items()))

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        frames, stamps = _frame_list(kwargs.get("video"), kwargs.get("video_timestamps"))
        if not frames:
            return {}  # nothing to do: Scope treats {} as idle
        self.calls += 1
        self.frames_in += len(frames)
        self.call_sizes[len(frames)] += 1
        try:
            self._apply_runtime(kwargs)
            if kwargs.get("init_cache"):
                self.reset()
        except Exception as e:  # noqa: BLE001 - keep streaming with the previous state
            self._report(f"parameter update or reset failed: {one_line(e)}", recovering="keeping the previous values")
        try:
            x = self._to_batch(frames)
        except Exception as e:  # noqa: BLE001 - frames we cannot read: skip this chunk
            self._report(f"input frames unreadable: {one_line(e)}", recovering="skipping them")
            return {}
        try:
            size = (int(x.shape[-2]), int(x.shape[-1]))
            if size != self._in_size:
                self._timestamps.clear()  # the node resets its temporal state on a size change too
                self._in_size = size
            self._timestamps.extend(stamps)
            with torch.no_grad():
                step = max(1, self.batch_cap)
                parts = [self.node.process(x[i : i + step]) for i in range(0, int(x.shape[0]), step)]
                parts = [p for p in parts if p.shape[0]] or parts[-1:]
                y = parts[0] if len(parts) == 1 else torch.cat(parts)
            out = y.clamp(0.0, 1.0).permute(0, 2, 3, 1)
            n = int(out.shape[0])
            ts = [self._timestamps.popleft() if self._timestamps else None for _ in range(n)]
            self.frames_out += n
            return {"video": out, "video_timestamps": ts}
        except Exception as e:  # noqa: BLE001 - nothing may escape into Scope's processor thread
            return self._pass_through(x, stamps, e)

    def reset(self) -> None:
        self.node.reset()
        self._timestamps.clear()
        self._in_size = None

    # --- frames -----------------------------------------------------------------------------------

    def _to_batch(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """``[(H,W,C), ...]`` -> ``(N,3,H,W)`` float in [0,1] on the node's device.

        Frames of another size than the first are resized to it (Scope's own convention in
        ``normalize_frame_sizes``), so a resolution switch inside a batch never fails.
        """
        dev = self.node.device
        h, w = int(frames[0].shape[0]), int(frames[0].shape[1])
        if all(tuple(f.shape) == tuple(frames[0].shape) for f in frames):
            x = torch.stack(frames).to(dev, non_blocking=True)  # uint8 crosses the bus, not float
            return _to_unit_nchw(x)
        parts = []
        for f in frames:
            x = _to_unit_nchw(f[None].to(dev, non_blocking=True))
            if tuple(x.shape[-2:]) != (h, w):
                x = _resize(x, (h, w))
            parts.append(x)
        return torch.cat(parts)

    def _pass_through(self, x: torch.Tensor, stamps: list, err: BaseException) -> dict[str, Any]:
        """The chunk's frames resized to the output size: the stream keeps going, at its resolution."""
        if _is_oom(err):  # fewer frames per call from now on; the node already tried lighter paths
            self.batch_cap = max(1, min(self.batch_cap, int(x.shape[0])) // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self._report(one_line(err), exc=err)
        try:
            self.reset()  # an engine that failed half-way holds no trustworthy history
            with torch.no_grad():
                h, w = self.node.output_size(int(x.shape[-2]), int(x.shape[-1]))
                y = _resize(x, (h, w)).clamp_(0.0, 1.0).permute(0, 2, 3, 1)
            self.pass_through += int(y.shape[0])
            self.frames_out += int(y.shape[0])
            return {"video": y, "video_timestamps": list(stamps)}
        except Exception as e2:  # noqa: BLE001 - frames we cannot resize: skip the chunk
            self._report(f"pass-through failed: {one_line(e2)}", recovering="skipping the chunk")
            return {}

    def _report(self, msg: str, exc: BaseException | None = None, recovering: str = "passing frames through resized") -> None:
        self.errors += 1
        self.last_error = msg
        self.node.last_error = msg
        if msg in self._seen_errors:
            log.debug("live-upscale: %s (again)", msg)
            return
        if len(self._seen_errors) < 100:
            self._seen_errors.add(msg)
        quiet = exc is None or isinstance(exc, ValueError) or _is_oom(exc)
        log.error("live-upscale: %s; %s (logged once)", msg, recovering, exc_info=None if quiet else exc)

    # --- status -----------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            **self.node.info(),
            "requested": self.requested,
            "load_error": self.load_error,
            "pipeline_id": self.tier.pipeline_id,
            "input_size": self.input_size(),
            "scope_drains_single_frame": self.drains_single,
            "engine_batch": self.batch_cap,
            "runtime_reloads": self.reloads,
            "frames_per_call": dict(self.call_sizes),
            "calls": self.calls,
            "plugin_frames_in": self.frames_in,
            "plugin_frames_out": self.frames_out,
            "pass_through_frames": self.pass_through,
            "errors": self.errors,
            "plugin_last_error": self.last_error,
        }

    def close(self) -> None:
        try:
            self.node.close()
        finally:
            self._timestamps.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _number(v: Any, default: float | None = None) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _runtime_value(field: str, raw: Any) -> float:
    """A runtime knob as a float clamped to the node's bounds (sliders and modulation may overshoot)."""
    v = float(raw)
    if math.isnan(v):
        raise ValueError("NaN")
    lo, hi = field_bounds(field)
    v = max(lo, v) if lo is not None else v
    return min(hi, v) if hi is not None else v


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()


def _frame_list(video: Any, stamps: Any) -> tuple[list[torch.Tensor], list]:
    """Scope's ``video`` (a list of ``(1,H,W,C)``; a ``(T,H,W,C)`` tensor is accepted too) -> ``[(H,W,C)]``.

    Timestamps are padded with ``None`` (Scope reads that as "no timestamp") to one per frame.
    """
    if video is None:
        return [], []
    items = list(video.unbind(0)) if isinstance(video, torch.Tensor) and video.dim() == 4 else video
    if isinstance(items, torch.Tensor):
        items = [items]
    stamps = list(stamps) if isinstance(stamps, (list, tuple)) else []
    frames: list[torch.Tensor] = []
    out_stamps: list = []
    for i, item in enumerate(items):
        t = item if isinstance(item, torch.Tensor) else torch.as_tensor(np.asarray(item))
        ts = stamps[i] if i < len(stamps) else None
        if t.dim() == 4:  # (1,H,W,C); a stray (T,H,W,C) item gives T frames
            subs = list(t.unbind(0))
        elif t.dim() == 3:
            subs = [t]
        elif t.dim() == 2:
            subs = [t[..., None]]
        else:
            continue
        for s in subs:
            if s.shape[0] == 0 or s.shape[1] == 0:
                continue
            frames.append(s)
            out_stamps.append(ts)
    return frames, out_stamps


def _to_unit_nchw(x: torch.Tensor) -> torch.Tensor:
    """``(N,H,W,C)`` uint8 or float -> ``(N,3,H,W)`` float32 in [0,1] (alpha dropped, gray expanded)."""
    c = x.shape[-1]
    if c == 4:
        x = x[..., :3]
    elif c == 1:
        x = x.expand(*x.shape[:-1], 3)
    elif c != 3:
        raise ValueError(f"frames have {c} channels; expected RGB (3), RGBA (4) or gray (1)")
    x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float().clamp(0.0, 1.0)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
