"""The streaming engine: one frame in, one frame out, state = the previous HR output and LR input.

Per frame (LR ``x`` in [0, 1], at its native size as upstream; ``pad_to=N`` pads it to a multiple
of N by edge replication instead):

1. from the 2nd frame on: backward flow ``cur -> prev`` on the HR grid (``flow.py``: RAFT on the
   bicubic x4 frames as upstream, or a cheaper LR estimate resized up); the previous HR output is
   warped with it (the official warp convention); the encoder features of the warped frame feed
   the decoder's TPM blocks;
2. fresh Gaussian latents at LR size from the engine's generator (seeded; ``reset()`` re-seeds,
   so a replayed stream gives the same frames; on CPU seed S gives upstream's noise for its
   generator seed S);
3. 4 DDIM steps: ``[latents, 2x-1]`` -> ControlNet (conditioned on the warped previous output, from
   the 2nd frame on) -> UNet with the ControlNet residuals -> v-prediction step;
4. temporal decoder -> HR in [-1, 1]; kept (unclamped) as the next frame's history; handed out
   as ``(y + 1) / 2`` clamped to [0, 1] and cropped to 4x the unpadded input.

Nothing grows with the stream: the state is two tensors. No host sync per frame.

Given inputs (parity checks against upstream, no monkeypatching): ``set_noise`` (or the
``noise_file`` option) replaces the generator's latents, ``set_flow`` (or ``flow_file``) the flow
estimator; both are indexed by the frame's number since the last reset. ``trace`` (a callable
``(name, tensor)``, None by default) receives every stage of frame ``i``: ``warped_prev[i-1]``,
``model_out[i,s]`` and ``latents_steps[i,s]`` per DDIM step ``s``, ``decoded[i]`` (raw, [-1, 1]).

Scales: 4x is native. Any other target runs the 4x model on an input resized by ``scale / 4``
(``prescale='input'``, default: 2x = 512² -> 256² -> 1024²) or resizes the 4x output
(``prescale='output'``: 16x the pixels through the model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ...ops.resample import out_size, resize
from ..base import Capabilities, Engine, EngineConfig, resolve_dtype
from .components import NATIVE_SCALE, DDIMPlan
from .flow import FlowEstimator, GivenFlow, flow_warp, read_flow_file
from .loader import Components

log = logging.getLogger(__name__)

DEFAULT_STEPS = 4
DEFAULT_SEED = 0
NoiseSource = Callable[[int, tuple], torch.Tensor]  # (frame index, latent shape) -> latents


class StreamDiffVSREngine(Engine):
    def __init__(self, config: EngineConfig, comps: Components, flow: FlowEstimator):
        super().__init__(config)
        opts = config.options
        dev = config.device
        self.dtype = resolve_dtype(config.precision, dev)
        # nn.Module.to: diffusers' own .to() warns about fp32-pinned modules these models do not have
        self.unet = torch.nn.Module.to(comps.unet, device=dev, dtype=self.dtype).eval().requires_grad_(False)
        self.controlnet = torch.nn.Module.to(comps.controlnet, device=dev, dtype=self.dtype).eval().requires_grad_(False)
        self.vae = comps.vae.to(device=dev, dtype=self.dtype).eval().requires_grad_(False)
        self.emb = comps.prompt_embeds.to(device=dev, dtype=self.dtype)
        self.source = comps.source
        self.prompt_source = comps.prompt_source
        self.flow = flow
        self.plan = DDIMPlan(comps.scheduler, int(opts.get("steps", DEFAULT_STEPS)))
        log.info("stream_diffvsr: DDIM timesteps %s (%s spacing)", self.plan.timesteps,
                 comps.scheduler.config.get("timestep_spacing"))
        self._t = [torch.full((1,), s.t, device=dev, dtype=torch.long) for s in self.plan.steps]
        self.route = opts.get("prescale", "input")
        self.control_scale = float(opts.get("controlnet_scale", 1.0))
        self.seed = int(opts.get("seed", DEFAULT_SEED))
        self.align = int(opts.get("pad_to", 0) or 0)  # 0: native size, as upstream
        self.gen = torch.Generator(device=dev)
        self.noise: torch.Tensor | NoiseSource | None = None
        self.trace: Callable[[str, torch.Tensor], None] | None = None
        if opts.get("noise_file"):
            self.set_noise(read_flow_file(opts["noise_file"], "noise"))
        if opts.get("flow_file"):
            self.set_flow(read_flow_file(opts["flow_file"], "flow"))
        self.frames = 0  # frames since the last reset
        self.prev_hr: torch.Tensor | None = None  # padded HR output in [-1, 1], model dtype
        self.prev_lr: torch.Tensor | None = None  # padded LR input in [0, 1], float32
        self.reset()
        # the node's compile knob: off | default | reduce-overhead (CUDA graphs) | max-autotune; CUDA only
        mode = opts.get("compile") or "off"
        mode = "default" if mode is True else str(mode)
        self.compile_mode = mode if dev.type == "cuda" else "off"
        if self.compile_mode != "off":
            kw = {"dynamic": False} | ({} if self.compile_mode == "default" else {"mode": self.compile_mode})
            self.unet = torch.compile(self.unet, **kw)
            self.controlnet = torch.compile(self.controlnet, **kw)
        self._graphs = self.compile_mode in ("reduce-overhead", "max-autotune")
        self.caps = Capabilities(
            min_scale=1.0,
            max_scale=8.0,
            native_scale=float(NATIVE_SCALE),
            temporal=True,
            delay=0,
            needs_weights=True,
            devices=("cuda", "cpu") if dev.type == "cpu" else ("cuda",),
            dtypes=(self.dtype,),
            notes=self._route_note(),
        )

    # --- protocol ---------------------------------------------------------------------------------

    def _route_note(self) -> str:
        if self.scale == NATIVE_SCALE:
            return "native 4x"
        if self.route == "input":
            return f"4x model, input resized by {self.scale / NATIVE_SCALE:g} first"
        return f"4x model, output resized by {self.scale / NATIVE_SCALE:g}"

    def reset(self) -> None:
        self.prev_hr = None
        self.prev_lr = None
        self.frames = 0
        self.gen.manual_seed(self.seed)

    def set_options(self, **options: Any) -> None:
        if options.get("controlnet_scale") is not None:
            self.control_scale = float(options["controlnet_scale"])
        if options.get("seed") is not None:
            self.seed = int(options["seed"])
            self.gen.manual_seed(self.seed)

    def set_noise(self, noise: torch.Tensor | NoiseSource | None) -> None:
        """Given initial latents instead of the generator's: ``noise[i]`` ``(C, h, w)`` (or
        ``(1, C, h, w)``) for frame ``i`` since the last reset, or a callable ``(i, shape) -> latents``;
        None goes back to the seeded generator."""
        if noise is not None and not callable(noise):
            noise = torch.as_tensor(noise).float()
            noise = noise[:, None] if noise.dim() == 4 else noise
            if noise.dim() != 5 or noise.shape[1] != 1:
                raise ValueError(f"given noise must be (N, C, h, w), got {tuple(noise.shape)}")
        self.noise = noise

    def set_flow(self, flow) -> None:
        """Given HR flow instead of the estimator's: ``flow[k]`` ``(2, H, W)`` in HR pixels for frame
        ``k + 1`` since the last reset, or a callable ``(i, cur, prev) -> (1, 2, H, W)``."""
        self.flow = GivenFlow(flow)

    def _latents(self, shape: tuple) -> torch.Tensor:
        if self.noise is None:
            return torch.randn(shape, generator=self.gen, device=self.device, dtype=torch.float32)
        if callable(self.noise):
            z = self.noise(self.frames, shape)
        else:
            if self.frames >= self.noise.shape[0]:
                raise ValueError(f"given noise covers {self.noise.shape[0]} frames; frame {self.frames} has none")
            z = self.noise[self.frames]
        z = torch.as_tensor(z).to(self.device, torch.float32)
        if tuple(z.shape) != tuple(shape):
            raise ValueError(f"given noise for frame {self.frames} is {tuple(z.shape)}, the model needs {tuple(shape)}")
        return z

    def on_oom(self) -> str | None:
        """Out of memory: RAFT is the piece that can go; the diffusion models cannot."""
        from .flow import LKFlow, RaftFlow

        if isinstance(self.flow, RaftFlow):
            self.flow = LKFlow(self.flow.scale, "lr")
            return "Lucas-Kanade flow instead of RAFT"
        return None

    def describe(self) -> str:
        return (
            f"Stream-DiffVSR from {self.source} ({self.caps.notes}, {len(self.plan.steps)} steps, "
            f"flow {self.flow.describe()}, {str(self.dtype).removeprefix('torch.')}"
            + (f", compiled {self.compile_mode})" if self.compile_mode != "off" else ")")
        )

    def close(self) -> None:
        self.unet = self.controlnet = self.vae = None
        self.prev_hr = self.prev_lr = None

    def state_bytes(self) -> int:
        """Bytes of temporal state held between frames (constant in the stream length)."""
        return sum(t.numel() * t.element_size() for t in (self.prev_hr, self.prev_lr) if t is not None)

    @torch.inference_mode()
    def process(self, frames: torch.Tensor) -> torch.Tensor:
        h, w = frames.shape[-2:]
        target = out_size(h, w, self.scale)
        x = frames.to(self.device, torch.float32)
        if self.route == "input" and self.scale != NATIVE_SCALE:
            x = resize(x, out_size(h, w, self.scale / NATIVE_SCALE), "bicubic").clamp_(0.0, 1.0)
        outs = [self.step(x[i : i + 1]) for i in range(x.shape[0])]  # causal: one frame after another
        y = torch.cat(outs) if len(outs) > 1 else outs[0]
        if tuple(y.shape[-2:]) != target:
            y = resize(y, target, "bicubic").clamp_(0.0, 1.0)
        return y

    # --- one frame -----------------------------------------------------------------------------------

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        a = self.align
        if a <= 1:
            return x
        ph, pw = max(a, -(-h // a) * a), max(a, -(-w // a) * a)
        if (ph, pw) == (h, w):
            return x
        return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")

    def step(self, lr01: torch.Tensor) -> torch.Tensor:
        """One ``(1,3,h,w)`` LR frame in [0, 1] -> ``(1,3,4h,4w)`` float32 in [0, 1]."""
        h, w = lr01.shape[-2:]
        x = self._pad(lr01.float())
        if self.prev_lr is not None and self.prev_lr.shape != x.shape:
            self.reset()  # the node resets on size changes too; this keeps the engine safe on its own
        warped, feats = self.guidance(x)
        lr = (x * 2 - 1).to(self.dtype)
        z = self.denoise(lr, warped)
        hr = self.vae.decode(z / self.vae.scaling_factor, feats)
        if self.trace:
            self.trace(f"decoded[{self.frames}]", hr)
        self.prev_hr, self.prev_lr = hr, x
        self.frames += 1
        s = NATIVE_SCALE
        # out of place: in fp32 ``.float()`` is the history tensor itself, which must stay the raw
        # decoder output (the next frame warps it unclamped, as upstream does)
        return (hr[..., : h * s, : w * s].float() * 0.5 + 0.5).clamp_(0.0, 1.0)

    def guidance(self, x: torch.Tensor) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
        """The warped previous output and its TPM features (None, None on a stream's first frame)."""
        if self.prev_hr is None:
            return None, None
        flow_hr = self.flow(x, self.prev_lr, tuple(self.prev_hr.shape[-2:]), self.frames)
        warped = flow_warp(self.prev_hr.float(), flow_hr).to(self.dtype)
        if self.trace:
            self.trace(f"warped_prev[{self.frames - 1}]", warped)
        return warped, self.vae.temporal_features(warped)

    def denoise(self, lr: torch.Tensor, warped: torch.Tensor | None) -> torch.Tensor:
        """4-step DDIM from fresh noise; ControlNet residuals only when there is a warped history."""
        shape = (lr.shape[0], self.vae.latent_channels, *lr.shape[-2:])
        z = (self._latents(shape) * self.plan.init_sigma).to(self.dtype)
        for i, (s, t) in enumerate(zip(self.plan.steps, self._t)):
            if self._graphs:  # CUDA graphs: every model call's outputs are consumed before the next replay
                torch.compiler.cudagraph_mark_step_begin()
            inp = torch.cat([z, lr], dim=1)
            down = mid = None
            if warped is not None and self.control_scale != 0.0:
                down, mid = self.controlnet(
                    inp, t, encoder_hidden_states=self.emb, controlnet_cond=warped,
                    conditioning_scale=self.control_scale, return_dict=False,
                )
            v = self.unet(
                inp, t, encoder_hidden_states=self.emb,
                down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
            )[0]
            z = self.plan.step(v, s, z)
            if self.trace:
                self.trace(f"model_out[{self.frames},{i}]", v)
                self.trace(f"latents_steps[{self.frames},{i}]", z)
        return z
