"""Model assembly from diffusers classes, the DDIM schedule, and configs (official-size and tiny).

diffusers is imported inside the functions, never at module import: ``import live_upscale`` must
work without it.

- ``unet``: ``UNet2DConditionModel``, SD x4-upscaler lineage: 7 input channels (4 latent + 3 LR
  RGB in [-1, 1]), latents at LR size, no noise-level class label, cross-attention on a constant
  empty-prompt embedding (no classifier-free guidance).
- ``controlnet``: ``ControlNetModel`` with the UNet's down path; its conditioning image is the
  warped previous HR output (4x the latent size, so its conditioning embedding downsamples 4x).
- ``scheduler``: ``DDIMScheduler``, v-prediction, scaled-linear betas 0.0001-0.02, trailing
  spacing, 4 steps (999, 749, 499, 249). The step itself is done here with per-step constants
  (no host sync, no per-step indexing of schedule tensors); it matches ``DDIMScheduler.step`` with
  ``eta=0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

# SD x4 upscaler UNet geometry without the noise-level class embedding (as Stream-DiffVSR runs it).
FULL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 7,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [256, 512, 512, 1024],
    "only_cross_attention": [True, True, True, False],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "norm_num_groups": 32,
    "num_class_embeds": None,
}

# ControlNet over the same down path; the conditioning embedding downsamples the HR image 4x
# (three widths = two stride-2 convs). The widths are our assumption for benchmarks with random
# weights; a real checkpoint brings its own config.json.
FULL_CONTROLNET_CONFIG: dict[str, Any] = {
    "in_channels": 7,
    "conditioning_channels": 3,
    "down_block_types": FULL_UNET_CONFIG["down_block_types"],
    "block_out_channels": FULL_UNET_CONFIG["block_out_channels"],
    "only_cross_attention": FULL_UNET_CONFIG["only_cross_attention"],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "norm_num_groups": 32,
    "conditioning_embedding_out_channels": [16, 32, 96],
}

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}

# what the tiny ControlNet must share with the tiny UNet (its residuals are added to the UNet's blocks)
_TINY_SHARED: dict[str, Any] = {
    "in_channels": 7,
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "attention_head_dim": 4,
    "cross_attention_dim": 16,
    "norm_num_groups": 8,
    "use_linear_projection": True,
}

TINY_UNET_CONFIG: dict[str, Any] = {
    **_TINY_SHARED,
    "sample_size": 16,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}

TINY_CONTROLNET_CONFIG: dict[str, Any] = {
    **_TINY_SHARED,
    "conditioning_channels": 3,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "conditioning_embedding_out_channels": [8, 8, 16],
}

TINY_VAE_CONFIG: dict[str, Any] = {
    "encoder_block_out_channels": [8, 8, 8],
    "decoder_block_out_channels": [8, 8, 8],
    "num_encoder_blocks": [1, 2, 2],
    "num_decoder_blocks": [2, 2, 1],
    "latent_channels": 4,
    "scaling_factor": 1.0,
}

NATIVE_SCALE = 4
TEXT_LEN = 77  # CLIP's context length: the embedding is (1, 77, cross_attention_dim)


def diffusers_missing() -> str | None:
    from ..base import missing_package

    return missing_package("diffusers")


def build_unet(config: dict[str, Any]):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config)


def build_controlnet(config: dict[str, Any]):
    from diffusers import ControlNetModel

    return ControlNetModel(**config)


def build_scheduler(config: dict[str, Any] | None = None):
    from diffusers import DDIMScheduler

    return DDIMScheduler(**{**SCHEDULER_CONFIG, **(config or {})})


def wake_zero_convs_(module: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Give every all-zero parameter (ControlNet's zero convs) small random values, in place.

    A freshly initialised ControlNet adds exactly nothing to the UNet; tests and benchmarks with
    random weights need its path to matter.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and not bool(p.detach().abs().sum()):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@dataclass(frozen=True)
class DDIMStep:
    """Constants of one deterministic DDIM step (eta = 0)."""

    t: int
    sqrt_a: float  # sqrt(alpha_bar_t)
    sqrt_1ma: float  # sqrt(1 - alpha_bar_t)
    sqrt_a_prev: float
    sqrt_1ma_prev: float


class DDIMPlan:
    """The timesteps and per-step constants of a DDIMScheduler, for a fixed number of steps."""

    def __init__(self, scheduler, steps: int):
        cfg = scheduler.config
        if getattr(cfg, "thresholding", False):
            raise ValueError("DDIM thresholding is not supported by the streaming step")
        scheduler.set_timesteps(steps)
        self.prediction = cfg.prediction_type
        if self.prediction not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction_type {self.prediction!r}")
        self.clip = float(cfg.clip_sample_range) if getattr(cfg, "clip_sample", False) else None
        self.init_sigma = float(scheduler.init_noise_sigma)
        ac = scheduler.alphas_cumprod.double()
        final = float(scheduler.final_alpha_cumprod)
        stride = cfg.num_train_timesteps // scheduler.num_inference_steps
        self.steps: list[DDIMStep] = []
        for t in scheduler.timesteps.tolist():
            t = int(t)
            a = float(ac[t])
            prev = t - stride
            a_prev = float(ac[prev]) if prev >= 0 else final
            self.steps.append(DDIMStep(t, math.sqrt(a), math.sqrt(1 - a), math.sqrt(a_prev), math.sqrt(1 - a_prev)))

    @property
    def timesteps(self) -> list[int]:
        return [s.t for s in self.steps]

    def step(self, out: torch.Tensor, s: DDIMStep, x: torch.Tensor) -> torch.Tensor:
        """x_t -> x_{t_prev} from the model output ``out`` (same as DDIMScheduler.step, eta=0)."""
        if self.prediction == "v_prediction":
            x0 = s.sqrt_a * x - s.sqrt_1ma * out
            eps = s.sqrt_a * out + s.sqrt_1ma * x
        elif self.prediction == "epsilon":
            x0 = (x - s.sqrt_1ma * out) / s.sqrt_a
            eps = out
        else:
            x0 = out
            eps = (x - s.sqrt_a * x0) / s.sqrt_1ma
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)  # as diffusers: only x0 is clipped, eps is kept
        return s.sqrt_a_prev * x0 + s.sqrt_1ma_prev * eps
