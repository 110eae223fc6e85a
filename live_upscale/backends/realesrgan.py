"""``realesrgan``: any spandrel single-image SR model (RRDB x2plus/x4plus, Compact, SPAN, ...).

- Loads by registered name (weights manager) or by path, without executing pickled code.
- Any input size: pads to the model's size requirements (reflect, replicate when the frame is
  smaller than the pad), crops back.
- Target scale may differ from the model's. ``prescale='input'`` (default) resizes the input by
  ``scale/model_scale`` first (cheap: for 2x from a 4x model the model sees a quarter of the
  pixels); ``prescale='output'`` runs the model at full input size and resizes its output
  (4x the work, more detail, steadier on clean input).
- fp16 (else bf16) on CUDA where the architecture supports it, fp32 otherwise; channels_last on
  CUDA. The whole batch goes through the model at once; nothing syncs the host.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import weights
from ..errors import WeightsError, one_line
from ..nodes.resample import out_size, resize
from .base import Backend, Capabilities, Engine, EngineConfig, Probe, missing_package, resolve_dtype
from .registry import register

DEFAULT_MODEL = "realesr-animevideov3"


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
    def __init__(self, config: EngineConfig, descriptor, source: str):
        super().__init__(config)
        self.desc = descriptor
        self.source = source
        self.model_scale = int(descriptor.scale)
        self.route = config.options.get("prescale", "input")
        self.tile = int(config.options.get("tile", 0) or 0)  # 0 = whole frames; set on OOM
        self.overlap = int(config.options.get("tile_overlap", 16))
        self._last_hw: tuple[int, int] | None = None
        self.dtype = resolve_dtype(
            config.precision, config.device, bool(descriptor.supports_half), bool(descriptor.supports_bfloat16)
        )
        self.model = descriptor.model.to(device=config.device, dtype=self.dtype).eval()
        if config.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.compile_mode = config.options.get("compile", "off") or "off"
        self._fn = self.model
        if self.compile_mode != "off":
            # fixed shapes (dynamic=False): one graph per input size, cached; CUDA graphs for 'reduce-overhead'
            self._fn = torch.compile(self.model, mode=None if self.compile_mode == "default" else self.compile_mode,
                                     dynamic=False)
        self.caps = Capabilities(
            min_scale=1.0,
            max_scale=8.0,
            native_scale=float(self.model_scale),
            needs_weights=True,
            dtypes=(self.dtype,),
            notes=self._route_note(),
        )

    def _route_note(self) -> str:
        if self.scale == self.model_scale:
            return f"native {self.model_scale}x"
        if self.route == "input":
            return f"{self.model_scale}x model, input resized by {self.scale / self.model_scale:g} first"
        return f"{self.model_scale}x model, output resized by {self.scale / self.model_scale:g}"

    def run_model(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,3,h,w)`` float -> ``(N,3,h*m,w*m)`` float32 in [0,1]; tiled when ``self.tile`` is set."""
        h, w = x.shape[-2:]
        self._last_hw = (h, w)
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
        smallest = 64
        if self.tile == smallest:
            return None
        largest = max(self._last_hw) if self._last_hw else 1024
        self.tile = max(smallest, (self.tile or largest) // 2)
        return f"tiles of {self.tile} px with {self.overlap} px overlap"

    def _run_whole(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_requirements(x.to(self.dtype), self.desc.size_requirements)
        if self.config.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_mode in ("reduce-overhead", "max-autotune") and x.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
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
        if self.route == "input" and self.scale != self.model_scale:
            x = resize(x, out_size(h, w, self.scale / self.model_scale), "bicubic").clamp_(0.0, 1.0)
        y = self.run_model(x)
        if tuple(y.shape[-2:]) != target:
            y = resize(y, target, "bicubic").clamp_(0.0, 1.0)
        return y

    def describe(self) -> str:
        arch = self.desc.architecture.name
        return f"{arch} from {self.source} ({self.caps.notes}, {str(self.dtype).removeprefix('torch.')})"

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
        name = model or DEFAULT_MODEL
        if weights.is_cached(name):
            return Probe(True, f"weights: {name}")
        info = weights.lookup(name)
        if info is not None:
            return Probe(False, f"weights '{info.name}' not cached: run `live-upscale models fetch {info.name}`", True)
        return Probe(False, f"weights not found: {name}")

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        name = config.model or DEFAULT_MODEL
        path = weights.resolve(name, download=bool(config.options.get("download", True)))
        desc = load_descriptor(path)
        return SpandrelEngine(config, desc, source=str(name))
