"""FlashVSR speed on a GPU: the full-size model with random bf16 weights, streaming 512² -> 1024².

Random weights give real timings (same shapes, same kernels) and meaningless pictures. For each
variant the script streams LR frames already on the GPU through ``FlashVSRStream``:

- first-output latency: the first call (25 frames in -> 21 out: LQ projection, a 6-latent DiT step,
  decode, colour fix), wall time with a sync;
- steady state: ``--chunks`` calls of 8 frames after ``--warmup`` calls; FPS = frames / wall time,
  plus a per-stage split from CUDA events (LQ projection, DiT, decoder, colour fix);
- peak GPU memory (``max_memory_allocated``) over the whole run.

Variants (``--variants``, comma-separated): ``sparse`` (LCSA through FlexAttention), ``dense``
(full attention through SDPA), ``sdpa-masked`` (LCSA as a masked SDPA, the reference; memory
hungry), each optionally ``-compiled`` (``torch.compile`` of the dense block parts; FlexAttention
is always compiled on CUDA). Goal on an H100: >= 60 FPS steady, peak <= 24 GB (anchor: 31.2 FPS
reported for the official code).

Prints a short markdown table last. Exits 0 with a one-line note without CUDA, unless
``--device cpu --tiny`` (a smoke run of the script on the tiny config).

    python benchmarks/flashvsr_speed.py
    python benchmarks/flashvsr_speed.py --variants sparse-compiled --sparse-ratio 1.5 --chunks 20
    python benchmarks/flashvsr_speed.py --device cpu --tiny --size 64 --chunks 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live_upscale.backends.flashvsr import stream as stream_mod  # noqa: E402
from live_upscale.backends.flashvsr import TINY, WAN_1_3B, FlashVSRStream, StreamOptions, random_model  # noqa: E402
from live_upscale.backends.flashvsr import attention as A  # noqa: E402

DEFAULT_VARIANTS = "sparse,dense,sparse-compiled,dense-compiled"


class StageTimer:
    """Accumulates CUDA-event (or wall-clock) intervals around named calls; read after a sync."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.pairs: dict[str, list] = {}
        self.active = False

    def _mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def wrap(self, name: str, fn):
        def timed(*a, **k):
            if not self.active:
                return fn(*a, **k)
            t0 = self._mark()
            out = fn(*a, **k)
            self.pairs.setdefault(name, []).append((t0, self._mark()))
            return out

        return timed

    def ms(self) -> dict[str, float]:
        out = {}
        for name, pairs in self.pairs.items():
            if self.cuda:
                out[name] = sum(a.elapsed_time(b) for a, b in pairs)
            else:
                out[name] = sum((b - a) * 1000.0 for a, b in pairs)
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lr_frames(n: int, size: int, device: torch.device) -> torch.Tensor:
    """A smooth moving pattern, already on the device (no host copies in the timed region)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    base = torch.rand(1, 3, size // 8 + 4, size // 8 + 4, generator=g).to(device)
    base = F.interpolate(base, size=(size + 32, size + 32), mode="bicubic", align_corners=False).clamp(0, 1)
    return torch.cat([base[..., i % 32 : i % 32 + size, (i // 2) % 32 : (i // 2) % 32 + size] for i in range(n)])


def run_variant(model, variant: str, args, device: torch.device) -> dict:
    mode = variant.removesuffix("-compiled")
    attention = {"sparse": "flex", "dense": "dense", "sdpa-masked": "sdpa"}[mode]
    compiled = variant.endswith("-compiled")
    model.dit._fns = None
    if compiled:
        model.dit.compile_blocks()
    timer = StageTimer(device.type == "cuda")
    model.lq_proj.forward_stream = timer.wrap("lq", type(model.lq_proj).forward_stream.__get__(model.lq_proj))
    model.dit.forward_step = timer.wrap("dit", type(model.dit).forward_step.__get__(model.dit))
    model.decoder.decode = timer.wrap("decoder", type(model.decoder).decode.__get__(model.decoder))
    real_color = stream_mod.color_fix
    stream_mod.color_fix = timer.wrap("color", real_color)
    opts = StreamOptions(
        scale=args.scale, attention=attention, sparse_ratio=args.sparse_ratio, local_range=args.local_range,
        color_fix=args.color_fix,
    )
    s = FlashVSRStream(model, opts)
    n = 25 + 8 * (args.warmup + args.chunks)
    x = lr_frames(n, args.size, device)
    row = {"variant": variant, "attention": s.mode, "compiled": compiled}
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        y = s.push(x[:25])
        sync(device)
        row["first_ms"] = (time.perf_counter() - t0) * 1000.0
        row["first_frames"] = int(y.shape[0])
        i = 25
        for _ in range(args.warmup):  # compiles (if any) the steady-state shapes
            s.push(x[i : i + 8])
            i += 8
        sync(device)
        timer.active = True
        t0 = time.perf_counter()
        frames = 0
        finite = True
        for _ in range(args.chunks):
            y = s.push(x[i : i + 8])
            frames += y.shape[0]
            i += 8
        sync(device)
        wall = time.perf_counter() - t0
        finite = bool(torch.isfinite(y).all())
        stages = timer.ms()
        row.update(
            steady_fps=frames / wall,
            ms_per_chunk=wall * 1000.0 / args.chunks,
            **{f"{k}_ms": v / args.chunks for k, v in stages.items()},
            finite=finite,
            out_shape=tuple(y.shape[-2:]),
        )
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["kv_cache_mib"] = s.cache.nbytes() / 2**20
    except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others
        row["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    finally:
        stream_mod.color_fix = real_color
        for obj, name in ((model.lq_proj, "forward_stream"), (model.dit, "forward_step"), (model.decoder, "decode")):
            obj.__dict__.pop(name, None)
        model.dit._fns = None
    return row


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    head = "| variant | attention | first out ms (21 fr) | steady FPS | ms / 8 frames | DiT | LQ proj | decoder | colour | peak GiB | note |"
    lines = [head, "|" + "|".join(["---"] * 11) + "|"]
    for r in rows:
        note = r.get("error", "") or ("" if r.get("finite", True) else "non-finite output (random weights)")
        lines.append(
            f"| {r['variant']} | {r.get('attention', '-')} | {fmt(r.get('first_ms'), '.0f')} | {fmt(r.get('steady_fps'), '.1f')} "
            f"| {fmt(r.get('ms_per_chunk'), '.1f')} | {fmt(r.get('dit_ms'), '.1f')} | {fmt(r.get('lq_ms'), '.1f')} "
            f"| {fmt(r.get('decoder_ms'), '.1f')} | {fmt(r.get('color_ms'), '.1f')} | {fmt(r.get('peak_gib'), '.1f')} | {note} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512, help="square LR input size (default 512 -> 1024 at 2x)")
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--chunks", type=int, default=12, help="timed steady-state calls of 8 frames")
    p.add_argument("--warmup", type=int, default=2, help="untimed steady-state calls first")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--sparse-ratio", type=float, default=2.0)
    p.add_argument("--local-range", type=int, default=11)
    p.add_argument("--color-fix", default="adain", choices=["wavelet", "adain", "none"])
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="the tiny config (smoke runs of this script)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    return p


def bench(on_row=None, **options) -> list[dict]:
    """Build the model once and time each variant; one dict per variant (see ``run_variant``).

    ``options`` are the command-line options by their Python names (``variants="sparse,dense"``,
    ``chunks=12``, ``tiny=True``, ...); ``on_row(row)`` is called as each variant finishes."""
    args = _parser().parse_args([])
    for k, v in options.items():
        if not hasattr(args, k):
            raise TypeError(f"flashvsr_speed.bench: unknown option {k!r}")
        setattr(args, k, v)
    variants = [s.strip() for s in args.variants.split(",") if s.strip()]
    for v in variants:
        if v.removesuffix("-compiled") not in ("sparse", "dense", "sdpa-masked"):
            raise ValueError(f"unknown variant {v!r} (sparse, dense, sdpa-masked, each optionally -compiled)")
    device = torch.device(args.device)
    if not A.flex_available():
        print("note: this torch has no FlexAttention; 'sparse' falls back to masked SDPA")
    cfg = TINY if args.tiny else WAN_1_3B
    dtype = torch.bfloat16 if args.precision == "bf16" and device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    t0 = time.perf_counter()
    model = random_model(cfg, seed=0, device=device, dtype=dtype)
    params = model.param_count()
    print(
        f"device: {name}; torch {torch.__version__}; config {cfg.name} ({sum(params.values()) / 1e9:.2f} B params: "
        f"{', '.join(f'{k} {v / 1e6:.0f} M' for k, v in params.items())}); {str(dtype).removeprefix('torch.')}; "
        f"{args.size}² -> {round(args.size * args.scale)}²; sparse_ratio {args.sparse_ratio}, local {args.local_range}; "
        f"built in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    rows = []
    for v in variants:
        t0 = time.perf_counter()
        rows.append(run_variant(model, v, args, device))
        rows[-1]["wall_s"] = time.perf_counter() - t0
        if on_row is not None:
            on_row(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("flashvsr_speed: skipped (no CUDA device; pass --device cpu --tiny for a smoke run)")
        return 0
    if device.type == "cpu" and not args.tiny:
        print("flashvsr_speed: skipped (the full model on CPU is not a benchmark; add --tiny for a smoke run)")
        return 0
    opts = {k: v for k, v in vars(args).items() if k != "json"}

    def show(row):
        print(table([row]).splitlines()[-1] + f"  ({row['wall_s']:.0f} s incl. warm-up)", flush=True)

    try:
        rows = bench(on_row=show, **opts)
    except ValueError as e:
        print(e)
        return 2
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
