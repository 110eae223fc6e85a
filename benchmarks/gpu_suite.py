"""Every GPU claim of the project, checked in one command, most important first, inside a time budget.

    python3 benchmarks/gpu_suite.py                       # on the GPU machine: --budget 500 (seconds)
    python benchmarks/gpu_suite.py --device cpu --tiny    # the same orchestration, tiny models, CPU (CI)
    python benchmarks/gpu_suite.py --list                 # the parts, in order, with expected seconds
    python benchmarks/gpu_suite.py --only sr-speed-eager,td-interop
    python benchmarks/gpu_suite.py --record out/gpu_suite.json   # append a run's rows to RESULTS.md

Parts, in priority order (``--list``): ``pytest -m gpu``; every backend end to end on CUDA at 512² ->
1024² (classic; realesrgan RRDB x2plus and Compact 2x; FlashVSR and Stream-DiffVSR at full size; all
with random weights of the real architectures), with and without the stabilizer, in fp16 and bf16,
checked for output shape, dtype, device, range and finiteness (and, frame-by-frame backends, the error
against fp32); sr_speed against the reference loop (eager, then reduce-overhead); FlashVSR sparse vs
dense; Stream-DiffVSR streaming vs the upstream whole-sequence loop; the stabilizer's cost; the
TouchDesigner adapter's overhead on CUDA buffers; a 2,000-frame soak per backend; sr_speed with
max-autotune and TensorRT last. The parts call the other benchmark scripts' functions.

Each part runs in its own process (forked from a server that has torch imported, so a start costs
milliseconds) in its own process group, with a time limit of ``min(its cap, budget left)``: a hang, a
crash or a poisoned CUDA context ends that part only, and is recorded. A part starts only when the
budget left covers its minimum; the others are recorded as skipped. Rows are written as they are
measured, so a part stopped at its limit keeps what it had.

Missing packages (pydantic, spandrel, diffusers on the GPU machine) are installed from ``.whl/``
(``benchmarks/gpu_wheels.sh``) with ``pip install --no-index --no-deps --target`` into a temporary
folder that goes on ``sys.path`` and ``PYTHONPATH``. Nothing needs the network or PyAV.

Output: ``gpu_suite.json`` (every part, status, seconds, rows, errors), ``gpu_suite_rows.md`` (rows for
``benchmarks/RESULTS.md``: ``| date | GPU | command | case | ours | reference | speedup |``) and
``gpu_suite.log`` (each part's output), in ``$OUT`` when it is set, else beside ``--json``. The rows
and a summary of the parts are printed last.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
for _p in (str(REPO), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

NEEDED = ("pydantic", "spandrel", "diffusers")  # what the GPU machine lacks (see gpu_wheels.sh)
RESULTS = BENCH / "RESULTS.md"
LOG_TAIL_BYTES = 200_000  # per part, in gpu_suite.log


# --- parts --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    name: str
    what: str
    est_s: float  # expected seconds on an H100/H200, start-up and compiles included (an estimate: see README)
    cap_s: float  # hard limit for this part
    min_s: float  # not started with less budget left than this
    fn: str = ""  # "function" of this module or "module:function", called as fn(ctx, *args) in a forked worker
    args: tuple = ()
    cmd: str = ""  # or: a function of this module giving an external command line (pytest)

    def resolve(self, attr: str) -> Callable:
        mod, _, name = getattr(self, attr).rpartition(":")
        return getattr(importlib.import_module(mod) if mod else sys.modules[__name__], name)


@dataclass
class Opts:
    device: str = "cuda"
    tiny: bool = False


class Ctx:
    """What a part gets: the options, the device, a scratch folder, and ``emit`` for its rows."""

    def __init__(self, opts: Opts, part: str, rows_path: Path, tmp: Path):
        self.opts, self.part, self.rows_path, self.tmp = opts, part, rows_path, tmp
        self.tiny = opts.tiny
        self.device = opts.device

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def emit(self, case: str, ours: str, reference: str = "-", speedup: float | None = None, status: str = "ok",
             **extra) -> dict:
        row = {"part": self.part, "case": case, "ours": ours, "reference": reference,
               "speedup": None if speedup is None else float(speedup), "status": status,
               "extra": _jsonable(extra)}
        with open(self.rows_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{self.part}] {status}: {case}: {ours} | {reference}", flush=True)
        return row


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _sync(ctx: Ctx) -> None:
    import torch

    if ctx.cuda:
        torch.cuda.synchronize()


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


# ---- 1. pytest -m gpu -----------------------------------------------------------------------------------------


def gpu_test_files() -> list[str]:
    """Test files holding GPU tests (only those are collected: other files may import what this machine lacks)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(errors="replace"))


def pytest_cmd(opts: Opts) -> list[str]:
    return [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider", *gpu_test_files()]


def pytest_rows(junit: Path, part: str) -> list[dict]:
    """One row summarising a junit report (pass/fail/skip counts; failing test names in ``extra``)."""
    import xml.etree.ElementTree as ET

    cases = ET.parse(junit).getroot().iter("testcase")
    n = {"passed": 0, "failed": 0, "skipped": 0}
    failed = []
    for c in cases:
        tags = {child.tag for child in c}
        if tags & {"failure", "error"}:
            n["failed"] += 1
            failed.append(f"{c.get('classname')}::{c.get('name')}")
        elif "skipped" in tags:
            n["skipped"] += 1
        else:
            n["passed"] += 1
    ours = f"{n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped"
    return [{"part": part, "case": "pytest -m gpu (" + ", ".join(gpu_test_files()) + ")", "ours": ours,
             "reference": "-", "speedup": None, "status": "FAIL" if n["failed"] else "ok",
             "extra": {"failed": failed, **n}}]


# ---- 2. every backend end to end ----------------------------------------------------------------------------


def _realesrgan_models(ctx: Ctx) -> dict[str, str]:
    import torch
    import sr_speed

    out = {}
    for name in ("rrdb_x2plus", "compact_x2"):
        path = ctx.tmp / f"{name}.pth"
        torch.save((sr_speed.TINY if ctx.tiny else sr_speed.MODELS)[name](), path)
        out[name] = str(path)
    return out


def e2e_specs(ctx: Ctx, backend: str) -> list[tuple[str, str | None, dict]]:
    """(label, model, backend_options) per model a backend is checked with."""
    if backend == "classic":
        return [("lanczos", None, {})]
    if backend == "realesrgan":
        return [(k, v, {}) for k, v in _realesrgan_models(ctx).items()]
    if backend == "flashvsr":  # full-size random weights through the node; tiny: dense attention (no CPU compile)
        return [("full random" if not ctx.tiny else "tiny random", "tiny,config=full" if not ctx.tiny
                 else "tiny,attention=dense", {})]
    if backend == "stream_diffvsr":
        return [("full random" if not ctx.tiny else "tiny random", "random:tiny" if ctx.tiny else "random:full",
                 {"flow": "lk"})]
    raise ValueError(backend)


def e2e_backend(ctx: Ctx, backend: str) -> None:
    """Stream a moving scene through the node; check every output; time ms/frame; fp32 is the reference."""
    import torch
    from live_upscale import UpscaleNode
    from stabilizer_cost import frames as moving_frames

    size = 16 if ctx.tiny else 512
    want_hw = (2 * size, 2 * size)
    temporal = backend in ("flashvsr", "stream_diffvsr")
    if backend == "flashvsr":
        calls = [25, 8] if ctx.tiny else [25, 8, 8]  # the first chunk, then steady chunks
    elif backend == "stream_diffvsr":
        calls = [1] * (2 if ctx.tiny else 6)
    else:
        calls = [1] * (3 if ctx.tiny else 10)
    # the node bypasses the stabilizer after temporal engines; on the GPU that path is run too
    stabs = (0.0,) if temporal and ctx.tiny else (0.0, 1.0)
    # fp32 last: the reference of the half-precision rows of frame-by-frame backends (no such claim for random
    # diffusion weights). On CPU, bf16 against fp32 keeps that comparison exercised (fp16 convs are GPU work).
    if temporal:
        precisions = ["fp16", "bf16"] if ctx.cuda else ["fp32"]
    else:
        precisions = (["fp16", "bf16"] if ctx.cuda else ["bf16"]) + ["fp32"]
    xs = torch.cat(moving_frames(sum(calls), size, size, "cpu")).to(ctx.device)
    dev_type = torch.device(ctx.device).type
    for label, model, options in e2e_specs(ctx, backend):
        runs: dict[tuple[str, float], dict] = {}
        for prec in precisions:
            node = None
            try:
                node = UpscaleNode(backend=backend, model=model, scale=2.0, device=ctx.device, precision=prec,
                                   download=False, backend_options=options)
                eng = node.load()
                raw: list[tuple] = []
                real = eng.process

                def spy(x, real=real, raw=raw):
                    y = real(x)
                    raw.append((tuple(y.shape), y.dtype, y.device.type))
                    return y

                eng.process = spy  # what the engine itself returns: the node would resize a wrong size away
                for stab in stabs:
                    node.update(stabilize=stab)
                    node.reset()
                    raw.clear()
                    outs, problems = [], []
                    i, done_before, t_start = 0, 0, time.perf_counter()
                    for k, n in enumerate(calls):
                        if k == 1:  # time everything after the first call (first chunk, allocation, autotuning)
                            _sync(ctx)
                            t_start, done_before = time.perf_counter(), sum(o.shape[0] for o in outs)
                        outs.append(node.process(xs[i : i + n]))
                        i += n
                    _sync(ctx)
                    dt = time.perf_counter() - t_start
                    timed = sum(o.shape[0] for o in outs) - done_before
                    tail = node.flush()
                    if tail is not None:
                        outs.append(tail)
                    y = torch.cat([o for o in outs if o.shape[0]])
                    if y.shape[0] != xs.shape[0]:
                        problems.append(f"{y.shape[0]} frames out for {xs.shape[0]} in")
                    if tuple(y.shape[-2:]) != want_hw:
                        problems.append(f"output {tuple(y.shape[-2:])}, want {want_hw}")
                    bad = {f"{r[0]} {r[1]} {r[2]}" for r in raw
                           if r[0][0] and (r[0][-2:] != want_hw or r[1] != torch.float32 or r[2] != dev_type)}
                    if bad:
                        problems.append(f"engine returned {sorted(bad)[:2]} (want float32 {want_hw} on {dev_type})")
                    if y.dtype != torch.float32 or y.device.type != dev_type:
                        problems.append(f"node output {y.dtype} on {y.device}")
                    if not bool(torch.isfinite(y).all()):
                        problems.append("non-finite output")
                    elif float(y.min()) < 0 or float(y.max()) > 1:
                        problems.append(f"output outside [0,1] ({float(y.min()):.3f}..{float(y.max()):.3f})")
                    compute = getattr(getattr(eng, "stream", None), "dtype", None) or getattr(eng, "dtype", None)
                    runs[(prec, stab)] = dict(y=y, ms=dt * 1000 / max(1, timed), problems=problems, extra={
                        "engine": eng.describe(), "compute_dtype": compute, "frames": int(y.shape[0]),
                        "stabilizer": "bypassed (temporal backend)" if temporal and stab else stab})
            except Exception as e:  # noqa: BLE001 - one failing precision must not hide the others
                traceback.print_exc()
                ctx.emit(f"e2e {backend} {label} {prec} {size}²->{want_hw[0]}²", "error", "-", None, "FAIL",
                         error=_one_line(e))
            finally:
                if node is not None:
                    node.close()
                if ctx.cuda:
                    torch.cuda.empty_cache()
        for (prec, stab), run in runs.items():
            ref = runs.get(("fp32", stab)) if prec != "fp32" else None
            if prec == "fp32" and not temporal:
                continue  # the reference column of the rows above
            problems, extra = list(run["problems"]), dict(run["extra"])
            reference, speedup = "-", None
            if ref is not None:
                err = (run["y"] - ref["y"]).abs()
                emax, emean = float(err.max()), float(err.mean())
                # README: fp16 within 2e-2 max / 2e-3 mean of fp32; bf16 (3 fewer mantissa bits, no claim): 4x that
                tol = (2e-2, 2e-3) if prec == "fp16" else (8e-2, 8e-3)
                if stab == 0 and (emax > tol[0] or emean > tol[1]):
                    problems.append(f"error vs fp32 {emax:.4f} max / {emean:.5f} mean > {tol[0]} / {tol[1]}")
                extra.update(err_max=emax, err_mean=emean)
                reference, speedup = f"fp32 {ref['ms']:.2f} ms/frame", ref["ms"] / run["ms"]
            ctx.emit(f"e2e {backend} {label} {prec} stabilize={stab:g} {size}²->{want_hw[0]}²",
                     f"{run['ms']:.2f} ms/frame", reference, speedup, "FAIL" if problems else "ok",
                     problems=problems, **extra)


# ---- 3. sr_speed ---------------------------------------------------------------------------------------------


def sr_speed_part(ctx: Ctx, mode: str) -> None:
    import sr_speed

    if mode == "tensorrt" and importlib.util.find_spec("torch_tensorrt") is None:
        ctx.emit("sr_speed compile=tensorrt", "not run: torch-tensorrt is not installed here", status="n/a")
        return
    where = "cuda" if ctx.cuda else "cpu"
    # tiny compile modes: Compact only (dynamo tracing the RRDB on a shared CPU adds nothing the Compact does not)
    # compile modes: Compact first, so a part stopped at its limit still has a row
    models = ("compact_x2",) if ctx.tiny and mode != "off" else \
        tuple(sr_speed.MODELS) if mode == "off" else ("compact_x2", "rrdb_x2plus")
    kw = dict(models=models, compile_modes=(mode,), device=ctx.device, tiny=ctx.tiny, hosts=False,
              sizes=("24x16",) if ctx.tiny else ("512x512",), frames=2 if ctx.tiny else 100,
              batch=(4 if mode == "off" else 1))
    if not ctx.cuda and mode != "off":
        kw["backend_options"] = {"compile_backend": "eager"}  # dynamo for real, no C compiler (CPU smoke run)

    def row(r):
        if r["path"].startswith("reference"):
            return
        case = f"sr_speed {r['model']} {r['size']}->2x, {r['path'].split(' (warm-up')[0]}"
        peak = f", peak {r['peak']:.2f} GiB" if r["peak"] is not None else ""
        ctx.emit(case, f"{1000 / r['ms']:.1f} FPS{peak}", f"{1000 / r['ref_ms']:.1f} FPS (bf16 eager, sync per frame)"
                 if where == "cuda" else f"{1000 / r['ref_ms']:.1f} FPS (fp32 eager)", r["ref_ms"] / r["ms"],
                 err_vs_fp32=r["err"], path=r["path"])

    sr_speed.bench(on_row=row, **kw)


# ---- 4. FlashVSR ---------------------------------------------------------------------------------------------


def flashvsr_part(ctx: Ctx) -> None:
    import flashvsr_speed

    kw = dict(variants="dense", size=32, chunks=1, warmup=0, tiny=True) if ctx.tiny else \
        dict(variants="sparse,dense", size=512, chunks=12, warmup=2)
    rows = {}

    def row(r):
        rows[r["variant"]] = r
        if "error" in r:
            ctx.emit(f"flashvsr {r['variant']}", "error", status="FAIL", **r)
            return
        peak = f", peak {r['peak_gib']:.1f} GiB" if r.get("peak_gib") is not None else ""
        ours = f"{r['steady_fps']:.1f} FPS, first 21 frames {r['first_ms']:.0f} ms{peak}"
        dense = rows.get("dense")
        ref, sp = "-", None
        if r["variant"] != "dense" and dense and "error" not in dense:
            ref, sp = f"dense {dense['steady_fps']:.1f} FPS", r["steady_fps"] / dense["steady_fps"]
        status = "ok" if r.get("finite", True) else "FAIL"
        ctx.emit(f"flashvsr {r['variant']} ({r['attention']}) {kw['size']}²->{2 * kw['size']}² steady, 8 frames/call",
                 ours, ref, sp, status, **r)

    # dense first, so the sparse row can name it as its reference
    order = [v for v in kw["variants"].split(",") if v == "dense"] + [v for v in kw["variants"].split(",") if v != "dense"]
    flashvsr_speed.bench(on_row=row, device=ctx.device, **{**kw, "variants": ",".join(order)})


# ---- 5. Stream-DiffVSR ---------------------------------------------------------------------------------------


def stream_diffvsr_part(ctx: Ctx) -> None:
    import stream_diffvsr_speed

    kw = dict(weights="tiny", size=16, frames=2, warmup=1, sequence=0) if ctx.tiny else \
        dict(weights="full", size=512, frames=20, warmup=3, sequence=8)
    stream = {}

    def row(r):
        peak = f", peak {r['peak']:.2f} GiB" if r.get("peak") is not None else ""
        if r["variant"].startswith("stream"):
            stream.update(r)
            if "mean" not in r:
                ctx.emit(f"stream_diffvsr {r['variant']} {r['io']}", r.get("note", "error"), status="FAIL", **r)
                return
            ctx.emit(f"stream_diffvsr {r['variant']} {r['io']}, 4 steps, per frame",
                     f"{r['mean']:.1f} ms/frame (p90 {r['p90']:.1f}){peak}", "-", None,
                     "ok" if r.get("finite", True) else "FAIL", **r)
        else:
            ours = stream.get("mean")
            if "mean" not in r or ours is None:
                ctx.emit(f"stream_diffvsr ours vs {r['variant']} {r['io']}", f"{ours or 0:.1f} ms/frame",
                         r.get("note", "-"), None, "ok", **r)
                return
            ctx.emit(f"stream_diffvsr streaming vs {r['variant']} {r['io']}",
                     f"{ours:.1f} ms/frame, peak {stream.get('peak') or 0:.2f} GiB",
                     f"{r['mean']:.1f} ms/frame{peak} ({r.get('note', '')})", r["mean"] / ours, "ok", **r)

    stream_diffvsr_speed.bench(on_row=row, device=ctx.device, scale=[2.0], flow=["lk"], **kw)


# ---- 6. the stabilizer's cost ---------------------------------------------------------------------------------


def stabilizer_part(ctx: Ctx) -> None:
    import stabilizer_cost

    import torch
    import sr_speed

    size = "16x16" if ctx.tiny else "512x512"
    model = None  # on the GPU: a random-weight realesr-animevideov3 (../shared does not travel there)
    if ctx.tiny:
        model = ctx.tmp / "compact_x4.pth"
        torch.save(sr_speed.compact_state_dict(scale=4, nf=8, nconv=2), model)
    for r in stabilizer_cost.measure(size, 5 if ctx.tiny else 40, ctx.device, model):
        ctx.emit(f"stabilizer cost, {r['backend']} {size}->2x", f"{r['on_ms']:.2f} ms/frame with stabilizer",
                 f"{r['off_ms']:.2f} ms/frame without", r["off_ms"] / r["on_ms"], **{**r, "cost": f"{100 * r['cost']:+.0f}%"})


# ---- 7. TouchDesigner interop -----------------------------------------------------------------------------------


def td_part(ctx: Ctx) -> None:
    import sr_speed

    size = 32 if ctx.tiny else 1024
    r = sr_speed.td_interop_overhead(size=size, frames=3 if ctx.tiny else 100, device=ctx.device)
    ok = not ctx.cuda or r["overhead_ms"] < 2.0  # the GPU test's bound; the goal is 0.3 ms
    ctx.emit(f"TouchDesigner Script TOP on {'CUDA' if ctx.cuda else 'host'} buffers, {size}² BGRA u8 -> "
             f"{2 * size}², classic fast: adapter overhead {r['overhead_ms']:.3f} ms/frame (goal 0.3)",
             f"cook {r['cook_ms']:.3f} ms/frame", f"node.cook {r['node_ms']:.3f} + TD copy {r['td_copy_ms']:.3f} ms",
             (r["node_ms"] + r["td_copy_ms"]) / r["cook_ms"], "ok" if ok else "FAIL", **r)


# ---- 8. soak -----------------------------------------------------------------------------------------------------


SOAK_SIZE_FACTOR = {"classic": 8, "realesrgan": 8, "flashvsr": 4, "stream_diffvsr": 2}  # x soak.SIZES (48x64 ...)


def soak_part(ctx: Ctx, backend: str) -> None:
    import torch
    import soak
    import sr_speed

    model = None
    if backend == "realesrgan":
        model = str(ctx.tmp / "compact_x2.pth")
        torch.save((sr_speed.TINY if ctx.tiny else sr_speed.MODELS)["compact_x2"](), model)
    elif backend == "flashvsr":
        model = "tiny,attention=dense" if ctx.tiny else "tiny,config=full"
    elif backend == "stream_diffvsr":
        model = "random:tiny" if ctx.tiny else "random:full"
    # tiny: FlashVSR needs 25 frames before its first output, then 8 per call
    tiny_frames = {"classic": (40, 10), "realesrgan": (20, 5), "flashvsr": (41, 10), "stream_diffvsr": (6, 2)}
    frames, every = tiny_frames[backend] if ctx.tiny else (2000, 250)
    factor = 1 if ctx.tiny else SOAK_SIZE_FACTOR[backend]
    r = soak.soak(backend, frames, every, model, ctx.device, warmup=None, size_factor=factor)
    h, w = (v * factor for v in soak.SIZES[0])
    growth = f"RSS {r.rss_growth_mb:+.1f} MB" + (f", CUDA {r.cuda_growth_mb:+.1f} MB" if ctx.cuda else "")
    ok = r.ok
    if ctx.tiny and not ok and all(w.startswith("a frame took") for w in r.why.split("; ")):
        ok = True  # a few tiny frames on a shared CPU: one slow frame is noise, not a stall (memory still counts)
    ctx.emit(f"soak {backend}: {r.frames} frames from {h}x{w} (size changes, cuts, knob changes every {every})",
             f"median {r.median_ms:.2f} ms/frame, worst {r.worst_ratio:.1f}x median, {growth}", "-", None,
             "ok" if ok else "FAIL", **dataclasses.asdict(r))


def _parts() -> list[Part]:
    return [
        Part("pytest-gpu", "pytest -m gpu (the GPU tests)", 45, 150, 30, cmd="pytest_cmd"),
        Part("e2e-classic", "classic end to end, fp16/bf16, stabilizer off/on", 10, 60, 10, "e2e_backend", ("classic",)),
        Part("e2e-realesrgan", "realesrgan RRDB x2plus + Compact 2x end to end vs fp32", 25, 90, 15,
             "e2e_backend", ("realesrgan",)),
        Part("e2e-flashvsr", "FlashVSR full-size random weights end to end", 45, 150, 30, "e2e_backend", ("flashvsr",)),
        Part("e2e-stream_diffvsr", "Stream-DiffVSR full-size random weights end to end", 40, 120, 30,
             "e2e_backend", ("stream_diffvsr",)),
        Part("sr-speed-eager", "sr_speed vs the reference loop, eager, batch 1 and 4", 20, 90, 15,
             "sr_speed_part", ("off",)),
        Part("sr-speed-reduce-overhead", "sr_speed, torch.compile + CUDA graphs, batch 1", 80, 200, 50,
             "sr_speed_part", ("reduce-overhead",)),
        Part("flashvsr-speed", "FlashVSR steady FPS, first-chunk latency, peak memory: sparse vs dense", 60, 150, 40,
             "flashvsr_part"),
        Part("stream-diffvsr-speed", "Stream-DiffVSR ms/frame, peak memory vs the whole-sequence loop", 40, 120, 30,
             "stream_diffvsr_part"),
        Part("stabilizer-cost", "the stabilizer's cost relative to its backend", 10, 60, 10, "stabilizer_part"),
        Part("td-interop", "TouchDesigner adapter overhead on CUDA buffers", 10, 60, 10, "td_part"),
        Part("soak-classic", "2,000-frame soak, classic", 10, 60, 10, "soak_part", ("classic",)),
        Part("soak-realesrgan", "2,000-frame soak, realesrgan Compact 2x", 15, 60, 15, "soak_part", ("realesrgan",)),
        Part("soak-flashvsr", "2,000-frame soak, FlashVSR full size", 35, 120, 30, "soak_part", ("flashvsr",)),
        Part("soak-stream_diffvsr", "2,000-frame soak, Stream-DiffVSR full size", 45, 120, 30,
             "soak_part", ("stream_diffvsr",)),
        Part("sr-speed-max-autotune", "sr_speed, max-autotune", 240, 300, 120, "sr_speed_part", ("max-autotune",)),
        Part("sr-speed-tensorrt", "sr_speed, TensorRT (when torch-tensorrt is installed)", 5, 300, 5,
             "sr_speed_part", ("tensorrt",)),
    ]


PARTS = _parts()


# --- the budget ---------------------------------------------------------------------------------------------------


class Budget:
    """Seconds left of ``total`` on ``clock``; ``slot(part)`` is the time limit a part gets, or None: do not start it.

    ``reserve`` is kept back for killing a part that runs to its limit and for writing the results."""

    def __init__(self, total: float, clock: Callable[[], float] = time.monotonic, reserve: float = 10.0):
        self.total, self.clock, self.reserve = float(total), clock, float(reserve)
        self.t0 = clock()

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()

    def slot(self, part: Part) -> float | None:
        avail = self.left() - self.reserve
        if avail < part.min_s:
            return None
        return min(part.cap_s, avail)


@dataclass
class PartResult:
    name: str
    status: str  # ok | failed | timeout | skipped
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)
    error: str = ""
    log_tail: str = ""
    limit_s: float | None = None


def run_parts(parts: list[Part], budget: Budget, runner: Callable[[Part, float], PartResult],
              on_result: Callable[[PartResult], None] = lambda r: None) -> list[PartResult]:
    """Run ``parts`` in order, each under ``runner(part, limit)``; parts the budget cannot cover are skipped."""
    results = []
    for part in parts:
        limit = budget.slot(part)
        if limit is None:
            r = PartResult(part.name, "skipped", error=f"budget: {max(0.0, budget.left()):.0f} s left, "
                                                         f"needs >= {part.min_s:.0f} s + {budget.reserve:.0f} s reserve")
        else:
            t0 = budget.clock()
            try:
                r = runner(part, limit)
            except Exception as e:  # noqa: BLE001 - the runner itself failing must not end the suite
                r = PartResult(part.name, "failed", error=f"runner: {_one_line(e)}")
            r.seconds = budget.clock() - t0
            r.limit_s = limit
        results.append(r)
        on_result(r)
    return results


# --- running a part in its own process ---------------------------------------------------------------------------


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _read_rows(path: Path) -> tuple[list[dict], dict]:
    rows, env = [], {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if "_env" in d:
                env = d["_env"]
            elif "_error" not in d:
                rows.append(d)
    return rows, env


def _tail(path: Path, n: int = 4000) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - n))
        return f.read().decode(errors="replace")


def _worker(part: Part, opts: Opts, rows_path: str, log_path: str, tmp: str) -> None:
    """The forked process: own process group, output to the part's log, rows to its file."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    code = 0
    try:
        import torch

        if opts.tiny and not opts.device.startswith("cuda"):
            torch.set_num_threads(1)  # tiny models on a small shared CPU: no OpenMP spin-waits between parts' threads
        env = {"torch": torch.__version__, "python": sys.version.split()[0], "device": opts.device,
               "gpu": torch.cuda.get_device_name() if opts.device.startswith("cuda") else
               f"CPU ({torch.get_num_threads()} threads)"}
        with open(rows_path, "a") as f:
            f.write(json.dumps({"_env": env}) + "\n")
        part.resolve("fn")(Ctx(opts, part.name, Path(rows_path), Path(tmp)), *part.args)
    except BaseException as e:  # noqa: BLE001 - recorded, then this process ends
        traceback.print_exc()
        with open(rows_path, "a") as f:
            f.write(json.dumps({"_error": _one_line(e)}) + "\n")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit hooks: compile workers and CUDA teardown must not hang the part


class ProcessRunner:
    """``runner(part, limit)`` for :func:`run_parts`: each part in its own process group, killed at its limit."""

    def __init__(self, opts: Opts, workdir: Path, env: dict[str, str]):
        import multiprocessing as mp

        self.opts, self.workdir, self.env = opts, workdir, env
        self.mp = mp.get_context("forkserver")
        self.mp.set_forkserver_preload(["torch", "numpy"])
        self.gpu_env: dict = {}

    def __call__(self, part: Part, limit: float) -> PartResult:
        rows_path = self.workdir / f"{part.name}.jsonl"
        log_path = self.workdir / f"{part.name}.log"
        tmp = Path(tempfile.mkdtemp(prefix=f"{part.name}-", dir=self.workdir))
        timed_out = False
        if part.cmd:
            junit = tmp / "junit.xml"
            with open(log_path, "ab") as log:
                p = subprocess.Popen([*part.resolve("cmd")(self.opts), "--junitxml", str(junit)], cwd=REPO, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    code = p.wait(timeout=limit)
                except subprocess.TimeoutExpired:
                    timed_out, code = True, None
                _kill_group(p.pid)
                p.wait()
            rows = pytest_rows(junit, part.name) if junit.is_file() else []
            error = "" if code in (0, 5) else f"pytest exited {code}"  # 5: no tests collected
            env = {}
        else:
            p = self.mp.Process(target=_worker, args=(part, self.opts, str(rows_path), str(log_path), str(tmp)))
            p.start()
            p.join(limit)
            timed_out = p.is_alive()
            _kill_group(p.pid)
            if p.is_alive():
                p.kill()
            p.join(10)
            code = p.exitcode
            rows, env = _read_rows(rows_path)
            errs = [json.loads(ln)["_error"] for ln in (rows_path.read_text().splitlines() if rows_path.is_file() else [])
                    if ln.startswith('{"_error"')]
            error = errs[-1] if errs else ("" if code == 0 else f"worker exited {code}")
        self.gpu_env = self.gpu_env or env
        if timed_out:
            status, error = "timeout", f"stopped at its limit of {limit:.0f} s"
        elif error or any(r["status"] == "FAIL" for r in rows):
            status = "failed"
            error = error or "; ".join(r["case"] for r in rows if r["status"] == "FAIL")[:500]
        else:
            status = "ok"
        for r in rows:
            r.setdefault("gpu", env.get("gpu"))
        return PartResult(part.name, status, rows=rows, error=error,
                          log_tail="" if status == "ok" else _tail(log_path, 2000))


# --- wheels ----------------------------------------------------------------------------------------------------


def install_wheels(wheels: Path, site: Path, needed=NEEDED) -> tuple[str, str]:
    """Install ``wheels/*.whl`` into ``site`` (offline, no deps) when one of ``needed`` cannot be imported;
    put ``site`` on ``sys.path`` and ``PYTHONPATH``. Returns (status, message)."""
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if not missing:
        return "ok", "nothing to install: " + ", ".join(needed) + " import here"
    whls = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not whls:
        return "failed", (f"{', '.join(missing)} missing and no wheels in {wheels}: run benchmarks/gpu_wheels.sh on a "
                          "networked machine and carry .whl")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--disable-pip-version-check", "--upgrade", "--target", str(site), *map(str, whls)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        return "failed", f"pip install --target failed: {' '.join((r.stderr or r.stdout).split())[-400:]}"
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    importlib.invalidate_caches()
    still = [m for m in missing if importlib.util.find_spec(m) is None]
    if still:
        return "failed", f"installed {len(whls)} wheels, still missing: {', '.join(still)}"
    return "ok", f"installed {len(whls)} wheels into {site} for {', '.join(missing)}"


# --- output ----------------------------------------------------------------------------------------------------


def speedup_cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def result_lines(rows: list[dict], date: str, gpu_default: str = "-") -> list[str]:
    """RESULTS.md rows: ``| date | GPU | command | case | ours | reference | speedup |``."""
    out = []
    for r in rows:
        cell = lambda s: str(s).replace("|", "/").replace("\n", " ")  # noqa: E731
        ours = r["ours"] if r["status"] == "ok" else f"{r['status']}: {r['ours']}"
        cmd = f"`python3 benchmarks/gpu_suite.py --only {r['part']}`"
        out.append(f"| {date} | {cell(r.get('gpu') or gpu_default)} | {cmd} | {cell(r['case'])} | {cell(ours)} | "
                   f"{cell(r['reference'])} | {speedup_cell(r['speedup'])} |")
    return out


def record(json_path: Path, results_md: Path = RESULTS) -> int:
    """Append the rows of a suite run (its gpu_suite.json) to RESULTS.md, under the table."""
    data = json.loads(json_path.read_text())
    lines = result_lines([r for p in data["parts"] for r in p["rows"]], data["date"], data.get("gpu") or "-")
    text = results_md.read_text().splitlines()
    last = max(i for i, ln in enumerate(text) if ln.startswith("|"))
    text = [ln for ln in text[: last + 1]] + lines + [ln for ln in text[last + 1 :] if not ln.startswith("No rows yet")]
    results_md.write_text("\n".join(text) + "\n")
    print(f"{len(lines)} rows appended to {results_md}")
    return 0


def _write(out_json: Path, summary: dict, results: list[PartResult], workdir: Path) -> None:
    summary = {**summary, "parts": [dataclasses.asdict(r) for r in results]}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out_json)  # never a half-written file
    rows = [r for p in results for r in p.rows]
    (out_json.parent / "gpu_suite_rows.md").write_text(
        "| date | GPU | command | case | ours | reference | speedup |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(result_lines(rows, summary["date"], summary.get("gpu") or "-")) + "\n")
    with open(out_json.parent / "gpu_suite.log", "w") as log:
        for r in results:
            log.write(f"\n===== {r.name}: {r.status} ({r.seconds:.1f} s) {r.error}\n")
            log.write(_tail(workdir / f"{r.name}.log", LOG_TAIL_BYTES))


def list_parts() -> str:
    lines = ["| # | part | what | expected s (H100/H200) | limit s | starts with >= s left |", "|---|---|---|---|---|---|"]
    for i, p in enumerate(PARTS, 1):
        lines.append(f"| {i} | {p.name} | {p.what} | {p.est_s:.0f} | {p.cap_s:.0f} | {p.min_s:.0f} |")
    total = sum(p.est_s for p in PARTS if "max-autotune" not in p.name and "tensorrt" not in p.name)
    lines.append(f"\nexpected, all parts before max-autotune: {total:.0f} s ({total / 60:.1f} min)")
    return "\n".join(lines)


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.monotonic) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=500.0, help="seconds for the whole run, install included (500)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: the CI smoke run)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and few frames (CPU smoke runs)")
    ap.add_argument("--only", default="", help="comma-separated part names (see --list)")
    ap.add_argument("--skip", default="", help="comma-separated part names to leave out")
    ap.add_argument("--json", type=Path, default=REPO / "out" / "gpu_suite.json",
                    help="where the JSON goes when $OUT is not set (rows and log beside it)")
    ap.add_argument("--wheels", type=Path, default=REPO / ".whl", help="wheels for what this machine lacks")
    ap.add_argument("--list", action="store_true", help="print the parts and exit")
    ap.add_argument("--record", type=Path, help="append the rows of a run's gpu_suite.json to RESULTS.md and exit")
    a = ap.parse_args(argv)
    if a.list:
        print(list_parts())
        return 0
    if a.record:
        return record(a.record)
    budget = Budget(a.budget, clock)
    names = {p.name for p in PARTS}
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    skip = [s.strip() for s in a.skip.split(",") if s.strip()]
    unknown = [n for n in only + skip if n not in names]
    if unknown:
        print(f"gpu_suite: unknown part(s) {', '.join(unknown)}; known: {', '.join(p.name for p in PARTS)}")
        return 2
    parts = [p for p in PARTS if (not only or p.name in only) and p.name not in skip]
    out_json = Path(os.environ["OUT"]) / "gpu_suite.json" if os.environ.get("OUT") else a.json
    workdir = Path(tempfile.mkdtemp(prefix="gpu_suite-"))
    command = "python3 benchmarks/gpu_suite.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    print(f"gpu_suite: {len(parts)} parts, budget {a.budget:.0f} s, device {a.device}{', tiny' if a.tiny else ''}; "
          f"results -> {out_json}", flush=True)

    t0 = clock()
    st, msg = install_wheels(a.wheels, workdir / "site")
    install = PartResult("install-wheels", st, seconds=clock() - t0, error="" if st == "ok" else msg)
    print(f"[{budget.elapsed():6.1f} s] install-wheels: {st}: {msg}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*filter(None, [os.environ.get("PYTHONPATH")]), str(REPO)]),
           "PYTHONUNBUFFERED": "1"}
    # offline by design: a download attempt on a machine without network would only burn the budget
    for k in ("LIVE_UPSCALE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[k] = os.environ[k] = "1"
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the fork server inherits it
    opts = Opts(a.device, a.tiny)
    runner = ProcessRunner(opts, workdir, env)
    summary = {"date": datetime.date.today().isoformat(), "command": command.strip(), "budget_s": a.budget,
               "device": a.device, "tiny": a.tiny, "gpu": None, "load_avg": os.getloadavg()}
    results: list[PartResult] = [install]

    def done(r: PartResult) -> None:
        results.append(r)
        summary["gpu"] = summary["gpu"] or runner.gpu_env.get("gpu")
        summary["torch"] = runner.gpu_env.get("torch")
        summary["elapsed_s"] = budget.elapsed()
        fails = sum(x["status"] == "FAIL" for x in r.rows)
        print(f"[{budget.elapsed():6.1f} s] {r.name}: {r.status} ({r.seconds:.1f} s, {len(r.rows)} rows"
              f"{f', {fails} FAIL' if fails else ''}){': ' + r.error if r.error else ''}", flush=True)
        if r.status in ("failed", "timeout") and r.log_tail:
            print("    " + "\n    ".join(r.log_tail.strip().splitlines()[-12:]), flush=True)
        _write(out_json, summary, results, workdir)

    _write(out_json, summary, results, workdir)
    run_parts(parts, budget, runner, done)
    rows = [r for p in results for r in p.rows]
    print("\nRESULTS.md rows (also in gpu_suite_rows.md; add them with --record gpu_suite.json):")
    print("\n".join(result_lines(rows, summary["date"], summary["gpu"] or "-")))
    print(f"\n{summary['gpu']}, torch {summary.get('torch')}; {budget.elapsed():.0f} s of {a.budget:.0f}")
    print("| part | status | s | rows | note |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r.name} | {r.status} | {r.seconds:.0f} | {len(r.rows)} | {r.error[:160]} |")
    bad = [r for r in results if r.status in ("failed", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
