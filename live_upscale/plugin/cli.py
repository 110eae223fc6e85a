"""``live-upscale``: upscale files, check the machine, run the demo, manage weights.

    live-upscale upscale INPUT -o OUTPUT [--backend auto|classic|realesrgan|...] [--model NAME|PATH] [--scale 2]
    live-upscale demo [-o DIR]           # no downloads, no GPU needed
    live-upscale doctor                  # device, versions, every backend and why it can or cannot run
    live-upscale models list|fetch NAME|path NAME
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..errors import LiveUpscaleError


def _node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", help="engine id, or 'auto' for the best that can run here")
    p.add_argument("--model", default=None, help="registered model name or path to a weights file")
    p.add_argument("--scale", type=float, default=2.0, help="output size / input size (default 2)")
    p.add_argument("--prescale", choices=["input", "output"], default="input",
                   help="model scale != target: resize the input first (default) or the model's output")
    p.add_argument("--quality", choices=["fast", "balanced", "high"], default="balanced")
    p.add_argument("--sharpen", type=float, default=0.0, help="extra unsharp-mask amount (0-2)")
    p.add_argument("--stabilize", type=float, default=0.0, metavar="STRENGTH",
                   help="temporal stabilizer for frame-by-frame backends, 0 (off) to 1")
    p.add_argument("--scene-cut", type=float, default=0.12, metavar="THRESHOLD",
                   help="low-res frame difference that counts as a cut and resets temporal state (0 = never)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    p.add_argument("--compile", choices=["off", "default", "reduce-overhead", "max-autotune", "tensorrt"], default="off",
                   help="torch.compile the model (CUDA; reduce-overhead adds CUDA graphs)")
    p.add_argument("--offline", action="store_true", help="never download weights")


def _make_node(a: argparse.Namespace):
    from ..nodes import UpscaleNode

    node = UpscaleNode(
        backend=a.backend, model=a.model, scale=a.scale, prescale=a.prescale, quality=a.quality,
        sharpen=a.sharpen, stabilize=a.stabilize, scene_cut=a.scene_cut, device=a.device, precision=a.precision, compile=a.compile, download=not a.offline,
    )
    node.load()
    print(f"backend: {node.backend_reason}\nengine:  {node.engine.describe()} on {node.device}", file=sys.stderr)
    return node


def _progress(total: int | None, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, file=sys.stderr,
               disable=None)  # disable=None: quiet when stderr is not a terminal

    def tick(n: int) -> None:
        bar.update(n)
        if bar.format_dict.get("elapsed"):
            bar.set_postfix_str(f"{bar.n / max(bar.format_dict['elapsed'], 1e-6):.1f} fps", refresh=False)

    return bar, tick


def cmd_upscale(a: argparse.Namespace) -> int:
    from . import media

    node = _make_node(a)
    src = Path(a.input)
    total = media.probe_count(src) if src.exists() else None
    bar, tick = _progress(total, "upscale")
    t0 = time.perf_counter()
    try:
        job = media.run(node, src, a.output, batch=a.batch, fps=a.fps, crf=a.crf, progress=tick)
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    size = f"{job.out_size[0]}x{job.out_size[1]}" if job.out_size else "?"
    print(f"wrote {job.frames_out} frames ({size}) to {a.output} in {dt:.1f} s "
          f"({job.frames_out / max(dt, 1e-9):.1f} fps){', audio kept' if job.audio else ''}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from . import media

    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    w, h = a.size
    clip = media.write_test_clip(out / "demo_input.mp4", frames=a.frames, size=(w, h), fps=24, audio=True)
    node = _make_node(a)
    bar, tick = _progress(a.frames, "demo")
    t0 = time.perf_counter()
    try:
        job = media.run(node, clip, out / "demo_upscaled.mp4", batch=a.batch, progress=tick)
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    # side by side: the input blown up with nearest neighbour (what you had) | the node's output
    mid = a.frames // 2
    lo = media.synth_frame(mid, w, h)
    node.reset()
    y = node.process(media.to_tensor([lo], node.device))
    hi = media.to_uint8(y)[0] if y is not None and y.shape[0] else None
    if hi is not None:
        nearest = np.asarray(Image.fromarray(lo).resize((hi.shape[1], hi.shape[0]), Image.NEAREST))
        Image.fromarray(np.concatenate([nearest, hi], axis=1)).save(out / "demo_side_by_side.png")
    print(f"demo: {job.frames_out} frames {w}x{h} -> {job.out_size[0]}x{job.out_size[1]} with {node.backend_id} "
          f"in {dt:.1f} s ({job.frames_out / max(dt, 1e-9):.1f} fps)")
    print(f"wrote {out / 'demo_upscaled.mp4'} and {out / 'demo_side_by_side.png'}")
    return 0


def _ver(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def cmd_doctor(a: argparse.Namespace) -> int:
    import torch

    from .. import __version__, weights
    from ..backends import table
    from ..nodes import resolve_device

    print(f"live-upscale {__version__} on Python {platform.python_version()}, {platform.system()} {platform.machine()}")
    cuda = torch.version.cuda or "none"
    print(f"torch {torch.__version__} (CUDA build {cuda}); CUDA available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            pr = torch.cuda.get_device_properties(i)
            print(f"  cuda:{i} {pr.name}, {pr.total_memory / 2**30:.0f} GiB, sm_{pr.major}{pr.minor}")
    for pkg in ("spandrel", "pydantic", "av", "huggingface_hub", "safetensors", "diffusers", "nvidia-vfx"):
        print(f"  {pkg}: {_ver(pkg)}")
    device = resolve_device(a.device)
    print(f"weights cache: {weights.cache_dir()}{' (offline)' if weights.offline() else ''}")
    print(f"\nbackends on {device}:")
    rows = table(device, a.model)
    wid = max(len(r.id) for r in rows)
    for r in rows:
        mark = "yes" if r.probe.ok else "no "
        print(f"  {r.id:<{wid}}  {mark}  {r.probe.reason}")
    try:
        from ..backends import choose

        cls, why = choose("auto", device, a.model)
        print(f"\nauto picks: {why}")
    except LiveUpscaleError as e:
        print(f"\nauto picks nothing: {e}")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from .. import weights

    if a.action == "list":
        print(f"cache: {weights.cache_dir()}")
        for m in weights.KNOWN_MODELS.values():
            have = "cached" if weights.cached_path(m).is_file() else "-"
            print(f"  {m.name:<24} {m.scale}x  {m.arch:<40} {m.license:<14} {have:<7} {m.source}")
        return 0
    if not a.name:
        raise LiveUpscaleError(f"`models {a.action}` needs a model name; see `live-upscale models list`")
    if a.action == "fetch":
        p = weights.fetch(a.name, force=a.force)
        print(p)
        return 0
    if a.action == "path":
        print(weights.resolve(a.name, download=False))
        return 0
    return 2


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="live-upscale", description="The upscale node for real-time AI video.")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("upscale", help="upscale a video file or a folder of frames")
    p.add_argument("input", help="video file, image, or folder of frames")
    p.add_argument("-o", "--output", required=True, help="video file (.mp4/.mkv/.mov/.webm) or folder")
    _node_args(p)
    p.add_argument("--batch", type=int, default=1, help="frames per backend call")
    p.add_argument("--fps", type=float, default=None, help="frame rate when the input is a folder (default 30)")
    p.add_argument("--crf", type=int, default=16, help="H.264 quality for video output (lower = better)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("demo", help="upscale a generated moving clip; no downloads, no GPU needed")
    p.add_argument("-o", "--output", default="live-upscale-demo", help="folder for the demo files")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=lambda s: tuple(int(v) for v in s.lower().split("x")), default=(320, 180),
                   help="input WxH (default 320x180)")
    _node_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("doctor", help="device, versions, and every backend with why it can or cannot run")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default=None)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("models", help="registered weights: list, fetch NAME, path NAME")
    p.add_argument("action", choices=["list", "fetch", "path"])
    p.add_argument("name", nargs="?")
    p.add_argument("--force", action="store_true", help="fetch again even when cached")
    p.set_defaults(func=cmd_models)

    from ..remote import server as _serve  # the serve command lives in its own module

    p = sub.add_parser("serve", help="upscale for remote clients (the 'remote' backend), e.g. on a cloud GPU")
    _serve.add_arguments(p)
    p.set_defaults(func=_serve.cmd_serve)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    if getattr(a, "offline", False):
        import os

        os.environ["LIVE_UPSCALE_OFFLINE"] = "1"
    try:
        return a.func(a)
    except LiveUpscaleError as e:
        print(f"live-upscale: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("live-upscale: interrupted", file=sys.stderr)
        return 130
