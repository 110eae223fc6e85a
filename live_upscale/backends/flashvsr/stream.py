"""The FlashVSR streaming loop: any number of frames in per call, every frame out exactly once.

Schedule (frame indices from the start of the stream; L = latent frames produced so far):

- step 0: LR frames [0, 25) -> LQ tokens for 6 latent frames; decode with LR [0, 21) -> outputs 0..20;
- step s >= 1: LR frames [8s+17, 8s+25) -> 2 latent frames; outputs 8s+13 .. 8s+20.

So the first output needs 25 inputs, then every 8 inputs give 8 outputs; an output lags its input
by 4 frames plus the chunk wait. ``finish()`` repeats the last frame until the pending frames can
be decoded and emits exactly the frames that came in (the official scripts drop the tail unless
N = 8n-3). Memory is bounded: the LR buffer holds at most ~33 frames, the KV cache 3 window slices.

Sizes: frames are bicubic-upscaled by ``scale`` to ``round(H*s) x round(W*s)`` (``resize='bicubic'``:
torch, in float; ``'pil'``: the official preparation, Pillow bicubic on uint8), replicate-padded to
multiples of 128 (one attention block) and cropped back after decoding (``fit='pad'``); or, as
the official script, centre-cropped to multiples of 128 (``fit='crop'``: the output is that crop).

Given noise and tracing (parity checks, no monkeypatching): ``StreamOptions.noise`` is a tensor
``(1, 16, T, h, w)`` for the whole clip, consumed latent frame by latent frame as the official
pipeline slices its one per-clip tensor (or a callable ``(first_latent, shape) -> noise``);
given noise that runs out (a flushed tail past the clip it was drawn for) continues from the
seeded generator. ``FlashVSRStream.trace`` (a callable ``(name, tensor)``) receives
``lq_frames`` (each preprocessed batch, [-1, 1]), ``lq_tokens_call{c}``,
``dit_pred_call{c}``, ``mask_call{c}_layer{l}``, ``decoder_call{c}`` (raw decoder frames) and
``colorfix_call{c}`` (frames after the colour fix, [-1, 1]) of every DiT call ``c``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import attention as A
from .color import METHODS as COLOR_METHODS
from .color import color_fix
from .dit import KVCache
from .model import FlashVSRModel

log = logging.getLogger(__name__)


@dataclass
class StreamOptions:
    scale: float = 2.0
    attention: str = "auto"  # auto | flex | sdpa | dense
    sparse_ratio: float | None = None  # None: the config's (2.0)
    local_range: int | None = None  # None: the config's (11)
    color_fix: str = "adain"  # adain (official v1.1) | wavelet | none
    seed: int = 0
    rebase_every: int = 512  # latent frames between RoPE rebases (0: every step)
    decoder_latents_per_pass: int = 2  # decoder peak-memory knob (exact for any value)
    resize: str = "bicubic"  # bicubic (torch, float) | pil (official: Pillow bicubic on uint8)
    fit: str = "pad"  # pad (to 128 multiples, cropped back) | crop (official: centre crop to 128 multiples)
    noise: Any = None  # given noise: (1, 16, T, h, w) for the clip, or callable (first_latent, shape) -> noise

    def validate(self) -> None:
        if self.resize not in RESIZES:
            raise ValueError(f"unknown resize {self.resize!r}; choose one of {', '.join(RESIZES)}")
        if self.fit not in FITS:
            raise ValueError(f"unknown fit {self.fit!r}; choose one of {', '.join(FITS)}")
        if self.color_fix not in COLOR_METHODS:
            raise ValueError(f"unknown colour fix {self.color_fix!r}; choose one of {', '.join(COLOR_METHODS)}")
        if self.attention.lower() not in A.MODES:
            raise ValueError(f"unknown attention {self.attention!r}; choose one of {', '.join(A.MODES)}")
        if not 1.0 <= self.scale <= 8.0:
            raise ValueError(f"scale {self.scale} out of range 1..8")


RESIZES = ("bicubic", "pil")
FITS = ("pad", "crop")


def pil_bicubic(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The official preparation: ``(N, 3, h, w)`` [0, 1] -> uint8 -> Pillow ``BICUBIC`` to ``size`` -> [0, 1]."""
    import numpy as np
    from PIL import Image

    u8 = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = [np.asarray(Image.fromarray(f).resize((size[1], size[0]), Image.BICUBIC), np.uint8) for f in u8]
    return torch.from_numpy(np.stack(out)).to(frames.device).permute(0, 3, 1, 2).float() / 255.0


def _out_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


class FlashVSRStream:
    """One video stream through a prepared :class:`FlashVSRModel` (which it owns while streaming)."""

    def __init__(self, model: FlashVSRModel, options: StreamOptions | None = None):
        self.model = model
        self.cfg = model.cfg
        self.opts = options or StreamOptions()
        self.opts.validate()
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.mode = A.resolve_mode(self.opts.attention, self.device)
        self.sparse_ratio = self.opts.sparse_ratio if self.opts.sparse_ratio is not None else self.cfg.sparse_ratio
        self.local_range = self.opts.local_range if self.opts.local_range is not None else self.cfg.local_range
        self.cache = KVCache(self.cfg.num_layers)
        self.trace: Callable[[str, torch.Tensor], None] | None = None
        self.reset()

    # --- state ------------------------------------------------------------------------------------

    def reset(self) -> None:
        self.model.reset_streams()
        self.cache.clear()
        self._frames: list[torch.Tensor] = []  # preprocessed LR frames (3, Hp, Wp), [-1, 1]
        self._base = 0  # stream index of _frames[0]
        self._last: torch.Tensor | None = None  # last real frame (for tail padding)
        self.frames_in = 0
        self.frames_out = 0
        self.steps = 0
        self.rebases = 0
        self.in_size: tuple[int, int] | None = None
        self._gen = torch.Generator(device=self.device).manual_seed(int(self.opts.seed))

    @property
    def latents_done(self) -> int:
        c = self.cfg
        return 0 if self.steps == 0 else c.first_latents + c.step_latents * (self.steps - 1)

    def _latents_after(self, step: int) -> int:
        c = self.cfg
        return c.first_latents + c.step_latents * step

    def _frames_needed(self, step: int) -> int:
        """LR frames that must exist before ``step`` can run."""
        return 1 + self.cfg.frames_per_latent * self._latents_after(step)

    def _outputs_after(self, step: int) -> int:
        fpl = self.cfg.frames_per_latent
        return fpl * self._latents_after(step) - (fpl - 1)

    def pending(self) -> int:
        """Frames pushed but not yet emitted."""
        return self.frames_in - self.frames_out

    def cache_bytes(self) -> int:
        lq = sum(t.numel() * t.element_size() for t in (self.model.lq_proj.cache1, self.model.lq_proj.cache2) if t is not None)
        dec = sum(t.numel() * t.element_size() for t in self.model.decoder.mem if t is not None)
        buf = sum(t.numel() * t.element_size() for t in self._frames)
        return self.cache.nbytes() + lq + dec + buf

    # --- geometry ---------------------------------------------------------------------------------

    def _geometry(self, h: int, w: int) -> None:
        m = self.cfg.pad_multiple
        self.in_size = (h, w)
        self.scaled = _out_size(h, w, self.opts.scale)  # the bicubic-upscaled frame
        H, W = self.scaled
        self.crop = (0, 0)
        if self.opts.fit == "crop":
            tH, tW = (H // m) * m, (W // m) * m
            if not tH or not tW:
                raise ValueError(f"fit=crop: the upscaled frame {W}x{H} is smaller than one {m}x{m} attention block")
            self.crop = ((H - tH) // 2, (W - tW) // 2)
            H, W = tH, tW
        self.out_size = (H, W)
        self.padded = (math.ceil(H / m) * m, math.ceil(W / m) * m)

    def _preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(self.device, torch.float32)
        if self.opts.resize == "pil":
            x = pil_bicubic(x, self.scaled)
        else:
            x = F.interpolate(x, size=self.scaled, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
        H, W = self.out_size
        t, left = self.crop
        if (H, W) != self.scaled:
            x = x[..., t : t + H, left : left + W]
        Hp, Wp = self.padded
        if (Hp, Wp) != (H, W):
            x = F.pad(x, (0, Wp - W, 0, Hp - H), mode="replicate")
        x = (x * 2.0 - 1.0).to(self.dtype)
        if self.trace:
            self.trace("lq_frames", x)
        return x

    def _noise(self, first: int, shape: tuple) -> torch.Tensor:
        given = self.opts.noise
        if given is None:
            return torch.randn(shape, generator=self._gen, device=self.device, dtype=torch.float32)
        if callable(given):
            z = given(first, shape)
        else:
            if first + shape[2] > given.shape[2]:
                if first < given.shape[2]:
                    raise ValueError(f"given noise ends at latent {given.shape[2]}, inside the call for latents {first}..")
                log.info("flashvsr: given noise covers %d latent frames; latents %d.. come from the generator", given.shape[2], first)
                return torch.randn(shape, generator=self._gen, device=self.device, dtype=torch.float32)
            z = given[:, :, first : first + shape[2]]
        z = torch.as_tensor(z).to(self.device, torch.float32)
        if tuple(z.shape) != tuple(shape):
            raise ValueError(f"given noise for latents {first}.. is {tuple(z.shape)}, the model needs {tuple(shape)}")
        return z

    # --- the step ---------------------------------------------------------------------------------

    def _window(self, a: int, b: int) -> torch.Tensor:
        """LR frames [a, b) as ``(1, 3, b-a, Hp, Wp)``."""
        xs = self._frames[a - self._base : b - self._base]
        return torch.stack(xs, dim=1)[None]

    @torch.inference_mode()
    def _step(self) -> torch.Tensor:
        c, s = self.cfg, self.steps
        fpl = c.frames_per_latent
        lat0 = self.latents_done
        lat1 = self._latents_after(s)
        f = lat1 - lat0
        lq_a = 0 if s == 0 else fpl * lat0 + 1
        lq_b = fpl * lat1 + 1
        out_a, out_b = self.frames_out, self._outputs_after(s)
        trace = self.trace
        tokens = self.model.lq_proj.forward_stream(self._window(lq_a, lq_b))
        if trace and tokens:
            trace(f"lq_tokens_call{s}", tokens[0])
        Hp, Wp = self.padded
        shape = (1, c.in_dim, f, Hp // c.vae_stride, Wp // c.vae_stride)
        noise = self._noise(lat0, shape).to(self.dtype)
        pred = self.model.dit.forward_step(
            noise,
            tokens[0] if tokens else None,
            self.cache,
            mode=self.mode,
            local_range=self.local_range,
            sparse_ratio=self.sparse_ratio,
            on_mask=(lambda layer, m: trace(f"mask_call{s}_layer{layer}", m[0])) if trace else None,
        )
        if trace:
            trace(f"dit_pred_call{s}", pred)
        latents = noise - pred
        cond = self._window(out_a, out_b)  # LQ frames of exactly the frames this step decodes
        y = self.model.decoder.decode(latents, cond, self.opts.decoder_latents_per_pass)[0]  # (F, 3, Hp, Wp)
        if trace:
            trace(f"decoder_call{s}", y)
        lq = cond[0].transpose(0, 1)
        H, W = self.out_size
        parts = []
        for a in range(0, y.shape[0], 8):  # fp32 colour fix in slices of 8 frames (bounded memory)
            # on the real picture only: the padding must not enter the colour statistics
            fixed = color_fix(y[a : a + 8, :, :H, :W].float() * 2.0 - 1.0, lq[a : a + 8, :, :H, :W].float(), self.opts.color_fix)
            if trace:
                trace(f"colorfix_call{s}", fixed)
            parts.append(fixed.add_(1.0).mul_(0.5).clamp_(0.0, 1.0))
        y = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.steps += 1
        self.frames_out = out_b
        # drop LR frames no later step reads (the next step reads from min(next LQ start, next output))
        keep_from = min(fpl * lat1 + 1, out_b)
        drop = keep_from - self._base
        if drop > 0:
            del self._frames[:drop]
            self._base = keep_from
        every = self.opts.rebase_every
        if self.cache.t_next - self.cache.cached_latents >= max(every, 1):
            self.cache.rebase(self.model.dit.rope)
            self.rebases += 1
        return y

    # --- transactions: a failed call (e.g. out of memory) leaves the stream as it was -------------

    def _snapshot(self) -> tuple:
        lq, dec, c = self.model.lq_proj, self.model.decoder, self.cache
        return (
            list(self._frames), self._base, self._last, self.frames_in, self.frames_out, self.steps, self.rebases,
            list(c.k), list(c.v), c.t_next, c.cached_latents, lq.cache1, lq.cache2, list(dec.mem), dec.started,
            self._gen.get_state(),
        )

    def _restore(self, s: tuple) -> None:
        lq, dec, c = self.model.lq_proj, self.model.decoder, self.cache
        (self._frames, self._base, self._last, self.frames_in, self.frames_out, self.steps, self.rebases,
         c.k, c.v, c.t_next, c.cached_latents, lq.cache1, lq.cache2, dec.mem, dec.started, gen) = s  # fmt: skip
        self._gen.set_state(gen)

    # --- public -----------------------------------------------------------------------------------

    def _empty(self) -> torch.Tensor:
        H, W = self.out_size if self.in_size else (0, 0)
        return torch.zeros((0, 3, H, W), device=self.device)

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` float [0, 1] -> the ``(M, 3, H, W)`` float32 frames that became ready."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected (N,3,H,W) frames, got {tuple(frames.shape)}")
        size = (int(frames.shape[-2]), int(frames.shape[-1]))
        if self.in_size != size:
            if self.frames_in:
                log.info("flashvsr: input size %s -> %s: stream restarted (%d buffered frames dropped)", self.in_size, size, self.pending())
            self.reset()
            self._geometry(*size)
        if frames.shape[0] == 0:
            return self._empty()
        snap = self._snapshot()
        try:
            outs, i, n = [], 0, frames.shape[0]
            while i < n:  # a long batch is taken step by step: the LR buffer stays small
                take = max(1, min(n - i, self._frames_needed(self.steps) - self.frames_in))
                x = self._preprocess(frames[i : i + take])
                self._frames.extend(x.unbind(0))
                self._last = self._frames[-1]
                self.frames_in += take
                i += take
                while self.frames_in >= self._frames_needed(self.steps):
                    outs.append(self._step())
        except BaseException:
            self._restore(snap)
            raise
        return torch.cat(outs) if outs else self._empty()

    def finish(self) -> torch.Tensor | None:
        """End of stream: pad with the last frame, emit the frames still pending, then reset."""
        n = self.frames_in
        if n == 0 or self.frames_out >= n:
            self.reset()
            return None
        snap = self._snapshot()
        try:
            outs = []
            avail = self._base + len(self._frames)
            while self.frames_out < n:
                need = self._frames_needed(self.steps)
                while avail < need:
                    self._frames.append(self._last)
                    avail += 1
                outs.append(self._step())
        except BaseException:
            self._restore(snap)
            raise
        y = torch.cat(outs)
        y = y[: y.shape[0] - (self.frames_out - n)]
        self.reset()
        return y
