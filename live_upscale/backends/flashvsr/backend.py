"""``flashvsr``: FlashVSR v1.1 (one-step diffusion VSR on a Wan2.1-1.3B DiT), streaming.

``model`` selects the weights, optionally followed by comma-separated settings:

- ``None`` / ``"FlashVSR-v1.1"``: the registered official files (weights manager cache);
- a folder holding the official files (``diffusion_pytorch_model_streaming_dmd.safetensors``,
  ``LQ_proj_in.ckpt``, ``TCDecoder.ckpt``, ``posi_prompt.pth``);
- ``"tiny"``: a tiny random-weight model of the same structure (tests, CI, CPU; not an upscaler);

settings: ``attention=auto|flex|sdpa|dense``, ``sparse_ratio=2.0`` (1.5 faster), ``local_range=11``
(9 sharper), ``color_fix=adain|wavelet|none`` (adain: official v1.1), ``seed=0``,
``rebase_every=512``, ``decoder_pass=2``, ``resize=bicubic|pil`` (pil: the official Pillow
preparation on uint8), ``fit=pad|crop`` (crop: the official centre crop to 128-pixel multiples;
the node then resizes that crop to the output size), ``noise_file=FILE`` (given noise: a
safetensors file with ``noise`` ``(1, 16, T, h, w)`` for the clip, parity checks),
``config=NAME|FILE.json``, ``allow_cpu=1`` (run a real checkpoint on CPU, slowly; also
``LIVE_UPSCALE_FLASHVSR_CPU=1``), ``async=1`` (compute on a worker thread / CUDA stream:
``process`` never waits for the model), ``compile=1`` (``torch.compile`` the DiT blocks); e.g.
``--model "FlashVSR-v1.1,sparse_ratio=1.5"``. The same names are also read from
``EngineConfig.options`` (prefixed ``flashvsr_`` or not). ``quality=fast`` means
``sparse_ratio=1.5`` unless given. A weights folder holding a ``config.json`` in the parity-fixture
format (``config.from_json``) is loaded with that config.

Needs a CUDA GPU for the real model (bf16; fp32 with ``precision=fp32``); the tiny model runs
anywhere. First output after 25 frames, then 8 frames per DiT call; ``flush()`` emits the rest.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ... import weights
from ...errors import BackendUnavailable, InputError
from ..base import Backend, Capabilities, Engine, EngineConfig, Probe, cuda_reason
from ..registry import register
from . import attention as A
from . import loader
from .config import CONFIGS, TINY, WAN_1_3B, FlashVSRConfig, from_json
from .model import FlashVSRModel, random_model
from .stream import FlashVSRStream, StreamOptions
from .worker import AsyncStream

log = logging.getLogger(__name__)

DEFAULT_MODEL = loader.MODEL_NAME
TINY_NAMES = ("tiny", "flashvsr-tiny", "test")
CPU_ENV = "LIVE_UPSCALE_FLASHVSR_CPU"
MIN_GPU_GIB = 12  # 512^2 -> 1024^2 in bf16 needs roughly this much; below it the backend says no
SETTINGS = {
    "attention": str,
    "sparse_ratio": float,
    "local_range": int,
    "color_fix": str,
    "seed": int,
    "rebase_every": int,
    "decoder_pass": int,
    "config": str,
    "resize": str,
    "fit": str,
    "noise_file": str,
    "allow_cpu": lambda v: str(v).strip().lower() in ("1", "true", "yes", "on"),
    "async": lambda v: str(v).strip().lower() in ("1", "true", "yes", "on"),
    "compile": lambda v: str(v).strip().lower() in ("1", "true", "yes", "on"),
}
ALIASES = {"colour_fix": "color_fix", "attn": "attention", "decoder_latents_per_pass": "decoder_pass"}


@dataclass
class Spec:
    source: str = "registered"  # registered | folder | tiny
    folder: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> FlashVSRConfig:
        name = self.settings.get("config")
        if name is None and self.folder is not None and (self.folder / "config.json").is_file():
            name = str(self.folder / "config.json")
        name = str(name or ("tiny" if self.source == "tiny" else "full"))
        if name.lower().endswith(".json"):
            try:
                return from_json(Path(name).expanduser())
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise InputError(f"flashvsr: config {name}: {e}") from None
        if name.lower() not in CONFIGS:
            raise InputError(f"flashvsr: unknown config {name!r}; known: {', '.join(CONFIGS)} or a config.json")
        return CONFIGS[name.lower()]

    def describe(self) -> str:
        if self.source == "folder":
            return str(self.folder)
        return "tiny random-weight test model" if self.source == "tiny" else DEFAULT_MODEL


def _coerce(key: str, value: Any) -> Any:
    key = ALIASES.get(key, key)
    if key not in SETTINGS:
        raise InputError(f"flashvsr: unknown setting {key!r}; known: {', '.join(SETTINGS)}")
    try:
        return key, SETTINGS[key](value)
    except (TypeError, ValueError):
        raise InputError(f"flashvsr: setting {key}={value!r} is not a valid value") from None


def parse_spec(model: str | None, options: dict[str, Any] | None = None) -> Spec:
    """``model`` string (+ ``options``) -> what to load and how to stream. Raises InputError."""
    spec = Spec()
    head, *rest = [s.strip() for s in (model or "").split(",")] if model else [""]
    if head.lower() in TINY_NAMES:
        spec.source = "tiny"
    elif head and head.lower() not in (DEFAULT_MODEL.lower(), "flashvsr", "default"):
        info = weights.lookup(head)
        if info is not None and info.backend == "flashvsr":
            pass  # one of our registered parts: the whole registered set
        elif Path(head).expanduser().is_dir():
            spec.source, spec.folder = "folder", Path(head).expanduser()
        elif info is not None:
            raise InputError(f"flashvsr: '{head}' is a {info.backend} model, not FlashVSR")
        else:
            raise InputError(
                f"flashvsr: model {head!r} is neither '{DEFAULT_MODEL}', 'tiny', nor a folder with the official files"
            )
    for item in rest:
        if not item:
            continue
        if "=" not in item:
            raise InputError(f"flashvsr: setting {item!r} needs a value (key=value)")
        k, v = (s.strip() for s in item.split("=", 1))
        k, v = _coerce(k.lower(), v)
        spec.settings[k] = v
    for k, v in (options or {}).items():
        k = k.lower().removeprefix("flashvsr_")
        if ALIASES.get(k, k) in SETTINGS and ALIASES.get(k, k) not in spec.settings:
            k, v = _coerce(k, v)
            spec.settings[k] = v
    if str(spec.settings.get("config", "")).lower() == "tiny":
        spec.source = "tiny" if spec.source == "registered" else spec.source
    try:
        stream_options(spec, 2.0, None).validate()
        spec.config  # noqa: B018 - validates the config name
    except ValueError as e:
        raise InputError(f"flashvsr: {e}") from None
    return spec


def stream_options(spec: Spec, scale: float, quality: str | None) -> StreamOptions:
    s = spec.settings
    ratio = s.get("sparse_ratio")
    if ratio is None and quality == "fast":
        ratio = 1.5
    return StreamOptions(
        scale=float(scale),
        attention=s.get("attention", "auto"),
        sparse_ratio=ratio,
        local_range=s.get("local_range"),
        color_fix=s.get("color_fix", "adain"),
        seed=s.get("seed", 0),
        rebase_every=s.get("rebase_every", 512),
        decoder_latents_per_pass=s.get("decoder_pass", 2),
        resize=s.get("resize", "bicubic"),
        fit=s.get("fit", "pad"),
    )


def read_noise(path: str | Path) -> torch.Tensor:
    """A given-noise file: safetensors with ``noise`` ``(1, 16, T, h, w)`` (or its only tensor)."""
    sd = loader.read_tensors(Path(path).expanduser())
    t = sd.get("noise", next(iter(sd.values())) if len(sd) == 1 else None)
    if not torch.is_tensor(t) or t.dim() != 5:
        raise InputError(f"flashvsr: {path}: expected a tensor 'noise' of shape (1, 16, T, h, w)")
    return t.float()


def _cpu_allowed(spec: "Spec") -> bool:
    return bool(spec.settings.get("allow_cpu")) or os.environ.get(CPU_ENV, "").strip().lower() in ("1", "true", "yes")


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    if device.type != "cuda" or precision == "fp32":
        return torch.float32
    return torch.bfloat16  # fp16 is not offered: the Wan DiT overflows in it


class FlashVSREngine(Engine):
    def __init__(self, config: EngineConfig, model: FlashVSRModel, spec: Spec):
        super().__init__(config)
        self.spec = spec
        self.model = model
        opts = stream_options(spec, config.scale, config.options.get("quality"))
        if spec.settings.get("noise_file"):
            opts.noise = read_noise(spec.settings["noise_file"])
        self.stream = FlashVSRStream(model, opts)
        if spec.settings.get("compile"):
            model.dit.compile_blocks()
        self.runner = AsyncStream(self.stream) if spec.settings.get("async") else None
        cfg = model.cfg
        self.caps = Capabilities(
            min_scale=1.0,
            max_scale=8.0,
            native_scale=4.0,
            temporal=True,
            delay=cfg.first_frames_in - 1,
            chunk=cfg.step_frames,
            needs_weights=spec.source != "tiny",
            devices=("cpu", "cuda") if spec.source == "tiny" or config.device.type == "cpu" else ("cuda",),
            dtypes=(self.stream.dtype,),
            notes=(
                f"first output after {cfg.first_frames_in} frames, then {cfg.step_frames} per call; "
                f"{self.stream.mode} attention"
            ),
        )

    @torch.inference_mode()
    def process(self, frames: torch.Tensor) -> torch.Tensor:
        return self.runner.push(frames) if self.runner else self.stream.push(frames)

    @torch.inference_mode()
    def flush(self) -> torch.Tensor | None:
        return self.runner.finish() if self.runner else self.stream.finish()

    def reset(self) -> None:
        if self.runner:
            self.runner.reset()
        else:
            self.stream.reset()

    def set_noise(self, noise: torch.Tensor | None) -> None:
        """Given noise from the next stream start on: ``(1, 16, T, h, w)`` for the clip (sliced
        latent frame by latent frame), a callable ``(first_latent, shape) -> noise``, or None
        (the seeded generator). Applies to the stream as it is now when nothing has run yet."""
        self.stream.opts.noise = noise

    def set_options(self, **options: Any) -> None:
        """Runtime knobs: ``color_fix``, ``sparse_ratio``, ``local_range`` (others ignored)."""
        s = self.stream
        if options.get("color_fix") in ("wavelet", "adain", "none"):
            s.opts.color_fix = options["color_fix"]
        if options.get("sparse_ratio") is not None:
            s.sparse_ratio = float(options["sparse_ratio"])
        if options.get("local_range") is not None:
            s.local_range = int(options["local_range"])

    def on_oom(self) -> str | None:
        """Lighter paths, in order: decode one latent frame (4 output frames) per pass."""
        s = self.stream
        if s is not None and s.opts.decoder_latents_per_pass > 1:
            s.opts.decoder_latents_per_pass = 1
            return "decoder: one latent frame per pass"
        return None

    def describe(self) -> str:
        s = self.stream
        what = "FlashVSR v1.1" if self.spec.source != "tiny" else "FlashVSR (tiny test model)"
        return (
            f"{what} from {self.spec.describe()} ({s.mode} attention, sparse_ratio {s.sparse_ratio:g}, "
            f"local {s.local_range}, colour fix {s.opts.color_fix}, {str(s.dtype).removeprefix('torch.')}"
            f"{', async worker' if self.runner else ''})"
        )

    def close(self) -> None:
        if self.runner:
            self.runner.close()
            self.runner = None
        self.stream = None
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _gpu_memory_reason(device: torch.device) -> str | None:
    try:
        total = torch.cuda.get_device_properties(device.index or 0).total_memory / 2**30
    except Exception:  # noqa: BLE001
        return None
    if total < MIN_GPU_GIB:
        return f"needs a GPU with >= {MIN_GPU_GIB} GiB (this one has {total:.0f} GiB)"
    return None


@register
class FlashVSRBackend(Backend):
    id = "flashvsr"
    label = "FlashVSR v1.1 (one-step diffusion VSR)"
    description = "Streaming one-step diffusion video SR (Wan2.1-1.3B DiT, sparse attention); CUDA, ~1.4B params."
    priority = 15
    needs_weights = True

    @classmethod
    def probe(cls, device: torch.device, model: str | None = None) -> Probe:
        try:
            spec = parse_spec(model)
        except InputError as e:
            return Probe(False, str(e).removeprefix("flashvsr: "))
        if spec.source == "tiny":
            return Probe(True, "tiny random-weight test model (exercises the pipeline; not an upscaler)")
        on_cpu = device.type == "cpu" and _cpu_allowed(spec)
        if not on_cpu and (why := cuda_reason(device)):
            return Probe(False, why)
        if not on_cpu and (why := _gpu_memory_reason(device)):
            return Probe(False, why)
        note = "" if A.flex_available() else " (torch without FlexAttention: masked-SDPA attention, slower)"
        if spec.source == "folder":
            _, missing = loader.find_in_folder(spec.folder)
            if missing:
                return Probe(False, f"{spec.folder} lacks {', '.join(missing)}")
            return Probe(True, f"weights: {spec.folder}{note}")
        missing = loader.missing_registered()
        if missing:
            return Probe(False, f"weights not cached: run `{loader.fetch_hint(missing)}`", True)
        return Probe(True, f"weights: {DEFAULT_MODEL}{note}")

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        try:
            spec = parse_spec(config.model, config.options)
        except InputError as e:
            raise BackendUnavailable(str(e)) from None
        device = config.device
        dtype = compute_dtype(config.precision, device)
        if spec.source == "tiny":
            cfg = spec.config if spec.settings.get("config") else TINY
            model = random_model(cfg, seed=int(spec.settings.get("seed", 0)), device=device, dtype=dtype)
            return FlashVSREngine(config, model, spec)
        if not (device.type == "cpu" and _cpu_allowed(spec)) and (why := cuda_reason(device)):
            raise BackendUnavailable(
                f"flashvsr {why}; on CPU only the test model runs (model='tiny'), or set {CPU_ENV}=1 (very slow)"
            )
        try:
            cfg = spec.config if spec.settings.get("config") or spec.folder is not None else WAN_1_3B
        except InputError as e:
            raise BackendUnavailable(str(e)) from None
        paths = loader.resolve_parts(spec.folder, download=bool(config.options.get("download", True)))
        model = loader.load_official(paths, cfg, device=device, dtype=dtype)
        return FlashVSREngine(config, model, spec)


def tiny_engine(device: str = "cpu", scale: float = 2.0, **settings: Any) -> FlashVSREngine:
    """A tiny random-weight engine (tests, examples)."""
    model = ",".join(["tiny", *(f"{k}={v}" for k, v in settings.items())])
    return FlashVSRBackend.load(EngineConfig(torch.device(device), scale=scale, model=model))


__all__ = ["FlashVSRBackend", "FlashVSREngine", "Spec", "parse_spec", "tiny_engine"]
