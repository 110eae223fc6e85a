"""Soak: stream many frames through the node with size changes, scene cuts and parameter changes.

    python benchmarks/soak.py [--frames 10000] [--backends classic realesrgan ...] [--device auto]

Per backend that can run here it streams ``--frames`` frames (a moving synthetic scene; every
``--every`` frames one of: a size change, a hard cut, a runtime parameter change, a stabilizer
toggle), samples process RSS (and CUDA allocated/reserved memory) and fails when

- memory grows after warm-up by more than ``--max-growth-mb`` (RSS; on CUDA also allocated), or
- any frame (for chunked engines: any computing call) takes more than 10x the median of its segment (a segment runs from one
  change to the next: turning the stabilizer on legitimately changes the cost per frame; the
  first frame after a size change is excluded: a new size builds resampling matrices once).

Prints a short table last. ``soak()`` is importable (the test suite runs a short version).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from live_upscale import UpscaleNode  # noqa: E402
from live_upscale.backends import registry  # noqa: E402
from sr_speed import compact_state_dict  # noqa: E402

SIZES = [(48, 64), (36, 52), (64, 48), (33, 47)]


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: peak RSS is the best we have
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scene(seed: int, h: int, w: int, t: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=g)
    big = F.interpolate(base, size=(h + 16, w + 16), mode="bicubic", align_corners=False).clamp(0, 1)
    dy, dx = (t // 2) % 16, t % 16
    return big[..., dy : dy + h, dx : dx + w].to(device)


@dataclass
class SoakResult:
    backend: str
    frames: int
    median_ms: float
    worst_ratio: float
    rss_growth_mb: float
    cuda_growth_mb: float
    events: int
    ok: bool
    why: str = ""


def soak(backend: str, frames: int = 10_000, every: int = 250, model: str | None = None, device: str = "auto",
         max_growth_mb: float = 64.0, warmup: int | None = None, size_factor: int = 1) -> SoakResult:
    node = UpscaleNode(backend=backend, model=model, scale=2.0, device=device, download=False)
    dev = node.device
    warmup = warmup if warmup is not None else min(frames // 4, 2 * every)
    times: list[float] = []
    segment: list[int] = []
    produced: list[int] = []
    skip: set[int] = set()
    size_i, seed, events = 0, 0, 0
    rss0 = cuda0 = None
    for i in range(frames):
        if i and i % every == 0:
            kind = (i // every) % 4
            events += 1
            if kind == 0:
                size_i = (size_i + 1) % len(SIZES)
                skip.add(i)
            elif kind == 1:
                seed += 1  # hard cut to a new scene
            elif kind == 2:
                node.update(sharpen=float((i // every) % 3) * 0.3)
            else:
                node.update(stabilize=0.0 if node.params.stabilize else 0.7)
        h, w = (v * size_factor for v in SIZES[size_i])
        x = scene(seed, h, w, i, dev)
        t0 = time.perf_counter()
        y = node.process(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        segment.append(events)
        produced.append(y.shape[0])
        if y.shape[0] and not torch.isfinite(y).all():
            return SoakResult(backend, i + 1, 0, 0, 0, 0, events, False, f"non-finite output at frame {i}")
        if i == warmup:
            gc.collect()
            rss0 = rss_mb()
            cuda0 = torch.cuda.memory_allocated() / 2**20 if dev.type == "cuda" else 0.0
    node.flush()
    gc.collect()
    rss_growth = rss_mb() - (rss0 if rss0 is not None else rss_mb())
    cuda_growth = (torch.cuda.memory_allocated() / 2**20 - cuda0) if dev.type == "cuda" and cuda0 is not None else 0.0
    chunked = node.engine is not None and node.engine.caps.delay > 0
    # a chunked engine's calls that only buffer cost nothing: its stalls are judged over the calls that compute
    keep = [k for k in range(len(times)) if k > 2 and k not in skip and (produced[k] or not chunked)]
    med = statistics.median(times[k] for k in keep)
    seg_med = {s: statistics.median(times[k] for k in keep if segment[k] == s) for s in {segment[k] for k in keep}}
    worst = max(times[k] / seg_med[segment[k]] for k in keep)
    why = []
    if rss_growth > max_growth_mb:
        why.append(f"RSS grew {rss_growth:.0f} MB after warm-up")
    if cuda_growth > max_growth_mb:
        why.append(f"CUDA allocated grew {cuda_growth:.0f} MB after warm-up")
    if worst > 10:
        why.append(f"a frame took {worst:.1f}x the median")
    node.close()
    return SoakResult(backend, frames, med * 1000, worst, rss_growth, cuda_growth, events, not why, "; ".join(why))


def tiny_compact(path: Path) -> Path:
    """A random-weight SRVGGNetCompact (4x) in Real-ESRGAN's key layout, for machines without weights."""
    torch.save(compact_state_dict(scale=4, nf=16, nconv=4), path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--backends", nargs="*", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-growth-mb", type=float, default=64.0)
    ap.add_argument("--full", action="store_true", help="diffusion backends with their real weights (GPU)")
    a = ap.parse_args(argv)
    shared = REPO.parent / "shared" / "weights" / "realesr-animevideov3.pth"
    tmp = Path(tempfile.mkdtemp())
    model_for = {
        "realesrgan": str(shared if shared.is_file() else tiny_compact(tmp / "tiny-compact.pth")),
        # the diffusion backends run their tiny random-weight configs on CPU (full size on a GPU: pass --full)
        "flashvsr": None if a.full else "tiny",
        "stream_diffvsr": None if a.full else "random:tiny",
    }
    names = a.backends or [b.id for b in registry.backends()]
    results = []
    for name in names:
        dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                           ("cpu" if a.device == "auto" else a.device))
        p = registry.safe_probe(registry.get(name), dev, model_for.get(name))
        if not p:
            print(f"skip {name}: {p.reason}")
            continue
        print(f"soak {name}: {a.frames} frames ...", flush=True)
        results.append(soak(name, a.frames, a.every, model_for.get(name), a.device, a.max_growth_mb))
    print("\n| backend | frames | events | median ms | worst/median | RSS growth MB | CUDA growth MB | result |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.backend} | {r.frames} | {r.events} | {r.median_ms:.2f} | {r.worst_ratio:.1f} | "
              f"{r.rss_growth_mb:+.1f} | {r.cuda_growth_mb:+.1f} | {'ok' if r.ok else 'FAIL: ' + r.why} |")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
