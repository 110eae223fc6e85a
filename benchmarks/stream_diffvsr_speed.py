"""Stream-DiffVSR speed: per-frame streaming vs the upstream whole-sequence approach (GPU).

Full-size random weights (official geometry: SD x4-upscaler UNet + ControlNet + temporal tiny AE;
random values, so the timing is real and the pictures are not), fp16, 512x512 input by default:

- streaming engine (``stream_diffvsr`` backend), per-frame latency (mean / p50 / p90) with a
  breakdown: flow, UNet + ControlNet x 4 steps, decoder (with the TPM feature encoder),
  the flow's share of the frame, peak GPU memory;
- scales: 2x (512² -> 256² -> 4x -> 1024², the 2x route) and 4x native (512² -> 2048²);
- flow estimators: ``lk`` (ours, no weights) and ``raft`` (torchvision RAFT-large, untrained
  weights, same cost); RAFT at HR (bicubic x4 frames, as upstream: the default `flow_at=auto`), LK at LR;
- optional ``--compile`` variants: torch.compile default and ``reduce-overhead`` (CUDA graphs);
- upstream-style whole sequence (``--sequence N`` frames): RAFT on bicubic x4-upscaled frames for
  all pairs up front, all latents allocated first, then the same per-frame denoise/decode; reports
  time per frame and peak memory (or OOM).

Prints a short markdown table last. Skips cleanly (exit 0) without CUDA unless ``--device cpu``
(CPU smoke runs use ``--weights tiny``).

    python benchmarks/stream_diffvsr_speed.py                     # H100/H200: the default table
    python benchmarks/stream_diffvsr_speed.py --scale 2 --flow lk --frames 50 --compile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Clock:
    """Intervals without syncing per frame: CUDA events on CUDA, perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def ms(self, a, b) -> float:
        if self.cuda:
            return a.elapsed_time(b)
        return (b - a) * 1000.0

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


def _wrap(obj, name: str, clock: Clock, log: list):
    fn = getattr(obj, name)

    def timed(*a, **k):
        s = clock.mark()
        out = fn(*a, **k)
        log.append((s, clock.mark()))
        return out

    setattr(obj, name, timed)


def _frames(n: int, size: int, device: torch.device) -> torch.Tensor:
    """A moving smooth pattern (so flow has something to find), (n,3,size,size) in [0,1]."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, size // 8 + 4, size // 8 + 4, generator=g)
    base = F.interpolate(base, size=(size + 64, size + 64), mode="bicubic", align_corners=False).clamp(0, 1)
    out = [base[..., 2 * i : 2 * i + size, i : i + size] for i in range(n)]
    return torch.cat(out).to(device)


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def bench_stream(args, device, scale: float, flow: str, compile_mode: str | None) -> dict:
    from live_upscale.backends.base import EngineConfig
    from live_upscale.backends.stream_diffvsr import StreamDiffVSRBackend

    opts = {"flow": flow, "allow_cpu": True, "seed": 0}
    if flow == "raft":
        opts["raft_weights"] = "random"
    if compile_mode:
        opts["compile"] = compile_mode
    eng = StreamDiffVSRBackend.load(EngineConfig(device, scale=scale, model=f"random:{args.weights}",
                                                 precision=args.precision, options=opts))
    clock = Clock(device)
    logs = {"flow": [], "denoise": [], "decode": []}
    _wrap(eng, "flow", clock, logs["flow"])
    _wrap(eng, "denoise", clock, logs["denoise"])
    _wrap(eng.vae, "decode", clock, logs["decode"])
    x = _frames(args.warmup + args.frames, args.size, device)
    for i in range(args.warmup):
        eng.process(x[i : i + 1])
    clock.sync()
    for v in logs.values():
        v.clear()
    _peak_reset(device)
    marks = []
    y = None
    for i in range(args.warmup, args.warmup + args.frames):
        s = clock.mark()
        y = eng.process(x[i : i + 1])
        marks.append((s, clock.mark()))
    clock.sync()
    per = [clock.ms(a, b) for a, b in marks]
    part = {k: sum(clock.ms(a, b) for a, b in v) / args.frames for k, v in logs.items()}
    row = {
        "variant": f"stream {flow}" + (f" {compile_mode}" if compile_mode else " eager"),
        "io": f"{args.size}²->{y.shape[-1]}²",
        "mean": statistics.fmean(per),
        "p50": statistics.median(per),
        "p90": sorted(per)[int(0.9 * (len(per) - 1))],
        "flow": part["flow"],
        "denoise": part["denoise"],
        "decode": part["decode"],
        "peak": _peak_gib(device),
        "finite": bool(torch.isfinite(y).all()),
    }
    row["share"] = row["flow"] / row["mean"] if row["mean"] else 0.0
    eng.close()
    return row


def bench_whole_sequence(args, device, scale: float) -> dict:
    """Upstream's shape of work: all HR flows first (RAFT on bicubic x4 frames), all latents up front."""
    from live_upscale.backends.base import EngineConfig
    from live_upscale.backends.stream_diffvsr import StreamDiffVSRBackend
    from live_upscale.backends.stream_diffvsr.flow import RaftFlow, flow_warp
    from live_upscale.ops.resample import out_size, resize

    eng = StreamDiffVSRBackend.load(EngineConfig(device, scale=4.0, model=f"random:{args.weights}",
                                                 precision=args.precision, options={"flow": "none", "allow_cpu": True}))
    raft = RaftFlow(device, 1.0, "random")
    n = args.sequence
    x = _frames(n, args.size, device)
    if scale != 4.0:
        x = resize(x, out_size(args.size, args.size, scale / 4.0), "bicubic").clamp(0, 1)
    clock = Clock(device)
    row = {"variant": "upstream whole-seq raft", "io": f"{args.size}²->{out_size(args.size, args.size, scale)[1]}²"}
    _peak_reset(device)
    try:
        with torch.inference_mode():
            s = clock.mark()
            up = [F.interpolate(x[i : i + 1] * 2 - 1, scale_factor=4, mode="bicubic") for i in range(n)]
            flows = [raft.estimate(up[i], up[i - 1]) for i in range(1, n)]  # RAFT at HR, every pair first
            f_end = clock.mark()
            lat = [torch.randn(1, 4, *x.shape[-2:], device=device, dtype=eng.dtype) for _ in range(n)]
            prev = None
            for i in range(n):
                lr = (x[i : i + 1] * 2 - 1).to(eng.dtype)
                warped = feats = None
                if prev is not None:
                    warped = flow_warp(prev.float(), flows[i - 1]).to(eng.dtype)
                    feats = eng.vae.temporal_features(warped)
                z = lat[i]
                for st, t in zip(eng.plan.steps, eng._t):
                    inp = torch.cat([z, lr], 1)
                    down = mid = None
                    if warped is not None:
                        down, mid = eng.controlnet(inp, t, encoder_hidden_states=eng.emb, controlnet_cond=warped, return_dict=False)
                    v = eng.unet(inp, t, encoder_hidden_states=eng.emb, down_block_additional_residuals=down,
                                 mid_block_additional_residual=mid, return_dict=False)[0]
                    z = eng.plan.step(v, st, z)
                prev = eng.vae.decode(z, feats)
            e = clock.mark()
        clock.sync()
        total = clock.ms(s, e)
        row.update(mean=total / n, flow=clock.ms(s, f_end) / n, peak=_peak_gib(device), note=f"{n} frames")
        row["share"] = row["flow"] / row["mean"]
    except torch.OutOfMemoryError:
        row.update(note=f"OOM at {n} frames", peak=_peak_gib(device))
    finally:
        eng.close()
        del raft
    return row


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    head = "| variant | in->out | ms/frame | p50 | p90 | flow ms | flow share | UNet+CN x4 ms | decoder ms | peak GiB | note |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        note = r.get("note", "" if r.get("finite", True) else "non-finite output (random weights)")
        lines.append(
            f"| {r['variant']} | {r['io']} | {_fmt(r.get('mean'))} | {_fmt(r.get('p50'))} | {_fmt(r.get('p90'))} | "
            f"{_fmt(r.get('flow'))} | {_fmt(r.get('share'), '.0%') if r.get('share') is not None else '-'} | "
            f"{_fmt(r.get('denoise'))} | {_fmt(r.get('decode'))} | {_fmt(r.get('peak'), '.2f')} | {note} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu (smoke runs)")
    ap.add_argument("--weights", choices=["full", "tiny"], default=None, help="random weights size (default: full on CUDA)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp16", "bf16", "fp32"])
    ap.add_argument("--size", type=int, default=512, help="input side (square)")
    ap.add_argument("--scale", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--flow", nargs="+", default=["lk", "raft"], choices=["lk", "raft", "none"])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="add torch.compile (default, reduce-overhead) variants")
    ap.add_argument("--sequence", type=int, default=8, help="frames for the whole-sequence baseline (0: skip)")
    return ap


def bench(on_row=None, **options) -> list[dict]:
    """The rows of the table (streaming variants, then the whole-sequence baseline per scale).

    ``options`` are the command-line options by their Python names (``scale=[2.0]``, ``flow=["lk"]``,
    ``device="cuda"``, ``weights="full"``, ...); ``on_row(row)`` is called as each row is measured.
    Needs diffusers; RAFT rows and the baseline are left out without torchvision."""
    args = _parser().parse_args([])
    for k, v in options.items():
        if not hasattr(args, k):
            raise TypeError(f"stream_diffvsr_speed.bench: unknown option {k!r}")
        setattr(args, k, v)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(args.device)
    args.weights = args.weights or ("full" if device.type == "cuda" else "tiny")
    import importlib.util

    if importlib.util.find_spec("torchvision") is None and ("raft" in args.flow or args.sequence > 1):
        print("torchvision missing: RAFT rows and the whole-sequence baseline are left out")
        args.flow = [f for f in args.flow if f != "raft"]
        args.sequence = 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; weights random:{args.weights}; precision {args.precision}")

    rows = []

    def add(row):
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for scale in args.scale:
        for flow in args.flow:
            modes = [None] + (["default", "reduce-overhead"] if args.compile else [])
            for mode in modes:
                try:
                    add(bench_stream(args, device, scale, flow, mode))
                except torch.OutOfMemoryError:
                    add({"variant": f"stream {flow} {mode or 'eager'}", "io": f"{args.size}² x{scale:g}", "note": "OOM"})
        if args.sequence > 1:
            add(bench_whole_sequence(args, device, scale))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print("stream_diffvsr_speed: skipped (no CUDA device; pass --device cpu --weights tiny for a smoke run)")
            return 0
        args.device = "cuda"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("stream_diffvsr_speed: skipped (no CUDA device)")
        return 0
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("stream_diffvsr_speed: skipped (diffusers missing: pip install -e '.[stream-diffvsr]')")
        return 0
    rows = bench(on_row=lambda r: print(table([r]).splitlines()[-1], flush=True), **vars(args))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
