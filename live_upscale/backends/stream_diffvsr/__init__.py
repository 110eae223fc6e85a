"""``stream_diffvsr``: Stream-DiffVSR, causal 4-step diffusion video SR, streamed one frame at a time.

Stream-DiffVSR (arXiv 2512.23709; weights ``Jamichsu/Stream-DiffVSR``) upscales 4x with an SD
x4-upscaler UNet distilled to 4 DDIM steps, a ControlNet conditioned on the previous output warped
by optical flow (from the 2nd frame on), and a tiny temporal decoder that fuses features of that
warped frame. Each frame uses only past output, so it streams: this engine keeps the previous HR
output and LR input as its whole state and processes every frame as it arrives (upstream computes
all flows for the whole sequence first, at HR).

Model (``model=``): the registered name ``stream-diffvsr`` (a snapshot of the Hugging Face repo,
``live-upscale models fetch stream-diffvsr``), a folder in that layout (or its
``model_index.json``), or ``random:tiny`` / ``random:full`` (random weights for tests/benchmarks).

Options (``EngineConfig.options``): ``flow`` (auto|raft|lk|none), ``flow_at`` (auto|hr|lr: the
grid the flow is estimated on; auto = HR for RAFT, as upstream, LR for Lucas-Kanade),
``flow_scale`` (LR flow resolution relative to the LR frame, default 1), ``raft_weights`` (path),
``raft_iters`` (12), ``steps`` (4), ``seed`` (0), ``controlnet_scale`` (1.0, also at runtime),
``prompt_embeds`` (a precomputed empty-prompt embedding file), ``pad_to`` (0 = native size as
upstream; N pads the LR frame to a multiple of N), ``noise_file`` / ``flow_file`` (given latents /
HR flow, safetensors with a ``noise`` / ``flow`` tensor: parity checks), ``allow_cpu``,
``compile``. ``quality`` picks the flow when ``flow`` is not given: fast = lk, balanced = auto,
high = auto (LK at twice the LR resolution).

Needs the ``stream-diffvsr`` extra (diffusers; transformers once, to compute the empty-prompt
embedding) and a CUDA GPU; CPU runs only for ``random:tiny``, with ``allow_cpu`` or with
``LIVE_UPSCALE_STREAM_DIFFVSR_CPU=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ... import weights
from ...errors import BackendUnavailable, WeightsError, WeightsMissing
from ..base import Backend, EngineConfig, Probe, cuda_reason, missing_package
from ..registry import register

DEFAULT_MODEL = "stream-diffvsr"
CPU_ENV = "LIVE_UPSCALE_STREAM_DIFFVSR_CPU"
INSTALL_HINT = "pip install 'live-upscale[stream-diffvsr]'"
RANDOM = ("random:tiny", "random:full")
QUALITY_FLOW = {"fast": ("lk", 1.0), "balanced": ("auto", 1.0), "high": ("auto", 2.0)}


def _cpu_allowed(spec: str, options: dict | None = None) -> bool:
    env = os.environ.get(CPU_ENV, "").strip().lower() in ("1", "true", "yes")
    return spec == "random:tiny" or env or bool((options or {}).get("allow_cpu"))


def _device_reason(device: torch.device, spec: str, options: dict | None = None) -> str | None:
    if device.type == "cuda":
        return cuda_reason(device)
    if _cpu_allowed(spec, options):
        return None
    return (
        f"needs a CUDA GPU (4-step diffusion at 16x the input pixels; this node runs on {device}); "
        f"set {CPU_ENV}=1 to run on CPU anyway, very slowly"
    )


def _registered(spec: str):
    info = weights.lookup(spec)
    return info if info is not None and info.backend == StreamDiffVSRBackend.id else None


def _local_root(spec: str) -> tuple[Path | None, str]:
    """(root, '') for a spec that is on disk now, else (None, why)."""
    from .loader import find_root, layout_problem

    info = _registered(spec)
    if info is not None:
        marker = weights.cached_path(info)
        if marker.is_file():
            return marker.parent, ""
        return None, f"weights '{info.name}' not cached: run `live-upscale models fetch {info.name}`"
    p = Path(spec).expanduser()
    if p.exists():
        root = find_root(p)
        if root is None:
            return None, f"{p}: not a Stream-DiffVSR folder (needs unet/, controlnet/, vae/ with config.json)"
        why = layout_problem(root)
        return (None, why) if why else (root, "")
    if weights.lookup(spec) is not None:
        return None, f"model '{spec}' is not a Stream-DiffVSR checkpoint (use '{DEFAULT_MODEL}' or a folder)"
    return None, f"weights not found: {spec} (use '{DEFAULT_MODEL}', a folder in its Hugging Face layout, or random:tiny)"


def _prompt_ready(root: Path) -> str | None:
    """Why the empty-prompt embedding cannot be had here, or None."""
    from .loader import PROMPT_FILE, prompt_cache_path

    if (root / PROMPT_FILE).is_file() or missing_package("transformers") is None:
        return None
    try:
        if prompt_cache_path(root).is_file():
            return None
    except OSError:
        pass
    return (
        "python package 'transformers' is not installed: it is needed once to compute the empty-prompt "
        f"embedding ({INSTALL_HINT}), or put a precomputed prompt_embeds.safetensors in {root}"
    )


@register
class StreamDiffVSRBackend(Backend):
    id = "stream_diffvsr"
    label = "Stream-DiffVSR (causal 4-step diffusion VSR)"
    description = (
        "Diffusion VSR that streams: 4x native, one frame in, one out, temporal state in the engine; "
        "other scales resize the input first (2x: 512² -> 256² -> 4x -> 1024²). CUDA; opt-in (never 'auto')."
    )
    priority = -10  # slow next to the others: only when asked for
    needs_weights = True

    @classmethod
    def probe(cls, device: torch.device, model: str | None = None) -> Probe:
        if why := missing_package("diffusers"):
            return Probe(False, f"{why} ({INSTALL_HINT})")
        spec = model or DEFAULT_MODEL
        if why := _device_reason(device, spec):
            return Probe(False, why)
        if spec in RANDOM:
            return Probe(True, f"random weights ({spec})")
        root, why = _local_root(spec)
        if root is None:
            return Probe(False, why, downloadable=_registered(spec) is not None)
        if why := _prompt_ready(root):
            return Probe(False, why)
        return Probe(True, f"weights: {root}")

    @classmethod
    def load(cls, config: EngineConfig):
        from .engine import StreamDiffVSREngine
        from .flow import make_flow
        from .loader import load_official, random_components

        if why := missing_package("diffusers"):
            raise BackendUnavailable(f"stream_diffvsr: {why} ({INSTALL_HINT})")
        opts = dict(config.options)
        spec = config.model or DEFAULT_MODEL
        if why := _device_reason(config.device, spec, opts):
            raise BackendUnavailable(f"stream_diffvsr: {why}")
        if spec in RANDOM:
            comps = random_components(spec.split(":", 1)[1], seed=int(opts.get("weights_seed", 0)))
        else:
            root, why = _local_root(spec)
            if root is None:
                info = _registered(spec)
                if info is None:
                    raise WeightsMissing(why)
                root = weights.resolve(info.name, download=bool(opts.get("download", True))).parent
            comps = load_official(root, opts.get("prompt_embeds"))
        kind, fscale = QUALITY_FLOW.get(opts.get("quality", "balanced"), ("auto", 1.0))
        try:
            flow = make_flow(
                opts.get("flow", kind), config.device, float(opts.get("flow_scale", fscale)),
                opts.get("raft_weights"), int(opts.get("raft_iters", 12)), str(opts.get("flow_at", "auto")),
            )
        except ValueError as e:
            raise WeightsError(f"stream_diffvsr: {e}") from None
        try:
            return StreamDiffVSREngine(config, comps, flow)
        except ValueError as e:  # a bad given noise/flow file or scheduler config: one line
            raise WeightsError(f"stream_diffvsr: {e}") from None


__all__ = ["StreamDiffVSRBackend", "DEFAULT_MODEL"]
