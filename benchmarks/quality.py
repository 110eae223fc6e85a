"""2x quality and temporal-stability benchmark of the upscale node on real video (CPU).

    python benchmarks/quality.py [--sequences calendar city street] [--backends ...]
                                 [--max-frames N] [--out file.md]

Data comes from ``../shared`` (next to the repository root; see ``../shared/README.md``):

- ``calendar``, ``city`` (Vid4): the PNGs are the HR ground truth. LR = HR downscaled by 2 with
  **PIL ``Image.BICUBIC``** on the uint8 frame (PIL widens the kernel when shrinking, so it is
  antialiased). PIL was kept over ``torch.nn.functional.interpolate(mode='bicubic',
  antialias=True)`` because it reproduces the README's reference figures more closely
  (calendar bicubic warping error 8.27 with PIL vs 8.12 with torch; reference 8.3; PSNR 22.53
  either way).
- ``street`` (real-world, 320x180): the PNGs are the LR input; there is no ground truth, so
  only the temporal metrics are reported, against the bicubic-upscaled input as reference
  (the bicubic row is that reference, so its tOF is 0 by construction).

Configurations (``--backends``): ``bicubic`` (plain ``F.interpolate`` bicubic, a reference,
not a backend), ``classic`` (backend 'classic', quality 'balanced'), and backend 'realesrgan'
with ``../shared/weights/realesr-animevideov3.pth`` (or ``--weights``): ``realesrgan-out`` (the
node's default: the 4x model at full size, output halved with antialiased bicubic),
``realesrgan-out-lanczos`` / ``realesrgan-out-bilinear`` (the same, other antialiased
downscale filters; alias ``filters``) and ``realesrgan-in`` (prescale 'input', the speed route:
input halved, then the 4x model); ``realesrgan`` selects both routes; ``+stab`` variants add the
node's stabilizer (alias ``stab``). The ground-truth row (warping error of the ground truth
itself) is added for every sequence that has one. GMAC/frame: the model's multiply-accumulates
per frame on that route, counted on the loaded model (``SpandrelEngine.cost``).

Each configuration streams the LR frames one at a time through ``UpscaleNode.process`` (CPU,
float (1,3,H,W) in [0,1]) and then ``flush()``. ms/frame is the wall time of those calls
divided by the frames, leaving out the first call (one-time warm-up; the engine is loaded
before timing starts).

Metrics (``metrics.py``): PSNR/SSIM on RGB in [0,1] with an 8 px border cropped, averaged over
frames; warping error x1000 (DIS medium flow of the reference, forward/backward check and
self-warp mask within 0.02 as the *mean* over RGB channels, per-pair means averaged); tOF
(mean end-point difference between DIS flows of output and ground truth).

With all frames this implementation gives on calendar: ground truth 9.15 (reference 9.2),
bicubic 8.27 / PSNR 22.53 (8.3 / 22.5), realesrgan in/2 11.27 / 19.02 (11.4 / 19.0),
realesrgan out/2 7.44 / 22.43 (7.6 / 22.4).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SHARED = REPO_ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "realesr-animevideov3.pth"

sys.path.insert(0, str(BENCH_DIR))
import metrics  # noqa: E402

# name -> (folder under shared/data, frames are ground truth)
SEQUENCES: dict[str, tuple[str, bool]] = {
    "calendar": ("vid4/calendar", True),
    "city": ("vid4/city", True),
    "street": ("realworld/street_320x180", False),
}

# config key -> (label, UpscaleNode kwargs or None for the plain bicubic reference)
CONFIGS: dict[str, tuple[str, dict | None]] = {
    "bicubic": ("bicubic", None),
    "classic": ("classic", {"backend": "classic", "quality": "balanced"}),
    # realesrgan routes for a 4x model at 2x; the default (no prescale given) runs the model at full size and
    # downscales its output (bicubic, antialiased); the others name the route / the downscale filter
    "realesrgan-out": ("realesrgan full size, out/2 bicubic (default)", {"backend": "realesrgan"}),
    "realesrgan-out-lanczos": ("realesrgan full size, out/2 lanczos",
                               {"backend": "realesrgan", "prescale": "output", "backend_options": {"downscale": "lanczos"}}),
    "realesrgan-out-bilinear": ("realesrgan full size, out/2 bilinear",
                                {"backend": "realesrgan", "prescale": "output", "backend_options": {"downscale": "bilinear"}}),
    "realesrgan-in": ("realesrgan in/2 (speed route)", {"backend": "realesrgan", "prescale": "input"}),
    # the same with the node's temporal stabilizer (strength from --stabilize)
    "classic+stab": ("classic + stabilizer", {"backend": "classic", "quality": "balanced", "stabilize": 1.0}),
    "realesrgan-out+stab": ("realesrgan default + stabilizer", {"backend": "realesrgan", "stabilize": 1.0}),
    "realesrgan-in+stab": ("realesrgan in/2 + stabilizer", {"backend": "realesrgan", "prescale": "input", "stabilize": 1.0}),
}
ALIASES = {
    "realesrgan": ["realesrgan-out", "realesrgan-in"],
    "filters": ["realesrgan-out-lanczos", "realesrgan-out-bilinear"],
    "stab": ["classic+stab", "realesrgan-out+stab", "realesrgan-in+stab"],
}

SCALE = 2.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    print(f"quality.py: {msg}", file=sys.stderr)
    raise SystemExit(2)


# --- data --------------------------------------------------------------------------------------------


def frame_files(name: str) -> list[Path]:
    folder = SHARED / "data" / SEQUENCES[name][0]
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if len(files) < 2:
        fail(f"benchmark data missing: need PNG frames in {folder} (see {SHARED / 'README.md'})")
    return files


def to_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def load_sequence(name: str, max_frames: int | None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """(LR frames, HR ground truth or None) as float32 HxWx3 in [0,1]."""
    files = frame_files(name)
    if max_frames:
        files = files[:max_frames]
    imgs = [Image.open(f).convert("RGB") for f in files]
    if not SEQUENCES[name][1]:
        return [to_float(i) for i in imgs], None
    w, h = imgs[0].size
    w2, h2 = w // 2, h // 2
    if (w, h) != (2 * w2, 2 * h2):  # odd size: crop the HR so it is exactly twice the LR
        imgs = [i.crop((0, 0, 2 * w2, 2 * h2)) for i in imgs]
    lr = [to_float(i.resize((w2, h2), Image.BICUBIC)) for i in imgs]
    return lr, [to_float(i) for i in imgs]


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].contiguous()


def to_numpy(y: torch.Tensor) -> list[np.ndarray]:
    return [np.ascontiguousarray(f) for f in y.detach().float().cpu().permute(0, 2, 3, 1).numpy()]


def bicubic_up(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    size = (int(round(h * SCALE)), int(round(w * SCALE)))
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


# --- running a configuration -------------------------------------------------------------------------


@dataclass
class Run:
    frames: list[np.ndarray]
    ms_per_frame: float
    note: str = ""
    gmac: float | None = None


def run_config(key: str, lr: list[np.ndarray]) -> Run:
    from live_upscale import UpscaleNode

    _, kwargs = CONFIGS[key]
    times: list[float] = []
    outs: list[torch.Tensor] = []
    if kwargs is None:
        for f in lr:
            x = to_tensor(f)
            t0 = time.perf_counter()
            outs.append(bicubic_up(x))
            times.append(time.perf_counter() - t0)
    else:
        kw = dict(kwargs)
        if kw["backend"] == "realesrgan":
            kw["model"] = str(WEIGHTS)
        node = UpscaleNode(scale=SCALE, device="cpu", **kw)
        engine = node.load()  # weights loading is not part of the per-frame time
        h, w = lr[0].shape[:2]
        gmac = engine.cost(h, w).macs / 1e9 if hasattr(engine, "cost") else None
        note = engine.describe()
        for f in lr:
            x = to_tensor(f)
            t0 = time.perf_counter()
            y = node.process(x)
            times.append(time.perf_counter() - t0)
            if y is not None and y.shape[0]:
                outs.append(y)
        t0 = time.perf_counter()
        y = node.flush()
        times[-1] += time.perf_counter() - t0
        if y is not None and y.shape[0]:
            outs.append(y)
        node.close()
    frames = [f for y in outs for f in to_numpy(y)]
    if len(frames) != len(lr):
        raise RuntimeError(f"{key}: {len(lr)} frames in, {len(frames)} out after flush()")
    timed = times[1:] if len(times) > 1 else times
    if kwargs is None:
        return Run(frames, 1000.0 * sum(timed) / len(timed))
    return Run(frames, 1000.0 * sum(timed) / len(timed), note, gmac)


def interleaved_ms(keys: list[str], frame: np.ndarray, rounds: int) -> dict[str, float]:
    """Median ms per frame of each configuration on one LR frame, the configurations taking turns round by
    round: load from other processes hits them all alike, so their ratios hold on a busy machine."""
    from live_upscale import UpscaleNode

    x = to_tensor(frame)
    runs = {}
    for key in keys:
        kwargs = CONFIGS[key][1]
        if kwargs is None:
            runs[key] = lambda: bicubic_up(x)
            continue
        kw = dict(kwargs)
        if kw["backend"] == "realesrgan":
            kw["model"] = str(WEIGHTS)
        node = UpscaleNode(scale=SCALE, device="cpu", **kw)
        node.load()
        runs[key] = lambda node=node: node.process(x)
    times: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds + 1):  # round 0 warms up (and gives the stabilizer its history)
        for key in keys:
            t0 = time.perf_counter()
            runs[key]()
            if r:
                times[key].append(1000.0 * (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in times.items()}


# --- the table ---------------------------------------------------------------------------------------


@dataclass
class Row:
    sequence: str
    config: str
    psnr: float | None = None
    ssim: float | None = None
    warp: float | None = None
    tof: float | None = None
    detail: float | None = None
    ms: float | None = None
    gmac: float | None = None  # model multiply-accumulates per frame (realesrgan: counted on the loaded model)
    extra: dict = field(default_factory=dict)


def fmt(v: float | None, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def markdown(rows: list[Row]) -> str:
    head = "| sequence | config | PSNR (dB) | SSIM | warping error | tOF | detail | ms/frame (CPU) | GMAC/frame |"
    sep = "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r.sequence} | {r.config} | {fmt(r.psnr, 2)} | {fmt(r.ssim, 4)} | {fmt(r.warp, 2)} "
            f"| {fmt(r.tof, 3)} | {fmt(r.detail, 2)} | {fmt(r.ms, 1)} | {'–' if r.gmac is None else f'{r.gmac:.3g}'} |"
        )
    return "\n".join(lines)


def bench_sequence(name: str, keys: list[str], max_frames: int | None) -> tuple[list[Row], int]:
    lr, gt = load_sequence(name, max_frames)
    n = len(lr)
    log(f"{name}: {n} frames, LR {lr[0].shape[1]}x{lr[0].shape[0]}")
    rows: list[Row] = []
    if gt is not None:
        reference = gt
    else:  # no ground truth: the bicubic-upscaled input is the reference
        reference = [f for x in lr for f in to_numpy(bicubic_up(to_tensor(x)))]
    t0 = time.perf_counter()
    ref_flows = metrics.reference_flows(reference)
    ref_seq_flows = metrics.sequence_flows(reference)
    ref_detail = metrics.laplacian_energy(reference)
    log(f"  reference flows: {time.perf_counter() - t0:.1f}s, valid pixels {100 * ref_flows.valid_fraction:.1f}%")
    if gt is not None:
        rows.append(Row(name, "ground truth", warp=metrics.warping_error(gt, ref_flows), detail=1.0))
    for key in keys:
        label = CONFIGS[key][0]
        t0 = time.perf_counter()
        run = run_config(key, lr)
        t_run = time.perf_counter() - t0
        out = run.frames
        row = Row(name, label, ms=run.ms_per_frame, gmac=run.gmac)
        if gt is not None:
            row.psnr = float(np.mean([metrics.psnr(o, g) for o, g in zip(out, gt)]))
            row.ssim = float(np.mean([metrics.ssim(o, g) for o, g in zip(out, gt)]))
        row.warp = metrics.warping_error(out, ref_flows)
        row.tof = metrics.tof(out, ref_seq_flows)
        row.detail = metrics.laplacian_energy(out) / ref_detail
        rows.append(row)
        log(
            f"  {label}: run {t_run:.1f}s ({run.ms_per_frame:.0f} ms/frame), metrics "
            f"{time.perf_counter() - t0 - t_run:.1f}s; PSNR {fmt(row.psnr, 2)} warp {fmt(row.warp, 2)} tOF {fmt(row.tof, 3)} "
            f"detail {fmt(row.detail, 2)}"
        )
    return rows, n


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="2x quality / flicker benchmark of live_upscale.UpscaleNode on CPU.")
    p.add_argument("--sequences", nargs="+", default=list(SEQUENCES), choices=list(SEQUENCES))
    p.add_argument(
        "--backends",
        nargs="+",
        default=list(CONFIGS),
        choices=list(CONFIGS) + list(ALIASES),
        help="configurations to run (aliases: realesrgan = both routes, filters = the other output downscales, stab = the +stabilizer ones)",
    )
    p.add_argument("--max-frames", type=int, default=None, help="use the first N frames of each sequence (default: all)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")
    p.add_argument("--stabilize", type=float, default=1.0, help="stabilizer strength of the '+stab' configs")
    p.add_argument("--timing", type=int, default=0, metavar="ROUNDS",
                   help="also time every configuration on one frame of the first sequence, taking turns for ROUNDS "
                   "rounds (medians; robust ratios on a busy machine)")
    p.add_argument("--weights", type=Path, default=None,
                   help=f"weights of the realesrgan configs (default {WEIGHTS}; any spandrel SR model, e.g. a native 2x)")
    args = p.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 2:
        p.error("--max-frames must be at least 2 (the temporal metrics need frame pairs)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global WEIGHTS
    if args.weights is not None:
        WEIGHTS = args.weights.expanduser()
    keys: list[str] = []
    for b in args.backends:
        for k in ALIASES.get(b, [b]):
            if k not in keys:
                keys.append(k)
    keys.sort(key=list(CONFIGS).index)

    # check every input before spending minutes
    if not SHARED.is_dir():
        fail(f"shared data not found at {SHARED} (expected next to the repository root {REPO_ROOT})")
    for s in args.sequences:
        frame_files(s)
    if any(CONFIGS[k][1] and CONFIGS[k][1]["backend"] == "realesrgan" for k in keys) and not WEIGHTS.is_file():
        fail(f"weights missing: {WEIGHTS} (see {SHARED / 'README.md'})")
    if args.threads:
        torch.set_num_threads(args.threads)
    for k in keys:
        if CONFIGS[k][1] and "stabilize" in CONFIGS[k][1]:
            CONFIGS[k][1]["stabilize"] = args.stabilize

    t_all = time.perf_counter()
    rows: list[Row] = []
    counts: dict[str, int] = {}
    for s in args.sequences:
        r, n = bench_sequence(s, keys, args.max_frames)
        rows += r
        counts[s] = n
    timing = None
    if args.timing:
        lr, _ = load_sequence(args.sequences[0], 1)
        timing = interleaved_ms(keys, lr[0], args.timing)
    log(f"total {time.perf_counter() - t_all:.0f}s")

    notes = [
        f"2x on CPU ({torch.get_num_threads()} torch threads), torch {torch.__version__}; frames: "
        + ", ".join(f"{s} {n}" for s, n in counts.items())
        + ".",
        "LR = HR / 2 (PIL bicubic). PSNR/SSIM: RGB, 8 px border cropped. Warping error x1000 (DIS medium, "
        "fw/bw check, reference self-warp within 0.02); tOF: flow end-point difference to the reference; "
        "detail: mean |Laplacian| of the output luma over that of the reference (1.0 = as much fine detail).",
    ]
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    notes.append(
        f"1-min load average at the end: {os.getloadavg()[0]:.1f} on {ncpu} CPUs "
        "(ms/frame includes any contention from other processes)."
    )
    if "street" in counts:
        notes.append(
            "street has no ground truth: warping error and tOF use the bicubic-upscaled input as reference "
            "(bicubic's tOF is 0 by construction)."
        )
    md = "\n".join(notes) + "\n\n" + markdown(rows) + "\n"
    if timing:
        lr_h, lr_w = load_sequence(args.sequences[0], 1)[0][0].shape[:2]
        base = timing.get("bicubic")
        md += (f"\nms/frame taking turns ({args.timing} rounds, medians) on one {lr_w}x{lr_h} {args.sequences[0]} frame; "
               f"load average {os.getloadavg()[0]:.1f}:\n\n| config | ms/frame (CPU) |" + (" x bicubic |" if base else "")
               + "\n|---|---:|" + ("---:|" if base else "") + "\n")
        for k, ms in timing.items():
            md += f"| {CONFIGS[k][0]} | {ms:.1f} |" + (f" {ms / base:.0f} |" if base else "") + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)
        log(f"wrote {args.out}")
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
