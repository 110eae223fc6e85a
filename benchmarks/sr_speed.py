"""Speed of the realesrgan fast path vs the reference loop: one run, same device, same weights.

    python benchmarks/sr_speed.py                         # GPU: RRDB x2plus + Compact 2x, 512² and 720p
    python benchmarks/sr_speed.py --compile off reduce-overhead max-autotune --frames 300
    python benchmarks/sr_speed.py --device cpu --sizes 64x64 --frames 4   # smoke run (what the tests do)

Reference: what Scope's RealESRGAN postprocessor does. Plain bf16 PyTorch, eager, one frame at a
time, with ``torch.cuda.synchronize()`` after each frame (fp32 in CPU smoke runs).

Ours: the node's realesrgan engine. fp16, channels_last, cuDNN autotuning, torch.compile (with CUDA
graphs for ``reduce-overhead``/``max-autotune``), batches, no host syncs. Each configuration is
also checked against the eager fp32 model (max/mean absolute error on one frame).

Host paths, measured end to end with the last compile mode:
- TouchDesigner: a BGRA uint8, bottom-row-first texture in device memory goes through the real
  Script TOP callbacks, ``tests/standins/td.py`` and the CUDA-interop adapter, and is copied into
  the output texture.
- CPU host: numpy BGRA in, numpy out, through the pinned upload.

Random weights of the real architectures (speed does not depend on the values). Prints one
markdown table last, plus rows ready for RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from live_upscale import UpscaleNode  # noqa: E402
from live_upscale.backends.realesrgan import load_descriptor  # noqa: E402


def rrdb_state_dict(scale=2, nf=64, nb=23, gc=32, gain=0.5) -> dict:
    """RealESRGAN_x2plus (basicsr key layout; x2 pixel-unshuffles the input into 12 channels), random weights.

    ``gain`` scales the weights so the output is a picture-like spread around 0.5 (std ~0.1 for the full
    model), not ~0: a vanishing output would make error checks against fp32 pass trivially and fp16 run
    on denormals."""
    g = torch.Generator().manual_seed(0)
    sd = {}

    def conv(name, cout, cin):
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (gain / (cin * 9) ** 0.5)
        sd[f"{name}.bias"] = torch.zeros(cout)

    conv("conv_first", nf, 3 * (4 if scale == 2 else 1))
    for b in range(nb):
        for r in (1, 2, 3):
            for k in range(1, 6):
                conv(f"body.{b}.rdb{r}.conv{k}", nf if k == 5 else gc, nf + (k - 1) * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", 3, nf)
    sd["conv_last.bias"] = torch.full((3,), 0.5)
    return {"params_ema": sd}


def compact_state_dict(scale=2, nf=64, nconv=16) -> dict:
    """SRVGGNetCompact (realesr-animevideov3 layout: 64 features, 16 convs, PReLU), random weights."""
    g = torch.Generator().manual_seed(0)
    sd, idx = {}, 0
    shapes = [(nf, 3)] + [(nf, nf)] * nconv + [(3 * scale * scale, nf)]
    for k, (co, ci) in enumerate(shapes):
        sd[f"body.{idx}.weight"] = torch.randn(co, ci, 3, 3, generator=g) * (0.5 / (ci * 9) ** 0.5)
        sd[f"body.{idx}.bias"] = torch.zeros(co)
        if k < len(shapes) - 1:
            sd[f"body.{idx + 1}.weight"] = torch.full((co,), 0.25)
        idx += 2
    return {"params": sd}


# both run natively at 2x; compact_x2 is RealESRGANv2-animevideo-xsx2's architecture
MODELS = {
    "rrdb_x2plus": lambda: rrdb_state_dict(2),
    "compact_x2": lambda: compact_state_dict(2),
}
TINY = {  # --tiny: same architectures, a few blocks (CPU smoke runs)
    "rrdb_x2plus": lambda: rrdb_state_dict(2, nf=8, nb=1, gain=1.0),
    "compact_x2": lambda: compact_state_dict(2, nf=8, nconv=2),
}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timeit(fn, frames: int, per_call: int, dev: torch.device, warm: int = 3) -> tuple[float, float | None]:
    """(ms per frame, peak GiB or None) over ``frames`` frames, after ``warm`` calls."""
    for _ in range(warm):
        fn()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    calls = max(1, frames // per_call)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(dev)
    ms = (time.perf_counter() - t0) * 1000 / (calls * per_call)
    return ms, (torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None)


def error_vs_fp32(y: torch.Tensor, want: torch.Tensor) -> str:
    e = (y.float() - want.float()).abs()
    return f"{e.max().item():.4f} / {e.mean().item():.5f}"


def td_path(path: Path | None, mode: str, size: tuple[int, int], dev: torch.device, pars: dict | None = None):
    """A cook function running the real Script TOP callbacks on a TD-shaped device texture, and its TOP.

    ``pars`` replaces the TOP's parameters (default: realesrgan with ``path`` at 2x, compile ``mode``)."""
    from live_upscale.plugin.touchdesigner import top
    from tests.standins import td

    sys.modules["td"] = td
    top.ALLOW_HOST_MEMORY = dev.type != "cuda"
    h, w = size
    img = (np.random.default_rng(0).random((h, w, 4)) * 255).astype(np.uint8)
    src = td.TOP(img, device=dev)
    op = td.ScriptTOP([src], out_device=dev)
    spec = importlib.util.spec_from_file_location("td_callbacks", REPO / "windows" / "td_script_top_callbacks.py")
    cb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cb)
    cb.onSetupParameters(op)
    for k, v in (pars or {"Backend": "realesrgan", "Model": str(path), "Scale": 2.0, "Compile": mode}).items():
        getattr(op.par, k).val = v

    def cook():
        op.cook(cb)

    return cook, op


def td_interop_overhead(size: int = 1024, frames: int = 50, device: str = "cuda",
                        pars: dict | None = None, repeats: int = 3) -> dict:
    """What the TouchDesigner adapter adds per frame on TD-shaped device buffers (BGRA uint8, bottom row first).

    cook = the Script TOP's whole cook; node = ``node.cook`` alone on the same frame already wrapped as a
    tensor, on the adapter's stream; td_copy = the stand-in's TD-side texture copy (TD pays it too).
    overhead = cook - node - td_copy (ms/frame); each the median of ``repeats`` interleaved runs."""
    from live_upscale.plugin.touchdesigner import top

    dev = torch.device(device)
    cook, op = td_path(None, "off", (size, size), dev, pars or {"Backend": "classic", "Quality": "fast"})
    for _ in range(5):
        cook()
    assert not op.errors, op.errors
    st = top.state_for(op)
    src = op.inputs[0]
    x = torch.from_numpy(src.image).to(dev)
    handle = st.stream.cuda_stream if st.stream is not None else None
    runs = []
    for _ in range(repeats):  # interleaved, median of each: load drifts during a run
        cook_ms, _ = timeit(cook, frames, 1, dev, warm=1)
        with torch.cuda.stream(st.stream) if dev.type == "cuda" else contextlib.nullcontext():
            node_ms, _ = timeit(lambda: st.node.cook(x, in_format="HWC:BGRA:uint8:flipped"), frames, 1, dev, warm=1)
        copy_ms, _ = timeit(lambda: src.cudaMemory(stream=handle), frames, 1, dev, warm=1)
        runs.append((cook_ms, node_ms, copy_ms))
    cook_ms, node_ms, copy_ms = (statistics.median(r[i] for r in runs) for i in range(3))
    out = tuple(op.output.shape)
    return dict(size=size, out=out, cook_ms=cook_ms, node_ms=node_ms, td_copy_ms=copy_ms,
                overhead_ms=cook_ms - node_ms - copy_ms)


def bench(models=tuple(MODELS), sizes=("512x512", "1280x720"), compile_modes=("off", "reduce-overhead"),
          frames: int = 120, batch: int = 4, device: str = "cuda", tiny: bool = False, hosts: bool = True,
          on_row=None, backend_options: dict | None = None) -> list[dict]:
    """Time the reference loop and our paths; one dict per row (model, size, path, ms, ref_ms, peak, err).

    ``on_row(row)`` is called as each row is measured (a caller that is stopped early keeps those);
    ``backend_options`` go to our node (e.g. ``compile_backend="eager"`` for CPU smoke runs of a compile mode)."""
    dev = torch.device(device)
    tmp = Path(tempfile.mkdtemp())
    ref_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    rows: list[dict] = []

    def add(name, size, path_name, ms, ref_ms, mem, err):
        rows.append(dict(model=name, size=size, path=path_name, ms=ms, ref_ms=ref_ms, peak=mem, err=err))
        if on_row is not None:
            on_row(rows[-1])

    for name in models:
        path = tmp / f"{name}.pth"
        torch.save((TINY if tiny else MODELS)[name](), path)
        model32 = load_descriptor(path).model.to(dev).eval()
        ref_model = load_descriptor(path).model.to(dev, ref_dtype).eval()
        for size in sizes:
            w, h = (int(v) for v in size.lower().split("x"))
            frame = torch.rand(1, 3, h, w, device=dev)
            with torch.inference_mode():
                want = model32(frame).clamp(0, 1)

            @torch.inference_mode()
            def reference():
                y = ref_model(frame.to(ref_dtype)).float().clamp(0, 1)
                sync(dev)  # the reference postprocessor waits for every frame
                return y

            ref_ms, ref_mem = timeit(reference, frames, 1, dev)
            ref_name = f"reference: {str(ref_dtype).removeprefix('torch.')} eager, sync per frame"
            add(name, size, ref_name, ref_ms, ref_ms, ref_mem, error_vs_fp32(reference(), want))
            for mode in compile_modes:
                node = UpscaleNode(backend="realesrgan", model=str(path), scale=2.0, compile=mode, device=str(dev),
                                   precision="fp16" if dev.type == "cuda" else "fp32", download=False,
                                   backend_options=backend_options or {})
                for b in sorted({1, batch}):
                    t0 = time.perf_counter()
                    node.warmup(h, w, b)
                    compile_s = time.perf_counter() - t0
                    x = frame.expand(b, -1, -1, -1).contiguous()
                    err = error_vs_fp32(node.process(x)[:1], want)
                    ms, mem = timeit(lambda: node.process(x), frames, b, dev)
                    add(name, size, f"ours: compile={mode} batch={b} (warm-up {compile_s:.0f} s)", ms, ref_ms, mem, err)
                node.close()
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            if not hosts:
                continue
            mode = compile_modes[-1]
            cook, op = td_path(path, mode, (h, w), dev)
            ms, mem = timeit(cook, frames, 1, dev)
            assert not op.errors, op.errors
            add(name, size, f"TouchDesigner TOP end to end (BGRA u8 texture, compile={mode})", ms, ref_ms, mem, "-")
            node = UpscaleNode(backend="realesrgan", model=str(path), scale=2.0, compile=mode, device=str(dev),
                               download=False)
            img = (np.random.default_rng(1).random((h, w, 4)) * 255).astype(np.uint8)
            node.warmup(h, w)
            ms, mem = timeit(lambda: node.cook(img, "HWC:BGRA:uint8"), frames, 1, dev)
            add(name, size, f"CPU host: numpy BGRA in/out (pinned upload, compile={mode})", ms, ref_ms, mem, "-")
            node.close()
    return rows


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120, help="frames timed per measurement")
    ap.add_argument("--sizes", nargs="*", default=["512x512", "1280x720"], help="input sizes WxH")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--compile", nargs="*", default=["off", "reduce-overhead"],
                    help="our compile modes (off default reduce-overhead max-autotune tensorrt)")
    ap.add_argument("--batch", type=int, default=4, help="frames per call for the batched row")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models (smoke runs)")
    ap.add_argument("--no-hosts", action="store_true", help="skip the TouchDesigner and CPU-host rows")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("sr_speed: no CUDA device here; this benchmark needs a GPU (or pass --device cpu for a smoke run)")
        return 0
    command = "python benchmarks/sr_speed.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    rows = [(r["model"], r["size"], r["path"], r["ms"], r["ref_ms"], r["peak"], r["err"])
            for r in bench(a.models, a.sizes, a.compile, a.frames, a.batch, a.device, a.tiny, not a.no_hosts)]
    where = device_name(dev)
    print(f"\n{where}, torch {torch.__version__}; error = max / mean |ours - eager fp32| on one frame")
    print("| model | input | path | FPS | ms/frame | speedup vs reference | peak GiB | error vs fp32 |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for name, size, path_name, ms, ref_ms, mem, err in rows:
        peak = f"{mem:.2f}" if mem is not None else "-"
        print(f"| {name} | {size} | {path_name} | {1000 / ms:.1f} | {ms:.2f} | {ref_ms / ms:.1f}x | {peak} | {err} |")
    # issue 9's goal, at 512² in: RRDB x2plus >= 3x the reference and >= 100 FPS; Compact 2x >= 400 FPS
    goals = {"rrdb_x2plus": (3.0, 100.0), "compact_x2": (1.0, 400.0)}
    for name, (min_speedup, min_fps) in goals.items():
        best = [(ref_ms / ms, 1000 / ms, p) for n, sz, p, ms, ref_ms, _, _ in rows
                if n == name and sz == "512x512" and p.startswith("ours")]
        if best:
            sp, fps, p = max(best, key=lambda r: r[1])
            ok = sp >= min_speedup and fps >= min_fps
            print(f"goal {name} 512²: {fps:.0f} FPS, {sp:.1f}x (want >= {min_fps:.0f} FPS, >= {min_speedup:g}x): "
                  f"{'met' if ok else 'NOT met'} by {p.split(' (warm-up')[0]}")
    print("\nRESULTS.md rows:")
    today = datetime.date.today().isoformat()
    for name, size, path_name, ms, ref_ms, mem, err in rows:
        if path_name.startswith("reference"):
            continue
        case = f"{name} {size}->2x, {path_name.split(' (warm-up')[0]}"
        print(f"| {today} | {where} | `{command.strip()}` | {case} | {1000 / ms:.1f} FPS | {1000 / ref_ms:.1f} FPS "
              f"| {ref_ms / ms:.1f}x |")
    return 0




if __name__ == "__main__":
    raise SystemExit(main())
