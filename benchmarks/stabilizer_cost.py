"""Cost of the temporal stabilizer relative to the backend it follows, in one run.

    python benchmarks/stabilizer_cost.py [--size 512x512] [--frames 30] [--device auto]

For each frame-by-frame backend that can run here (realesrgan uses ../shared's
realesr-animevideov3 at 2x with the input halved, or a random-weight model of the same
architecture), it times ``node.process`` with the stabilizer off and on, on a moving scene, and
prints ms/frame and the stabilizer's share. CUDA timings are synchronized per frame.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from live_upscale import UpscaleNode  # noqa: E402
from sr_speed import compact_state_dict  # noqa: E402


def frames(n: int, h: int, w: int, device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8 + 4, w // 8 + 4, generator=g),
                                           size=(h + 64, w + 64), mode="bicubic").clamp(0, 1)
    return [base[..., 2 * t % 64 : 2 * t % 64 + h, t % 64 : t % 64 + w].contiguous().to(device) for t in range(n)]


def ms_per_frame(node: UpscaleNode, xs: list[torch.Tensor]) -> float:
    for x in xs[:3]:
        node.process(x)
    if node.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x in xs[3:]:
        node.process(x)
    if node.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000 / (len(xs) - 3)


def measure(size: str = "512x512", frames_n: int = 30, device: str = "auto", model: str | Path | None = None,
            on_row=None) -> list[dict]:
    """ms/frame without and with the stabilizer per backend (classic; realesrgan at 2x with the input halved).

    ``model``: a 4x spandrel checkpoint for the realesrgan row (default: ../shared's realesr-animevideov3,
    else a random-weight model of its architecture)."""
    w, h = (int(v) for v in size.split("x"))
    if model is None:
        model = REPO.parent / "shared" / "weights" / "realesr-animevideov3.pth"
        if not model.is_file():
            model = Path(tempfile.mkdtemp()) / "compact.pth"
            torch.save(compact_state_dict(scale=4), model)  # realesr-animevideov3's architecture
    configs = [("classic", {"backend": "classic"}),
               ("realesrgan in/2", {"backend": "realesrgan", "model": str(model), "prescale": "input"})]
    rows = []
    for name, kw in configs:
        off = UpscaleNode(scale=2.0, device=device, **kw)
        xs = frames(frames_n, h, w, off.device)
        t_off = ms_per_frame(off, xs)
        off.close()
        on = UpscaleNode(scale=2.0, device=device, stabilize=1.0, **kw)
        t_on = ms_per_frame(on, xs)
        on.close()
        rows.append(dict(backend=name, size=size, off_ms=t_off, on_ms=t_on, cost=(t_on - t_off) / t_off))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    rows = measure(a.size, a.frames, a.device)
    dev = UpscaleNode(device=a.device).device
    where = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{a.size} -> 2x on {where}, torch {torch.__version__}")
    print("| backend | ms/frame without | ms/frame with stabilizer | stabilizer cost |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['off_ms']:.1f} | {r['on_ms']:.1f} | {100 * r['cost']:+.0f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
