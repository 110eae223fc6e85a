"""Soak: stream many frames through the node with size changes, scene cuts and parameter changes.

    python benchmarks/soak.py [--frames 10000] [--backends classic realesrgan ...] [--device auto]

Per backend that can run here it streams ``--frames`` frames (a moving synthetic scene; every
``--every`` frames one of: a size change, a hard cut, a runtime parameter change, a stabilizer
toggle), samples process RSS (and CUDA allocated/reserved memory) and fails when

- memory grows after warm-up by more than ``--max-growth-mb`` (RSS; on CUDA also allocated), or
- any frame (for chunked engines: any computing call) takes more than 10x the median of its segment (a
  segment runs from one change to the next: turning the stabilizer on legitimately changes the cost per
  frame).

Warm-up calls are not judged as stalls but counted and reported (``warmup_calls``, ``worst_warmup_ms``):

- the first computing call after the engine starts a new stream (the node reset it: a size change, a
  detected scene cut) or after the engine was (re)built: a stream start runs a different path (more frames
  for chunked engines) and a new size builds per-shape things once (resampling matrices, cuDNN autotune);
- any call during which torch compiled something (dynamo's frame counter moved): FlashVSR's FlexAttention
  compiles once per attention shape, and its KV cache grows over the first calls of a stream, so a new size
  compiles on several calls in a row; realesrgan with a compile mode compiles once per new input shape.

Frame times are wall time minus the time the calling thread waited for a CPU while runnable (the kernel's
run-queue wait, ``/proc/self/task/<tid>/schedstat``): on a loaded machine the scheduler can hold a thread off the
CPU for longer than ten frames take, which is not the engine's stall. Everything else still counts: compute,
blocking on a lock, a sleep, a device sync, page faults. Where the kernel does not expose it, wall time is
used. With several torch intra-op threads their waits are not subtracted, and on a loaded CPU their OpenMP
spin-waits alone make frames ten times slower now and then: soak a CPU run with ``OMP_NUM_THREADS=1`` (the
test suite runs one thread).

Prints a short table last. ``soak()`` is importable (the test suite runs a short version).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
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
    warmup_calls: int = 0  # calls not judged as stalls (see the module docstring)
    worst_warmup_ms: float = 0.0
    cpu_wait_ms: float = 0.0  # total time the calling thread waited for a CPU (subtracted from frame times)
    judged_calls: int = 0  # computing calls the stall rule looked at (0: too short a run to judge any)


class RunQueueClock:
    """Seconds the calling thread has waited, runnable, for a CPU (Linux schedstat); 0.0 where unavailable."""

    def __init__(self):
        self.fd = None
        try:
            self.fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
            self()
        except (OSError, ValueError, IndexError):
            self.close()

    def __call__(self) -> float:
        if self.fd is None:
            return 0.0
        return int(os.pread(self.fd, 128, 0).split()[1]) / 1e9

    @property
    def available(self) -> bool:
        return self.fd is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def compiles() -> int:
    """Frames torch.compile has compiled so far in this process (dynamo's counter; 0 if dynamo is absent)."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001 - a torch build without dynamo compiles nothing
        return 0
    return int(counters["frames"]["total"])


def soak(backend: str, frames: int = 10_000, every: int = 250, model: str | None = None, device: str = "auto",
         max_growth_mb: float = 64.0, warmup: int | None = None, size_factor: int = 1) -> SoakResult:
    node = UpscaleNode(backend=backend, model=model, scale=2.0, device=device, download=False)
    dev = node.device
    warmup = warmup if warmup is not None else min(frames // 4, 2 * every)
    times: list[float] = []  # wall time minus run-queue wait, per call
    wall: list[float] = []
    segment: list[int] = []
    produced: list[int] = []
    warm: set[int] = set()  # warm-up calls: not judged as stalls
    cold = True  # the next computing call starts a stream (or runs on a new engine)
    chunked = False
    clock = RunQueueClock()
    size_i, seed, events = 0, 0, 0
    rss0 = cuda0 = None
    for i in range(frames):
        if i and i % every == 0:
            kind = (i // every) % 4
            events += 1
            if kind == 0:
                size_i = (size_i + 1) % len(SIZES)
            elif kind == 1:
                seed += 1  # hard cut to a new scene
            elif kind == 2:
                node.update(sharpen=float((i // every) % 3) * 0.3)
            else:
                node.update(stabilize=0.0 if node.params.stabilize else 0.7)
        h, w = (v * size_factor for v in SIZES[size_i])
        x = scene(seed, h, w, i, dev)
        resets, engine, compiled = node.resets, node.engine, compiles()
        t0, q0 = time.perf_counter(), clock()
        y = node.process(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt, waited = time.perf_counter() - t0, clock() - q0
        wall.append(dt)
        times.append(max(dt - waited, 0.0))
        segment.append(events)
        produced.append(y.shape[0])
        cold = cold or node.resets != resets or node.engine is not engine
        chunked = node.engine.caps.delay > 0
        computed = bool(y.shape[0]) or not chunked
        if compiles() != compiled or (computed and cold):
            warm.add(i)
        cold = cold and not computed
        if y.shape[0] and not torch.isfinite(y).all():
            clock.close()
            node.close()
            return SoakResult(backend, i + 1, 0, 0, 0, 0, events, False, f"non-finite output at frame {i}")
        if i == warmup:
            gc.collect()
            rss0 = rss_mb()
            cuda0 = torch.cuda.memory_allocated() / 2**20 if dev.type == "cuda" else 0.0
    node.flush()
    gc.collect()
    rss_growth = rss_mb() - (rss0 if rss0 is not None else rss_mb())
    cuda_growth = (torch.cuda.memory_allocated() / 2**20 - cuda0) if dev.type == "cuda" and cuda0 is not None else 0.0
    clock.close()
    # a chunked engine's calls that only buffer cost nothing: its stalls are judged over the calls that compute
    keep = [k for k in range(len(times)) if k > 2 and k not in warm and (produced[k] or not chunked)]
    computing = [k for k in range(len(times)) if produced[k] or not chunked]
    med = statistics.median(wall[k] for k in keep or computing or range(len(wall)))
    seg_med = {s: statistics.median(times[k] for k in keep if segment[k] == s) for s in {segment[k] for k in keep}}
    worst = max((times[k] / max(seg_med[segment[k]], 1e-9) for k in keep), default=0.0)  # nothing left: no stall
    why = []
    if rss_growth > max_growth_mb:
        why.append(f"RSS grew {rss_growth:.0f} MB after warm-up")
    if cuda_growth > max_growth_mb:
        why.append(f"CUDA allocated grew {cuda_growth:.0f} MB after warm-up")
    if worst > 10:
        why.append(f"a frame took {worst:.1f}x the median")
    node.close()
    worst_warm = max((wall[k] for k in warm), default=0.0)
    return SoakResult(backend, frames, med * 1000, worst, rss_growth, cuda_growth, events, not why, "; ".join(why),
                      len(warm), worst_warm * 1000, (sum(wall) - sum(times)) * 1000, len(keep))


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
    print("\n| backend | frames | events | median ms | worst/median | warm-up calls (worst ms) | RSS growth MB | "
          "CUDA growth MB | result |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        worst = f"{r.worst_ratio:.1f}" if r.judged_calls else "- (no call judged)"
        print(f"| {r.backend} | {r.frames} | {r.events} | {r.median_ms:.2f} | {worst} | "
              f"{r.warmup_calls} ({r.worst_warmup_ms:.0f}) | {r.rss_growth_mb:+.1f} | {r.cuda_growth_mb:+.1f} | "
              f"{'ok' if r.ok else 'FAIL: ' + r.why} |")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
