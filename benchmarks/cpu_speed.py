"""The embedded default on the CPU: classic, and classic + stabilizer, against OpenCV, in one run.

    python benchmarks/cpu_speed.py [--sizes 512x512 1280x720] [--frames 30] [--rounds 5] [--threads N]

Frames are real video (``../shared/data/vid4/calendar``, 720x576 PNGs): for 512x512 a centre crop,
for 1280x720 the frame resized with OpenCV (cubic, outside the timing). Every path takes the same
uint8 RGB HWC numpy frames and returns uint8 RGB HWC frames at twice the size:

- ``OpenCV Lanczos4 + unsharp`` (the reference): ``cv2.resize(INTER_LANCZOS4)``, then
  ``GaussianBlur`` (sigma 1, as classic's at 2x) and ``addWeighted`` (amount 0.3, classic 'balanced');
- ``classic``: ``UpscaleNode(backend='classic', device='cpu').cook(frame)``;
- ``classic + stabilize=1``: the same node with the stabilizer on.

The paths take turns: each round runs every path over all frames (the stabilizer sees the real
motion of the sequence), and each frame's time is kept. Medians over all rounds are printed, so a
load spike from other processes hits every path alike; the ratio column is ours / reference from the
same rounds. The load average at the start and end is printed beside the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "vid4" / "calendar"

import cv2  # noqa: E402
import torch  # noqa: E402

from live_upscale import UpscaleNode  # noqa: E402

SCALE = 2


def load_frames(w: int, h: int, n: int, data: Path = DATA) -> tuple[list[np.ndarray], str]:
    files = sorted(data.glob("*.png"))[:n] if data.is_dir() else []
    if len(files) < 2:
        # no shared data: a smooth random texture panning (a stand-in, said so in the output)
        g = np.random.default_rng(0)
        base = cv2.resize(g.random((h // 8 + 8, w // 8 + 8, 3), dtype=np.float32), (w + 64, h + 64), interpolation=cv2.INTER_CUBIC)
        base = np.clip(base * 255, 0, 255).astype(np.uint8)
        return [np.ascontiguousarray(base[t % 32 : t % 32 + h, (2 * t) % 64 : (2 * t) % 64 + w]) for t in range(n)], "synthetic"
    out = []
    for f in files:
        img = cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        fh, fw = img.shape[:2]
        if fw >= w and fh >= h:
            y0, x0 = (fh - h) // 2, (fw - w) // 2
            img = img[y0 : y0 + h, x0 : x0 + w]
        else:
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        out.append(np.ascontiguousarray(img))
    return out, f"{data.parent.name}/{data.name}"


def opencv_reference(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    y = cv2.resize(frame, (w * SCALE, h * SCALE), interpolation=cv2.INTER_LANCZOS4)
    blur = cv2.GaussianBlur(y, (7, 7), 1.0, borderType=cv2.BORDER_REPLICATE)
    return cv2.addWeighted(y, 1.3, blur, -0.3, 0.0)


def paths() -> dict[str, object]:
    classic = UpscaleNode(backend="classic", device="cpu", scale=SCALE)
    stab = UpscaleNode(backend="classic", device="cpu", scale=SCALE, stabilize=1.0)
    classic.load()
    stab.load()
    return {
        "OpenCV Lanczos4 + unsharp": opencv_reference,
        "classic": classic.cook,
        "classic + stabilize=1": stab.cook,
    }


def run(sizes: list[tuple[int, int]], n_frames: int, rounds: int) -> tuple[list[dict], str]:
    rows = []
    source = ""
    for w, h in sizes:
        frames, source = load_frames(w, h, n_frames)
        fns = paths()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for k, fn in fns.items():  # warm-up: allocations, caches, the stabilizer's first frame
            for f in frames[:3]:
                out = fn(f)
            assert out.shape == (h * SCALE, w * SCALE, 3) and out.dtype == np.uint8, (k, out.shape, out.dtype)
        for _ in range(rounds):
            for k, fn in fns.items():
                for f in frames:
                    t0 = time.perf_counter()
                    fn(f)
                    times[k].append((time.perf_counter() - t0) * 1000.0)
        ref = statistics.median(times["OpenCV Lanczos4 + unsharp"])
        for k, ts in times.items():
            ms = statistics.median(ts)
            rows.append({"size": f"{w}x{h}", "out": f"{w * SCALE}x{h * SCALE}", "path": k, "ms": ms, "fps": 1000.0 / ms,
                         "ratio": ms / ref})
    return rows, source


def markdown(rows: list[dict]) -> str:
    lines = ["| input -> output | path | median ms/frame | FPS | ms / OpenCV's |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} -> {r['out']} | {r['path']} | {r['ms']:.1f} | {r['fps']:.1f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def results_rows(rows: list[dict], command: str) -> str:
    """``benchmarks/RESULTS.md`` rows: ours vs the OpenCV reference of the same size and run."""
    date = time.strftime("%Y-%m-%d")
    ref = {r["size"]: r["ms"] for r in rows if r["path"].startswith("OpenCV")}
    out = []
    for r in rows:
        if r["path"].startswith("OpenCV"):
            continue
        out.append(f"| {date} | CPU 2 cores | `{command}` | {r['size']} -> {r['out']} uint8 {r['path']} via cook "
                   f"| {r['ms']:.1f} ms ({r['fps']:.1f} FPS) | {ref[r['size']]:.1f} ms (OpenCV Lanczos4 + unsharp) "
                   f"| {ref[r['size']] / r['ms']:.2f}x |")
    return "\n".join(out)


def parse_size(s: str) -> tuple[int, int]:
    w, h = s.lower().split("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["512x512", "1280x720"], help="input sizes WxH (output is 2x)")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)")
    a = ap.parse_args(argv)
    if a.frames < 4:
        ap.error("--frames must be at least 4")
    if a.threads:
        torch.set_num_threads(a.threads)
        cv2.setNumThreads(a.threads)
    load0 = os.getloadavg()[0]
    rows, source = run([parse_size(s) for s in a.sizes], a.frames, a.rounds)
    load1 = os.getloadavg()[0]
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPU, {ncpu} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads); frames: {source}, {a.frames} per size, {a.rounds} rounds; "
          f"1-min load average {load0:.1f} at the start, {load1:.1f} at the end.\n")
    print(markdown(rows))
    for size in dict.fromkeys(r["size"] for r in rows):
        by = {r["path"]: r for r in rows if r["size"] == size}
        c, s = by["classic"], by["classic + stabilize=1"]
        print(f"\n{size}: classic {'meets' if c['ratio'] <= 1.0 else 'misses'} the goal (at least as fast as OpenCV: "
              f"{c['ratio']:.2f}x its time); classic + stabilize=1 at {s['fps']:.1f} FPS "
              f"({'meets' if s['fps'] >= 25 else 'misses'} 25 FPS)")
    cmd = "python benchmarks/cpu_speed.py" + (" " + " ".join(argv) if argv else "")
    print("\nRESULTS.md rows:\n" + results_rows(rows, cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
