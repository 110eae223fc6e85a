"""The three FlashVSR networks in one module, plus random-weight construction (tests, benchmarks)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import FlashVSRConfig
from .dit import WanDiT
from .lq_proj import CausalLQProj
from .tcdecoder import TCDecoder


class FlashVSRModel(nn.Module):
    """``dit`` (Wan2.1 DiT), ``lq_proj`` (Causal_LQ4x_Proj), ``decoder`` (TC decoder) and the
    fixed prompt embedding ``context`` ``(1, text_len, text_dim)``."""

    def __init__(self, cfg: FlashVSRConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.dit = WanDiT(cfg)
        self.lq_proj = CausalLQProj(cfg)
        self.decoder = TCDecoder(cfg)
        self.register_buffer("context", torch.zeros(1, cfg.text_len, cfg.text_dim), persistent=False)

    @torch.no_grad()
    def prepare(self, context: torch.Tensor | None = None) -> "FlashVSRModel":
        """Set the prompt embedding (optional) and fold the fixed timestep / prompt into the DiT."""
        if context is not None:
            if context.dim() == 2:
                context = context[None]
            self.context = context.to(self.context.device, self.context.dtype)
        self.dit.prepare(self.context)
        return self

    def reset_streams(self) -> None:
        self.lq_proj.reset()
        self.decoder.reset()

    def param_count(self) -> dict[str, int]:
        return {n: sum(p.numel() for p in m.parameters()) for n, m in (("dit", self.dit), ("lq_proj", self.lq_proj), ("decoder", self.decoder))}


def random_model(
    cfg: FlashVSRConfig, seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> FlashVSRModel:
    """A model with random weights (PyTorch default init) and a random prompt, prepared and in eval mode.

    Built directly on ``device`` (a full-size model initialises in seconds on a GPU)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with device:
            m = FlashVSRModel(cfg)
            ctx = torch.randn(1, cfg.text_len, cfg.text_dim)
    m = m.to(dtype=dtype).eval().requires_grad_(False)
    return m.prepare(ctx)
