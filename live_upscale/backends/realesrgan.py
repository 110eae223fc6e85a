"""``realesrgan``: any spandrel single-image SR model (RRDB x2plus/x4plus, Compact, SPAN, ...).

- Loads by registered name (weights manager) or by path, without executing pickled code. With no
  model named, a native model for the target scale is used when one is cached (at 2x:
  ``RealESRGANv2-animevideo-xsx2``, then ``RealESRGAN_x2plus``); otherwise ``realesr-animevideov3``.
- Any input size: pads to the model's size requirements (reflect, replicate when the frame is
  smaller than the pad), crops back.
- Target scale may differ from the model's (``prescale``, the *route*):
  ``'output'`` runs the model at full input size and resizes its output with an antialiased
  filter (``backend_options['downscale']``, default bicubic); for 2x from a 4x model that is 4x
  the input route's work and keeps the detail (on Vid4 it beats bicubic on detail at about its
  PSNR and flicker, see README). ``'input'`` resizes the input by ``scale/model_scale`` first: for
  2x from a 4x model the model sees a quarter of the pixels, a quarter of the cost, but the
  result is below plain bicubic on PSNR, detail and flicker; a speed option only.
  ``'auto'`` (default) = ``'output'``.
- fp16 (else bf16) on CUDA where the architecture supports it, fp32 otherwise; channels_last on
  CUDA. Frames go through the model in batches (at most ``max_batch`` frames per call); each
  call's output is resized right away, so only one call's output is ever held at model scale.
  Nothing syncs the host.
- :meth:`SpandrelEngine.cost`: multiply-accumulates and activation memory per frame of the route
  in use, counted on the loaded model (``describe()`` reports them).

Fast path (issue 9): ``compile`` = ``default`` | ``reduce-overhead`` (adds CUDA graphs) |
``max-autotune`` (also tunes kernels) | ``tensorrt`` (torch-tensorrt if installed, else
max-autotune). Shapes are fixed per graph; :class:`CompiledModel` keeps one graph per input
shape seen, so a size change costs one compile and going back to a size costs none. Batches are
split into power-of-two parts (8, 4, 2, 1) so any batch size reuses at most four graphs per
frame size. cuDNN autotuning is on for our calls only (the host's flag is restored). Every route
goes through the same batched, compiled model call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import weights
from ..errors import InputError, WeightsError, one_line
from ..ops.resample import out_size, resize
from .base import Backend, Capabilities, Engine, EngineConfig, Probe, missing_package, resolve_dtype
from .registry import register

log = logging.getLogger(__name__)

DEFAULT_MODEL = "realesr-animevideov3"
# native models preferred over DEFAULT_MODEL when cached and no model is named, per target scale (first wins)
NATIVE_DEFAULTS: dict[int, tuple[str, ...]] = {2: ("RealESRGANv2-animevideo-xsx2", "RealESRGAN_x2plus")}
ROUTES = ("auto", "input", "output")
DOWNSCALE_FILTERS = ("bicubic", "lanczos", "bilinear")
DEFAULT_DOWNSCALE = "bicubic"
COST_SIZE = 512  # describe() states the cost per frame at this input size (the project's reference size)
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "tensorrt")
MAX_SHAPES = 16  # compiled graphs one engine keeps (input shapes); past this, new shapes run eager
MAX_BATCH = 8  # frames per model call; larger batches are split (memory, and a bounded set of graphs)


def default_model(scale: float) -> tuple[str, str]:
    """The model loaded when none is named at this target scale, and why (for describe/doctor)."""
    s = float(scale)
    if s.is_integer():
        for name in NATIVE_DEFAULTS.get(int(s), ()):
            if weights.is_cached(name):
                return name, f"native {int(s)}x model cached"
    return DEFAULT_MODEL, "default model"


def resolve_route(prescale: str | None, model_scale: float, scale: float) -> str:
    """``'native'`` when the model's scale is the target, else ``'input'`` or ``'output'`` (``'auto'`` = output)."""
    p = str(prescale or "auto").strip().lower()
    if p not in ROUTES:
        raise InputError(f"prescale must be one of {', '.join(ROUTES)}, not {prescale!r}")
    if float(model_scale) == float(scale):
        return "native"
    return "output" if p == "auto" else p


def batch_plan(n: int, max_batch: int = MAX_BATCH, pow2: bool = True) -> list[int]:
    """Sizes of the parts a batch of ``n`` frames is run in.

    ``pow2`` (compiled models): powers of two up to ``max_batch``, largest first (7 -> 4, 2, 1), so a
    compiled model sees at most ``log2(max_batch) + 1`` batch sizes; else plain chunks of ``max_batch``.
    """
    max_batch = max(1, int(max_batch))
    if not pow2:
        return [min(max_batch, n - i) for i in range(0, n, max_batch)]
    top = 1 << (max_batch.bit_length() - 1)
    parts = []
    while n > 0:
        k = top
        while k > n:
            k >>= 1
        parts.append(k)
        n -= k
    return parts


@contextlib.contextmanager
def cudnn_autotune(on: bool):
    """cuDNN picks the fastest convolution algorithm per shape inside this block; the host's flag is restored."""
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(on) or prev
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


def _limit_name() -> str:
    cfg = torch._dynamo.config
    return "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"


def tensorrt_cache_dir(device: torch.device, dtype: torch.dtype) -> Path:
    """Where built TensorRT engines are kept. torch-tensorrt keys each engine by graph, input shapes and
    settings, not by GPU or TensorRT version, so the directory does: an engine is only valid on the GPU
    model and TensorRT build that made it."""
    try:
        import tensorrt

        trt = str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - version unknown: still a valid (separate) directory
        trt = "unknown"
    if device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        gpu = f"{name}-sm{major}{minor}"
    else:
        gpu = f"{device.type}-{platform.machine()}"
    key = re.sub(r"[^A-Za-z0-9.]+", "-", f"{gpu}-trt{trt}-{str(dtype).removeprefix('torch.')}").strip("-")
    return weights.cache_dir() / "tensorrt" / key


class CompiledModel:
    """``torch.compile`` with fixed shapes and a bounded shape cache.

    One graph per input shape (batch, channels, height, width). Shapes already compiled are reused
    (dynamo's guards pick the graph); a new shape compiles once; past ``max_shapes`` new shapes run
    eagerly instead of growing the cache. ``tensorrt`` uses the torch-tensorrt backend with an engine
    cache on disk and falls back to inductor ``max-autotune`` when torch-tensorrt is missing or fails.
    """

    def __init__(self, model: torch.nn.Module, mode: str, device: torch.device, dtype: torch.dtype,
                 max_shapes: int = MAX_SHAPES, backend: str | None = None):
        if mode not in COMPILE_MODES or mode == "off":
            raise ValueError(f"compile mode must be one of {COMPILE_MODES[1:]}, not {mode!r}")
        self.model = model
        self.mode = mode
        self.max_shapes = int(max_shapes)
        self.shapes: set[tuple[int, ...]] = set()
        self.note = ""
        self.cuda_graphs = mode in ("reduce-overhead", "max-autotune") and device.type == "cuda"
        self._warned = False
        self._backend = backend
        if mode == "tensorrt":
            self.fn = self._tensorrt(device, dtype)
        elif backend is not None:  # tests: a compiler backend that needs no C compiler
            self.fn = torch.compile(model, backend=backend, dynamic=False)
        else:
            self.fn = torch.compile(model, mode=None if mode == "default" else mode, dynamic=False)

    def _tensorrt(self, device: torch.device, dtype: torch.dtype):
        try:
            import torch_tensorrt  # noqa: F401 - registers the 'torch_tensorrt' compile backend
        except Exception as e:  # noqa: BLE001 - optional extra: any import failure means 'not here'
            return self._fallback(f"torch-tensorrt is not usable here ({one_line(e)})")
        if device.type != "cuda":
            return self._fallback("TensorRT needs a CUDA device")
        cache = tensorrt_cache_dir(device, dtype)
        cache.mkdir(parents=True, exist_ok=True)
        options = {
            "enabled_precisions": {dtype},
            "min_block_size": 1,
            "immutable_weights": False,  # engine caching needs refittable engines
            "cache_built_engines": True,
            "reuse_cached_engines": True,
            "engine_cache_dir": str(cache),
        }
        self.note = f"TensorRT engines cached in {cache}"
        return torch.compile(self.model, backend="torch_tensorrt", dynamic=False, options=options)

    def _fallback(self, why: str):
        self.mode = "max-autotune"
        self.cuda_graphs = torch.cuda.is_available()
        self.note = f"{why}; using inductor max-autotune"
        log.warning("live-upscale: %s", self.note)
        if self._backend is not None:
            return torch.compile(self.model, backend=self._backend, dynamic=False)
        return torch.compile(self.model, mode="max-autotune", dynamic=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key in self.shapes:  # the hot path: dynamo's guards pick the graph, nothing compiles
            return self._run(x)
        if len(self.shapes) >= self.max_shapes:
            if not self._warned:
                log.warning("live-upscale: %d input shapes compiled already; new shapes run uncompiled", self.max_shapes)
                self._warned = True
            return self.model(x)
        # dynamo counts recompiles per code object (shared by every instance of this architecture):
        # allow our own bounded shape cache plus other engines of the same architecture
        with torch._dynamo.config.patch(**{_limit_name(): self.max_shapes * 4 + 8}):
            try:
                y = self._run(x)
            except Exception as e:  # noqa: BLE001 - a TensorRT build failure must not take the stream down
                if self.mode != "tensorrt":
                    raise
                self.fn = self._fallback(f"TensorRT build failed ({one_line(e)})")
                y = self._run(x)
        self.shapes.add(key)
        return y

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.cuda_graphs and x.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        return self.fn(x)


def load_descriptor(path, device: torch.device | str = "cpu"):
    """Weights file -> spandrel ImageModelDescriptor (eval mode), or one clear WeightsError."""
    import spandrel

    sd = weights.load_state_dict(path)
    try:
        desc = spandrel.ModelLoader(device=device).load_from_state_dict(spandrel.canonicalize_state_dict(sd))
    except spandrel.UnsupportedModelError:
        raise WeightsError(
            f"{path}: not a model architecture spandrel knows (expected a single-image SR model such as "
            "RRDB/ESRGAN, SRVGGNetCompact, SPAN, SwinIR, ...)"
        ) from None
    except Exception as e:  # noqa: BLE001 - wrong shapes for the detected arch, etc.
        raise WeightsError(f"{path}: weights do not fit the detected architecture: {one_line(e)}") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise WeightsError(f"{path}: {desc.architecture.name} is not an image-to-image model")
    if desc.purpose not in ("SR", "Restoration") or desc.input_channels != 3 or desc.output_channels != 3:
        raise WeightsError(
            f"{path}: {desc.architecture.name} ({desc.purpose}, {desc.input_channels}->{desc.output_channels} ch) "
            "is not an RGB super-resolution model"
        )
    return desc.eval()


@dataclass(frozen=True)
class Cost:
    """What one frame costs on a route: model multiply-accumulates and peak activation memory."""

    route: str
    model_pixels: int  # pixels the model runs on (the input, or the input resized)
    macs: float  # multiply-accumulates of one model call on one frame
    activation_bytes: float  # peak working memory of one frame (largest feature maps, model output, result)
    weight_bytes: float = 0.0

    @property
    def vram_gb(self) -> float:
        return (self.activation_bytes + self.weight_bytes) / 2**30


def count_model(model: torch.nn.Module, size_requirements=None, side: int = 32) -> tuple[float, float]:
    """(multiply-accumulates, elements of the largest tensor a module produces) per input pixel of ``model``,
    counted on one small probe frame: FLOPs with ``torch.utils.flop_counter``, activations with forward hooks.
    Convolutional SR models scale linearly with the pixels, so the figures hold at any size."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(iter(model.parameters()), None)
    dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    x, _, _ = pad_to_requirements(torch.zeros(1, 3, side, side, device=dev, dtype=dt), size_requirements)
    px = int(x.shape[-2] * x.shape[-1])
    biggest = [x.numel()]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            biggest[0] = max(biggest[0], out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return fc.get_total_flops() / 2.0 / px, biggest[0] / px


def route_cost(macs_per_px: float, act_per_px: float, model_scale: float, scale: float, route: str,
               h: int, w: int, elt_bytes: int = 2, weight_bytes: float = 0.0) -> Cost:
    """Cost of one ``h x w`` frame on ``route`` ('native', 'input' or 'output', see :func:`resolve_route`)."""
    mh, mw = out_size(h, w, scale / model_scale) if route == "input" else (h, w)
    mp = mh * mw
    oh, ow = out_size(h, w, scale)
    # two live feature maps + the model-scale output in the model dtype and as float32 + the result (float32)
    act = mp * (2 * act_per_px * elt_bytes + 3 * model_scale**2 * (elt_bytes + 4)) + oh * ow * 3 * 4
    return Cost(route, mp, macs_per_px * mp, act, weight_bytes)


def estimated_vram_gb(model: str = DEFAULT_MODEL, scale: float = 2.0, prescale: str = "auto",
                      size: int = COST_SIZE, batch: int = 1) -> float:
    """VRAM (GB, fp16) of a registered model on a route for ``batch`` frames of ``size``², from the registry's
    counted figures (weights + activations; no CUDA context). None of the figures: 0."""
    info = weights.lookup(model)
    if info is None or not info.macs_per_px:
        return 0.0
    route = resolve_route(prescale, info.scale, scale)
    c = route_cost(info.macs_per_px, info.act_per_px, info.scale, scale, route, size, size, 2, info.params * 2)
    return (batch * c.activation_bytes + c.weight_bytes) / 2**30


def pad_to_requirements(x: torch.Tensor, req) -> tuple[torch.Tensor, int, int]:
    """Pad right/bottom to satisfy spandrel SizeRequirements; returns (x, h, w) of the original."""
    h, w = x.shape[-2:]
    if req is None:
        return x, h, w
    mult = max(1, int(req.multiple_of))
    th = max(int(req.minimum), math.ceil(h / mult) * mult)
    tw = max(int(req.minimum), math.ceil(w / mult) * mult)
    if req.square:
        th = tw = max(th, tw)
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x, h, w
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), h, w


class SpandrelEngine(Engine):
    def __init__(self, config: EngineConfig, descriptor, source: str, why: str = ""):
        super().__init__(config)
        self.desc = descriptor
        self.source = source
        self.why = why  # how the model was chosen when none was named ('' when it was)
        self.model_scale = int(descriptor.scale)
        self.route = resolve_route(config.options.get("prescale", "auto"), self.model_scale, self.scale)
        self.downscale = str(config.options.get("downscale", DEFAULT_DOWNSCALE) or DEFAULT_DOWNSCALE).lower()
        if self.downscale not in DOWNSCALE_FILTERS:
            raise InputError(f"downscale must be one of {', '.join(DOWNSCALE_FILTERS)}, not {self.downscale!r}")
        self._counted: tuple[float, float] | None = None
        self._cost_text: str | None = None
        self.tile = int(config.options.get("tile", 0) or 0)  # 0 = whole frames; set on OOM
        self.overlap = int(config.options.get("tile_overlap", 16))
        self._last_hw: tuple[int, int] | None = None
        self._last_n = 1
        self.dtype = resolve_dtype(
            config.precision, config.device, bool(descriptor.supports_half), bool(descriptor.supports_bfloat16)
        )
        self.model = descriptor.model.to(device=config.device, dtype=self.dtype).eval()
        if config.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.compile_mode = str(config.options.get("compile", "off") or "off")
        self.max_batch = max(1, int(config.options.get("max_batch", MAX_BATCH)))
        self.autotune = config.device.type == "cuda" and bool(config.options.get("cudnn_benchmark", True))
        self.compiled: CompiledModel | None = None
        self._fn = self.model
        if self.compile_mode != "off":
            self.compiled = CompiledModel(
                self.model, self.compile_mode, config.device, self.dtype,
                max_shapes=int(config.options.get("max_shapes", MAX_SHAPES)),
                backend=config.options.get("compile_backend"),
            )
            self._fn = self.compiled
        self.caps = Capabilities(
            min_scale=1.0,
            max_scale=8.0,
            native_scale=float(self.model_scale),
            needs_weights=True,
            dtypes=(self.dtype,),
            notes=self._route_note(),
        )

    def _route_note(self) -> str:
        r = self.scale / self.model_scale
        if self.route == "native":
            note = f"native {self.model_scale}x"
        elif self.route == "input":
            note = f"{self.model_scale}x model, input resized by {r:g} first (speed route)"
        else:
            note = f"{self.model_scale}x model at full input size, output resized by {r:g} ({self.downscale}, antialiased)"
        if self.compiled is not None:
            note += f", compiled {self.compiled.mode}" + (f" ({self.compiled.note})" if self.compiled.note else "")
        return note

    def cost(self, h: int = COST_SIZE, w: int | None = None, route: str | None = None) -> Cost:
        """Model work and memory of one ``h x w`` frame on ``route`` (default: this engine's), counted on the
        loaded model once (a 32² probe frame) and scaled by the pixels the route feeds the model."""
        if self._counted is None:
            self._counted = count_model(self.model, self.desc.size_requirements)
        macs, act = self._counted
        elt = torch.finfo(self.dtype).bits // 8
        wb = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return route_cost(macs, act, self.model_scale, self.scale, route or self.route, h, w or h, elt, wb)

    def _cost_note(self) -> str:
        if self._cost_text is not None:  # hosts show describe() every cook: counted once
            return self._cost_text
        try:
            c = self.cost()
        except Exception as e:  # noqa: BLE001 - an architecture the counter cannot trace must not stop a load
            log.debug("live-upscale: cost not counted: %s", one_line(e))
            return "cost not counted"
        note = f"{c.macs / 1e9:.0f} GMAC/frame at {COST_SIZE}² in"
        if self.route != "native":
            other = self.cost(route="input" if self.route == "output" else "output")
            note += f", {c.macs / other.macs:.2g}x the {other.route} route's"
        self._cost_text = note
        return note

    def run_model(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,3,h,w)`` float -> ``(N,3,h*m,w*m)`` float32 in [0,1]; tiled when ``self.tile`` is set."""
        h, w = x.shape[-2:]
        self._last_hw, self._last_n = (h, w), int(x.shape[0])
        if not self.tile or (h <= self.tile and w <= self.tile):
            return self._run_whole(x)
        m, t, o = self.model_scale, self.tile, self.overlap
        out = torch.empty((x.shape[0], 3, h * m, w * m), device=x.device, dtype=torch.float32)
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                ya, xa, yb, xb = max(0, y0 - o), max(0, x0 - o), min(h, y1 + o), min(w, x1 + o)
                part = self._run_whole(x[..., ya:yb, xa:xb])
                # keep each tile's centre: the overlap hides the tile border from the model's receptive field
                out[..., y0 * m : y1 * m, x0 * m : x1 * m] = part[
                    ..., (y0 - ya) * m : (y1 - ya) * m, (x0 - xa) * m : (x1 - xa) * m
                ]
        return out

    def on_oom(self) -> str | None:
        if self._last_n > 1 and self.max_batch > 1:  # fewer frames per call first: same result, less memory
            self.max_batch = max(1, min(self.max_batch, self._last_n) // 2)
            return f"batches of at most {self.max_batch} frames"
        smallest = 64
        if self.tile == smallest:
            return None
        largest = max(self._last_hw) if self._last_hw else 1024
        self.tile = max(smallest, (self.tile or largest) // 2)
        return f"tiles of {self.tile} px with {self.overlap} px overlap"

    def _run_whole(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Model on ``x`` in batches; ``size``: each batch's output is resized to it right away."""
        n = x.shape[0]
        plan = batch_plan(n, self.max_batch, pow2=self.compiled is not None)
        if len(plan) == 1:
            return self._resized(self._run_batch(x), size)
        out, i = [], 0
        for k in plan:
            out.append(self._resized(self._run_batch(x[i : i + k]), size))
            i += k
        return torch.cat(out)

    def _resized(self, y: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        if size is None or tuple(y.shape[-2:]) == tuple(size):
            return y
        # a downscale (output route) uses the chosen antialiased filter; other resizes stay bicubic
        shrink = size[0] < y.shape[-2]
        return resize(y, size, self.downscale if shrink else "bicubic").clamp_(0.0, 1.0)

    def _run_batch(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_requirements(x.to(self.dtype), self.desc.size_requirements)
        if self.config.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with cudnn_autotune(self.autotune):
            y = self._fn(x)
        m = self.model_scale
        y = y[..., : h * m, : w * m]
        # a CUDA-graph output is overwritten by the next replay: never hand it out directly
        y = y.float() if y.dtype != torch.float32 else y.clone()
        return y.clamp_(0.0, 1.0)

    @torch.inference_mode()
    def process(self, frames: torch.Tensor) -> torch.Tensor:
        h, w = frames.shape[-2:]
        target = out_size(h, w, self.scale)
        x = frames
        if self.route == "input":
            x = resize(x, out_size(h, w, self.scale / self.model_scale), "bicubic").clamp_(0.0, 1.0)
        mh, mw = x.shape[-2:]
        if self.tile and (mh > self.tile or mw > self.tile):
            y = self.run_model(x)  # tiles are stitched at model scale, then resized as a whole
        else:
            self._last_hw, self._last_n = (mh, mw), int(x.shape[0])
            y = self._run_whole(x, target)  # resized batch by batch: no whole batch at model scale
        return self._resized(y, target)

    def describe(self) -> str:
        arch = self.desc.architecture.name
        src = f"{self.source} ({self.why})" if self.why else self.source
        return (f"{arch} from {src} ({self._route_note()}; {self._cost_note()}; "
                f"{str(self.dtype).removeprefix('torch.')})")

    def close(self) -> None:
        self.model = None
        self.desc = None


@register
class RealESRGANBackend(Backend):
    id = "realesrgan"
    label = "RealESRGAN family (spandrel)"
    description = f"Any spandrel SR model by name or path; default {DEFAULT_MODEL}."
    priority = 10
    needs_weights = True

    @classmethod
    def probe(cls, device: torch.device, model: str | None = None) -> Probe:
        if why := missing_package("spandrel"):
            return Probe(False, why)
        if model:
            if weights.is_cached(model):
                return Probe(True, f"weights: {model}")
            info = weights.lookup(model)
            if info is not None:
                return Probe(False, f"weights '{info.name}' not cached: run `live-upscale models fetch {info.name}`", True)
            return Probe(False, f"weights not found: {model}")
        native = {s: n for s, names in NATIVE_DEFAULTS.items() for n in reversed(names) if weights.is_cached(n)}
        at = "; ".join(f"at {s}x: native {n}" for s, n in sorted(native.items()))
        if weights.is_cached(DEFAULT_MODEL):
            return Probe(True, f"weights: {DEFAULT_MODEL}" + (f" ({at})" if at else ""))
        if native:
            return Probe(True, f"weights: {at} only ({DEFAULT_MODEL} for other scales is not cached)")
        return Probe(False, f"weights '{DEFAULT_MODEL}' not cached: run `live-upscale models fetch {DEFAULT_MODEL}`", True)

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        name, why = (config.model, "") if config.model else default_model(config.scale)
        path = weights.resolve(name, download=bool(config.options.get("download", True)))
        desc = load_descriptor(path)
        return SpandrelEngine(config, desc, source=str(name), why=why if name != DEFAULT_MODEL else "")
