"""Locality-constrained block-sparse self-attention (LCSA) without a custom CUDA build.

Tokens are regrouped into windows of ``(2, 8, 8)`` latent tokens (one window = 2 latent frames x
128 x 128 output pixels = 128 tokens = one attention block).  For each query block the model may
look at key blocks

1. inside a local spatial window of ``local_range x local_range`` blocks (any time slice), and
2. among those, the top-k by a cheap score: mean-pooled q . mean-pooled k / sqrt(d), softmaxed
   over the key blocks, with the top-k taken jointly over all (query block, key block) pairs of
   one query time slice and head (``k = int(S*S*topk_ratio) - 1`` for S spatial blocks).

A query block that selects nothing outputs zeros.  Three interchangeable kernels:

- ``flex``: ``torch.nn.attention.flex_attention`` with a ``BlockMask`` listing the selected key
  blocks (compiled on CUDA, so only the selected 128x128 tiles are computed);
- ``sdpa``: SDPA under the same mask expanded to tokens (exact reference, and the fallback where
  FlexAttention is missing; memory grows with Lq*Lk);
- ``dense``: plain SDPA over every key (no LCSA; the quality/speed baseline).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F

MODES = ("auto", "flex", "sdpa", "dense")


# --- token <-> window order -------------------------------------------------------------------------


def window_partition(x: torch.Tensor, grid: tuple[int, int, int], win: tuple[int, int, int]) -> torch.Tensor:
    """``(B, f*h*w, C)`` in (f, h, w) order -> ``(B, f*h*w, C)`` in window order (blocks of wf*wh*ww)."""
    b, _, c = x.shape
    f, h, w = grid
    wf, wh, ww = win
    x = x.view(b, f // wf, wf, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, f * h * w, c)


def window_reverse(x: torch.Tensor, grid: tuple[int, int, int], win: tuple[int, int, int]) -> torch.Tensor:
    b, _, c = x.shape
    f, h, w = grid
    wf, wh, ww = win
    x = x.view(b, f // wf, h // wh, w // ww, wf, wh, ww, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, f * h * w, c)


# --- block masks ------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _local_block_mask_cpu(nbh: int, nbw: int, local_range: int) -> torch.Tensor:
    r = torch.arange(nbh, device="cpu").repeat_interleave(nbw)
    c = torch.arange(nbw, device="cpu").repeat(nbh)
    half = local_range // 2
    r0, c0 = r - half, c - half  # sliding (not clamped) window: border blocks see fewer neighbours
    rows = (r[None, :] >= r0[:, None]) & (r[None, :] <= r0[:, None] + local_range - 1)
    cols = (c[None, :] >= c0[:, None]) & (c[None, :] <= c0[:, None] + local_range - 1)
    return rows & cols


_local_on_device: dict = {}


def local_block_mask(nbh: int, nbw: int, local_range: int, device) -> torch.Tensor:
    """``(S, S)`` bool over the S = nbh*nbw spatial blocks of one time slice (row-major); cached per device."""
    key = (nbh, nbw, local_range, str(device))
    m = _local_on_device.get(key)
    if m is None:
        if len(_local_on_device) > 64:
            _local_on_device.clear()
        m = _local_on_device[key] = _local_block_mask_cpu(nbh, nbw, local_range).to(device)
    return m


def topk_for(spatial_blocks: int, height: int, width: int, sparse_ratio: float, ref_pixels: int) -> int:
    """The top-k budget for one (head, query slice): ``int(S*S*topk_ratio) - 1`` with
    ``topk_ratio = sparse_ratio * ref_pixels / (H*W)`` (H, W: padded output size)."""
    ratio = sparse_ratio * ref_pixels / float(height * width)
    return max(1, int(spatial_blocks * spatial_blocks * ratio) - 1)


def draft_block_mask(
    q: torch.Tensor, k: torch.Tensor, block: int, local: torch.Tensor, topk: int
) -> torch.Tensor:
    """Which key blocks each query block attends to.

    ``q``: ``(B, H, Lq, d)``, ``k``: ``(B, H, Lk, d)``, both in window order (``block`` tokens per
    block; query and key time slices are whole multiples of the S spatial blocks of ``local``).
    Returns ``(B, H, Lq/block, Lk/block)`` bool.
    """
    b, nh, lq, d = q.shape
    lk = k.shape[2]
    qb, kb = lq // block, lk // block
    s = local.shape[0]
    qp = q.view(b, nh, qb, block, d).float().mean(3)
    kp = k.view(b, nh, kb, block, d).float().mean(3)
    scores = torch.matmul(qp, kp.transpose(-1, -2)) / math.sqrt(d)
    allowed = local.repeat(qb // s, kb // s)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    flat = probs.view(b, nh, qb // s, s * kb)
    kk = min(flat.shape[-1] - 1, topk)
    thresh = torch.topk(flat, kk + 1, dim=-1, largest=True, sorted=True).values[..., -1:]
    return (flat > thresh).view(b, nh, qb, kb)


# --- kernels ----------------------------------------------------------------------------------------


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def masked_sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, block: int) -> torch.Tensor:
    """Reference LCSA: SDPA under the block mask expanded to tokens; empty query blocks -> 0."""
    has_any = mask.any(-1, keepdim=True)  # (B, H, Qb, 1)
    m = (mask | ~has_any).repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    return out * has_any.repeat_interleave(block, dim=2).to(out.dtype)


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention  # noqa: F401
    except Exception:  # noqa: BLE001 - torch < 2.5 or a build without it
        return False
    return True


_compiled_flex = None


def _flex_fn(compiled: bool):
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def _mask_mod(mask: torch.Tensor, block: int):
    def mask_mod(b, h, q, k):
        return mask[b, h, q // block, k // block]

    return mask_mod


def flex_block_mask(mask: torch.Tensor, block: int, with_mask_mod: bool):
    """A FlexAttention ``BlockMask`` whose *full* blocks are exactly the selected ones.

    Compiled kernels only visit listed blocks. The eager (math) implementation ignores block
    sparsity and evaluates ``mask_mod`` per element, so for eager use the same mask is also
    given as a ``mask_mod``.
    """
    from torch.nn.attention.flex_attention import BlockMask

    b, nh, qb, kb = mask.shape
    counts = mask.sum(-1, dtype=torch.int32)
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    kwargs = {"BLOCK_SIZE": block, "mask_mod": _mask_mod(mask, block) if with_mask_mod else None}
    newer = {"seq_lengths": (qb * block, kb * block), "compute_q_blocks": False}  # torch >= 2.6 / 2.7
    zeros = torch.zeros_like(counts)
    try:
        return BlockMask.from_kv_blocks(zeros, order, counts, order, **kwargs, **newer)
    except TypeError:
        return BlockMask.from_kv_blocks(zeros, order, counts, order, **kwargs)


def flex_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, block: int, compiled: bool | None = None
) -> torch.Tensor:
    if compiled is None:
        compiled = q.is_cuda
    bm = flex_block_mask(mask, block, with_mask_mod=not compiled)
    if compiled:
        return _flex_fn(True)(q, k, v, block_mask=bm)
    with warnings.catch_warnings():  # the eager path is the CPU reference; its "use torch.compile" hint is noise
        warnings.simplefilter("ignore", UserWarning)
        return _flex_fn(False)(q, k, v, block_mask=bm)


def resolve_mode(mode: str, device: torch.device) -> str:
    mode = (mode or "auto").lower()
    if mode not in MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "auto":
        return "flex" if device.type == "cuda" and flex_available() else "sdpa"
    if mode == "flex" and not flex_available():
        return "sdpa"
    return mode


def lcsa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mode: str,
    block: int,
    local: torch.Tensor | None,
    topk: int,
    on_mask=None,
) -> torch.Tensor:
    """Self-attention over window-ordered ``(B, H, L, d)`` tensors with the chosen kernel
    (``on_mask``: called with the block mask, for tracing)."""
    if mode == "dense" or local is None:
        return dense_attention(q, k, v)
    mask = draft_block_mask(q, k, block, local, topk)
    if on_mask is not None:
        on_mask(mask)
    if mode == "flex":
        return flex_sparse_attention(q, k, v, mask, block)
    return masked_sdpa_attention(q, k, v, mask, block)
