"""The Wan2.1 DiT as FlashVSR runs it: one step, streaming, with a self-attention KV cache.

Parameter names follow the official (Wan / DiffSynth) layout, so the official
``diffusion_pytorch_model_streaming_dmd.safetensors`` loads without renaming:
``patch_embedding``, ``text_embedding.{0,2}``, ``time_embedding.{0,2}``, ``time_projection.1``,
``blocks.N.{self_attn,cross_attn}.{q,k,v,o,norm_q,norm_k}``, ``blocks.N.{norm3,ffn.{0,2},modulation}``,
``head.{head,modulation}``.

What differs from a plain Wan forward:

- the timestep is fixed (t = 1000), so the modulation vectors of every block and of the head are
  computed once in :meth:`WanDiT.prepare`, together with the cross-attention K/V of the fixed
  prompt embedding (no text encoder at run time);
- self-attention keeps K (after RoPE) and V of the last ``kv_slices`` window slices per layer;
- RoPE positions: the temporal position is a counter computed on the fly in float64 (no
  1024-entry table to run off), and ``KVCache.rebase`` rotates the cached keys back so the
  counter stays small forever. Attention only sees position differences, so a rebase changes
  nothing but rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import attention as A
from .config import FlashVSRConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


# --- rotary embeddings ------------------------------------------------------------------------------


class Rope3D:
    """3-axis RoPE (head_dim split t/h/w = d-2(d//3), d//3, d//3), pairs of adjacent channels.

    Angles are computed in float64 on the compute device (no host round trip, so no GPU sync per
    step); the spatial part is cached per grid size. Temporal positions can be any number: there
    is no table to run off the end of.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        self.head_dim = head_dim
        dh = head_dim // 3
        dt = head_dim - 2 * dh
        self.freqs = [self._freqs(d, theta) for d in (dt, dh, dh)]  # float64 on CPU, d/2 each
        self._dev: dict = {}  # cached device tensors

    @staticmethod
    def _freqs(d: int, theta: float) -> torch.Tensor:
        return 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64, device="cpu")[: d // 2] / d))

    def _temporal_freqs(self, device) -> torch.Tensor:
        key = ("t", str(device))
        if key not in self._dev:
            self._dev[key] = self.freqs[0].to(device)
        return self._dev[key]

    def _spatial(self, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("s", h, w, str(device))
        if key not in self._dev:
            if len(self._dev) > 64:
                self._dev.clear()
            ah = torch.outer(torch.arange(h, dtype=torch.float64, device="cpu"), self.freqs[1])
            aw = torch.outer(torch.arange(w, dtype=torch.float64, device="cpu"), self.freqs[2])
            ang = torch.cat([ah[:, None, :].expand(h, w, -1), aw[None, :, :].expand(h, w, -1)], dim=-1).reshape(h * w, -1)
            self._dev[key] = (torch.cos(ang).float().to(device), torch.sin(ang).float().to(device))
        return self._dev[key]

    def tables(self, t0: int, f: int, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``(f*h*w, head_dim/2)`` float32 for ``f`` latent frames at temporal positions
        ``t0, t0+1, ...`` over the full h x w grid, in (f, h, w) token order."""
        ft = self._temporal_freqs(device)
        at = torch.outer(torch.arange(f, dtype=torch.float64, device=device) + float(t0), ft)  # (f, dt/2)
        ct, st = torch.cos(at).float(), torch.sin(at).float()
        cs, ss = self._spatial(h, w, device)
        n = h * w

        def full(t: torch.Tensor, sp: torch.Tensor) -> torch.Tensor:
            return torch.cat([t[:, None, :].expand(f, n, -1), sp[None].expand(f, n, -1)], dim=-1).reshape(f * n, -1)

        return full(ct, cs), full(st, ss)

    def shift_tables(self, delta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``(1, head_dim/2)`` rotating only the temporal channels by ``delta`` positions."""
        at = self._temporal_freqs(device) * float(delta)
        pad = self.head_dim // 2 - at.numel()
        cos = torch.cat([torch.cos(at), torch.ones(pad, dtype=at.dtype, device=at.device)])[None]
        sin = torch.cat([torch.sin(at), torch.zeros(pad, dtype=at.dtype, device=at.device)])[None]
        return cos.float(), sin.float()


def rope_apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x``: ``(B, H, L, d)``; ``cos``/``sin``: ``(L, d/2)`` (or broadcastable). Computed in fp32."""
    b, nh, l, d = x.shape
    xf = x.float().reshape(b, nh, l, d // 2, 2)
    re, im = xf[..., 0], xf[..., 1]
    out = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)
    return out.reshape(b, nh, l, d).to(x.dtype)


# --- KV cache ---------------------------------------------------------------------------------------


@dataclass
class KVCache:
    """Per-layer self-attention K (after RoPE) / V in window order, ``(B, H, L, d)`` each."""

    layers: int
    k: list = field(default_factory=list)
    v: list = field(default_factory=list)
    t_next: int = 0  # temporal (latent-frame) position of the next token slice
    cached_latents: int = 0  # latent frames currently held

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.k = [None] * self.layers
        self.v = [None] * self.layers
        self.t_next = 0
        self.cached_latents = 0

    @property
    def empty(self) -> bool:
        return self.k[0] is None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v) if t is not None)

    def rebase(self, rope: Rope3D) -> int:
        """Rotate the cached keys so the oldest cached latent frame sits at position 0."""
        delta = self.t_next - self.cached_latents
        if delta <= 0 or self.empty:
            return 0
        cos, sin = rope.shift_tables(-delta, self.k[0].device)
        self.k = [rope_apply(k, cos, sin) for k in self.k]
        self.t_next -= delta
        return delta


# --- blocks -----------------------------------------------------------------------------------------


class _Attention(nn.Module):
    """q/k/v/o projections with RMS-normed q and k (the official module names)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        return x.view(b, l, self.num_heads, d // self.num_heads).transpose(1, 2)


class SelfAttention(_Attention):
    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, grid, win) -> tuple:
        """q, k (after RoPE), v as ``(B, H, L, d)`` in window order."""
        q = self._heads(A.window_partition(self.norm_q(self.q(x)), grid, win))
        k = self._heads(A.window_partition(self.norm_k(self.k(x)), grid, win))
        v = self._heads(A.window_partition(self.v(x), grid, win))
        return rope_apply(q, cos, sin), rope_apply(k, cos, sin), v

    def output(self, out: torch.Tensor, grid, win) -> torch.Tensor:
        b, nh, l, hd = out.shape
        return self.o(A.window_reverse(out.transpose(1, 2).reshape(b, l, nh * hd), grid, win))


class CrossAttention(_Attention):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__(dim, num_heads, eps)
        self.cache_k: torch.Tensor | None = None
        self.cache_v: torch.Tensor | None = None

    @torch.no_grad()
    def prepare(self, context: torch.Tensor) -> None:
        """``context``: the prompt after ``text_embedding``, ``(1, S, dim)``."""
        self.cache_k = self._heads(self.norm_k(self.k(context)))
        self.cache_v = self._heads(self.v(context))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.norm_q(self.q(x)))
        k, v = self.cache_k, self.cache_v
        if k.shape[0] != q.shape[0]:
            k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v)
        b, nh, l, hd = out.shape
        return self.o(out.transpose(1, 2).reshape(b, l, nh * hd))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float):
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads, eps)
        self.cross_attn = CrossAttention(dim, num_heads, eps)
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.register_buffer("mod", torch.zeros(6, dim), persistent=False)  # modulation + t_mod (fixed t)

    def attn_in(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, grid, win) -> tuple:
        """Everything before self-attention (a pure tensor function: ``torch.compile`` -able)."""
        shift, scale = self.mod[0].to(x.dtype), self.mod[1].to(x.dtype)
        return self.self_attn.project(self.norm1(x) * (1 + scale) + shift, cos, sin, grid, win)

    def attn_out(self, x: torch.Tensor, attn: torch.Tensor, grid, win) -> torch.Tensor:
        """Everything after self-attention: output projection, cross-attention, FFN (pure, compilable)."""
        gate_msa, shift_mlp, scale_mlp, gate_mlp = (m.to(x.dtype) for m in self.mod[2:].unbind(0))
        x = x + gate_msa * self.self_attn.output(attn, grid, win)
        x = x + self.cross_attn(self.norm3(x))
        return x + gate_mlp * self.ffn(self.norm2(x) * (1 + scale_mlp) + shift_mlp)

    def forward(self, x, ctx: "StepContext", layer: int, cache: KVCache, fns=None) -> torch.Tensor:
        attn_in, attn_out = fns or (DiTBlock.attn_in, DiTBlock.attn_out)
        q, k, v = attn_in(self, x, ctx.cos, ctx.sin, ctx.grid, ctx.window)
        if cache.k[layer] is not None:
            k = torch.cat([cache.k[layer], k], dim=2)
            v = torch.cat([cache.v[layer], v], dim=2)
        keep = ctx.keep_tokens
        cache.k[layer] = k[:, :, -keep:] if k.shape[2] > keep else k
        cache.v[layer] = v[:, :, -keep:] if v.shape[2] > keep else v
        on_mask = None if ctx.on_mask is None else (lambda m: ctx.on_mask(layer, m))
        out = A.lcsa(q, k, v, mode=ctx.mode, block=ctx.block, local=ctx.local, topk=ctx.topk, on_mask=on_mask)
        return attn_out(self, x, out, ctx.grid, ctx.window)


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch: tuple[int, int, int], eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch))
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.register_buffer("mod", torch.zeros(2, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mod.to(x.dtype).unbind(0)
        return self.head(self.norm(x) * (1 + scale) + shift)


def sinusoidal_embedding(dim: int, position: torch.Tensor) -> torch.Tensor:
    half = dim // 2
    sinusoid = torch.outer(
        position.to(torch.float64), torch.pow(10000, -torch.arange(half, dtype=torch.float64).div(half))
    )
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


@dataclass
class StepContext:
    """Everything a block needs for one streaming step (shared by all layers)."""

    grid: tuple[int, int, int]  # (f, h, w) tokens of this step
    window: tuple[int, int, int]
    block: int
    cos: torch.Tensor
    sin: torch.Tensor
    keep_tokens: int  # KV cache length after this step
    mode: str  # attention kernel: flex | sdpa | dense
    local: torch.Tensor | None
    topk: int
    on_mask: Callable[[int, torch.Tensor], None] | None = None  # (layer, block mask): tracing only


class WanDiT(nn.Module):
    def __init__(self, cfg: FlashVSRConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, d, kernel_size=cfg.patch, stride=cfg.patch)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, d * 6))
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.ffn_dim, cfg.eps) for _ in range(cfg.num_layers))
        self.head = Head(d, cfg.out_dim, cfg.patch, cfg.eps)
        self.rope = Rope3D(cfg.head_dim, cfg.rope_theta)
        self.prepared = False
        self._fns = None  # (attn_in, attn_out), compiled by compile_blocks()

    def compile_blocks(self, **compile_kwargs) -> None:
        """``torch.compile`` the dense parts of every block (one graph shared by all blocks per shape).

        The attention kernel stays outside (FlexAttention is compiled on its own); the KV-cache
        bookkeeping stays in Python."""
        kw = {"dynamic": False, **compile_kwargs}
        self._fns = (torch.compile(DiTBlock.attn_in, **kw), torch.compile(DiTBlock.attn_out, **kw))

    @torch.no_grad()
    def prepare(self, context: torch.Tensor) -> None:
        """Fold the fixed timestep into every modulation and cache the prompt's cross-attention K/V."""
        p = self.patch_embedding.weight
        t = sinusoidal_embedding(self.cfg.freq_dim, torch.tensor([self.cfg.timestep])).to(p.device, p.dtype)
        t = self.time_embedding(t)  # (1, dim)
        t_mod = self.time_projection(t).unflatten(1, (6, self.cfg.dim))[0]  # (6, dim)
        ctx = self.text_embedding(context.to(p.device, p.dtype))
        for blk in self.blocks:
            blk.mod = (blk.modulation[0] + t_mod).to(p.dtype)
            blk.cross_attn.prepare(ctx)
        self.head.mod = (self.head.modulation[0] + t).to(p.dtype)
        self.prepared = True

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        x = self.patch_embedding(x)
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b = x.shape[0]
        f, h, w = grid
        pt, ph, pw = self.cfg.patch
        x = x.view(b, f, h, w, pt, ph, pw, self.cfg.out_dim).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, self.cfg.out_dim, f * pt, h * ph, w * pw)

    def step_context(
        self, grid: tuple[int, int, int], cache: KVCache, mode: str, local_range: int, sparse_ratio: float, device
    ) -> StepContext:
        cfg = self.cfg
        f, h, w = grid
        if h % cfg.window[1] or w % cfg.window[2] or f % cfg.window[0]:
            raise ValueError(f"token grid {grid} is not a whole number of {cfg.window} windows")
        cos, sin = self.rope.tables(cache.t_next, f, h, w, device)
        # the cos/sin rows must follow the window order the attention works in
        cos = A.window_partition(cos[None], grid, cfg.window)[0]
        sin = A.window_partition(sin[None], grid, cfg.window)[0]
        nbh, nbw = h // cfg.window[1], w // cfg.window[2]
        slice_tokens = cfg.window[0] * h * w
        local = None if mode == "dense" else A.local_block_mask(nbh, nbw, local_range, device)
        topk = A.topk_for(nbh * nbw, h * cfg.px_per_token, w * cfg.px_per_token, sparse_ratio, cfg.sparse_ref_pixels)
        return StepContext(
            grid=grid,
            window=cfg.window,
            block=cfg.block_tokens,
            cos=cos,
            sin=sin,
            keep_tokens=cfg.kv_slices * slice_tokens,
            mode=mode,
            local=local,
            topk=topk,
        )

    def forward_step(
        self,
        noise: torch.Tensor,
        lq_tokens: torch.Tensor | None,
        cache: KVCache,
        *,
        mode: str = "sdpa",
        local_range: int = 11,
        sparse_ratio: float = 2.0,
        on_mask: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """One streaming step: ``noise`` ``(B, 16, f, H/8, W/8)`` -> the model's prediction (same shape).

        Updates ``cache`` (K/V of the last ``kv_slices`` window slices, temporal position counter).
        ``on_mask(layer, mask)`` (tracing) receives every block's sparse-attention block mask.
        """
        if not self.prepared:
            raise RuntimeError("WanDiT.prepare(context) must run before forward_step")
        x, grid = self.patchify(noise)
        if lq_tokens is not None:
            x = x + lq_tokens.to(x.dtype)
        ctx = self.step_context(grid, cache, mode, local_range, sparse_ratio, x.device)
        ctx.on_mask = on_mask
        for i, blk in enumerate(self.blocks):
            x = blk(x, ctx, i, cache, self._fns)
        cache.t_next += grid[0]
        cache.cached_latents = min(cache.cached_latents + grid[0], self.cfg.kv_slices * self.cfg.window[0])
        return self.unpatchify(self.head(x), grid)
