"""``live-upscale``: upscale files, check the machine, run the demo, manage weights.

    live-upscale upscale INPUT -o OUTPUT [-y] [--backend auto|classic|realesrgan|...] [--model NAME|PATH] [--scale 2]
    live-upscale demo [-o DIR]           # no downloads, no GPU needed
    live-upscale doctor                  # device, versions, every backend and why it can or cannot run
    live-upscale models list|fetch NAME|path NAME

Every error is one line on stderr (``live-upscale: error: ...``), never a traceback. Exit codes: 0 done,
1 error, 130 interrupted (Ctrl-C or SIGTERM). Values are checked by pydantic (``UpscaleParams`` and
``FileOptions``) and reported by flag; files are checked by ``media.plan`` before the backend loads.
A subcommand is a parser in ``build_parser`` plus a ``cmd_*`` function returning an exit code.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..errors import LiveUpscaleError

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


class ArgumentsError(LiveUpscaleError):
    """One or more bad command-line values; ``lines`` holds one sentence per value."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the temporary output is removed and the exit code is 130."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 1), like every other error of the CLI."""

    def error(self, message: str):  # type: ignore[override]
        print(f"live-upscale: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


# Values are parsed by pydantic (UpscaleParams, FileOptions), not argparse, so every bad value gets
# the same kind of sentence: `--scale 0: must be from 1 to 8`.
_NODE_FIELDS = ("backend", "model", "scale", "prescale", "quality", "sharpen", "stabilize", "scene_cut", "device",
                "precision", "compile")


def _node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default=None, help="engine id, or 'auto' for the best that can run here (default)")
    p.add_argument("--model", default=None, help="registered model name or path to a weights file")
    p.add_argument("--scale", default=None, help="output size / input size, 1 to 8 (default 2)")
    p.add_argument("--prescale", default=None, metavar="{auto,input,output}",
                   help="model scale != target: 'output' runs the model at full size and downscales its output "
                   "(realesrgan's default, 'auto'), 'input' resizes the input first (faster, below bicubic quality)")
    p.add_argument("--quality", default=None, metavar="{fast,balanced,high}", help="default balanced")
    p.add_argument("--sharpen", default=None, help="extra unsharp-mask amount (0-2)")
    p.add_argument("--stabilize", default=None, metavar="STRENGTH",
                   help="temporal stabilizer for frame-by-frame backends, 0 (off) to 1")
    p.add_argument("--scene-cut", default=None, metavar="THRESHOLD",
                   help="low-res frame difference that counts as a cut and resets temporal state (0 = never)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default=None, metavar="{auto,fp32,fp16,bf16}")
    p.add_argument("--compile", default=None, metavar="{off,default,reduce-overhead,max-autotune,tensorrt}",
                   help="torch.compile the model (CUDA; reduce-overhead adds CUDA graphs)")
    p.add_argument("--offline", action="store_true", help="never download weights")


def _flag(name: str) -> str:
    return "--offline" if name == "download" else "--" + name.replace("_", "-")


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _bounds(model, name: str) -> str:
    """A field's allowed range in words: 'from 1 to 8', 'at least 1', 'more than 0 and at most 1000'."""
    f = model.model_fields.get(name)
    b: dict[str, float] = {}
    for m in getattr(f, "metadata", ()) if f is not None else ():
        for k in ("ge", "gt", "le", "lt"):
            if getattr(m, k, None) is not None:
                b[k] = getattr(m, k)
    if "ge" in b and "le" in b:
        return f"from {_num(b['ge'])} to {_num(b['le'])}"
    lo = f"at least {_num(b['ge'])}" if "ge" in b else f"more than {_num(b['gt'])}" if "gt" in b else ""
    hi = f"at most {_num(b['le'])}" if "le" in b else f"less than {_num(b['lt'])}" if "lt" in b else ""
    return " and ".join(x for x in (lo, hi) if x)


def explain(e, model) -> list[str]:
    """A pydantic ValidationError as one plain sentence per bad value, named by its command-line flag."""
    lines = []
    for err in e.errors(include_url=False):
        name = str(err["loc"][0]) if err.get("loc") else "?"
        t, ctx = err.get("type", ""), err.get("ctx") or {}
        rng = _bounds(model, name)
        if t in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            why = f"must be {rng}"
        elif t == "finite_number":
            why = "must be a finite number" + (f", {rng}" if rng else "")
        elif t in ("float_parsing", "float_type"):
            why = "is not a number" + (f"; give one {rng}" if rng else "")
        elif t in ("int_parsing", "int_type", "int_from_float"):
            why = "must be a whole number" + (f" {rng}" if rng else "")
        elif t == "literal_error":
            why = f"must be one of {ctx.get('expected', '')}".replace("'", "")
        elif t == "extra_forbidden":
            why = "is not an option here"
        else:
            msg = err.get("msg", t)
            why = msg[:1].lower() + msg[1:]
        value = err.get("input")
        shown = "" if isinstance(value, dict) or value is None else f" {value}"
        lines.append(f"{_flag(name)}{shown}: {why}")
    return lines


def _validate(model, values: dict):
    from pydantic import ValidationError

    try:
        return model(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        raise ArgumentsError(explain(e, model)) from None


def node_params(a: argparse.Namespace):
    """The command line's node options as validated ``UpscaleParams`` (one line per bad value)."""
    from ..nodes import UpscaleParams

    values = {k: getattr(a, k, None) for k in _NODE_FIELDS}
    if getattr(a, "offline", False):
        values["download"] = False
    return _validate(UpscaleParams, values)


class FileOptions(BaseModel):
    """The file host's own options (the node's are ``UpscaleParams``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    batch: int = Field(1, ge=1, le=4096, description="Frames per backend call.")
    fps: float | None = Field(None, ge=0.01, le=1000, description="Output frame rate (a folder's, or a new one).")
    crf: int = Field(16, ge=0, le=51, description="H.264 quality (0 = lossless, 51 = worst).")


def file_options(a: argparse.Namespace):
    return _validate(FileOptions, {k: getattr(a, k, None) for k in ("batch", "fps", "crf")})


def _check_args(a: argparse.Namespace):
    """Both models validated together, so every bad value is reported at once."""
    lines, out = [], []
    for fn in (node_params, file_options):
        try:
            out.append(fn(a))
        except ArgumentsError as e:
            lines += e.lines
    if lines:
        raise ArgumentsError(lines)
    return out


def _make_node(params):
    from ..nodes import UpscaleNode

    node = UpscaleNode(params)
    node.load()
    print(f"backend: {node.backend_reason}\nengine:  {node.engine.describe()} on {node.device}", file=sys.stderr)
    return node


def _note(text: str) -> None:
    print(f"live-upscale: note: {text}", file=sys.stderr)


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

    params, opts = _check_args(a)
    plan = media.plan(a.input, a.output, overwrite=a.overwrite)  # input and destination checked: nothing written
    for n in plan.notes:
        _note(n)
    node = _make_node(params)
    bar, tick = _progress(plan.count, "upscale")
    t0 = time.perf_counter()
    try:
        job = media.run(node, plan, batch=opts.batch, fps=opts.fps, crf=opts.crf, progress=tick)
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    for n in job.notes:
        _note(n)
    size = f"{job.out_size[0]}x{job.out_size[1]}" if job.out_size else "?"
    print(f"wrote {job.frames_out} frames ({size}) to {a.output} in {dt:.1f} s "
          f"({job.frames_out / max(dt, 1e-9):.1f} fps){', audio kept' if job.audio else ''}")
    return EXIT_OK


def cmd_demo(a: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from . import media

    params, opts = _check_args(a)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    w, h = a.size
    clip = media.write_test_clip(out / "demo_input.mp4", frames=a.frames, size=(w, h), fps=24, audio=True)
    node = _make_node(params)
    bar, tick = _progress(a.frames, "demo")
    t0 = time.perf_counter()
    try:  # the demo's own files in its own folder are replaced on each run (atomically, like any output)
        job = media.run(node, clip, out / "demo_upscaled.mp4", batch=opts.batch, progress=tick, overwrite=True)
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
    ap = _Parser(prog="live-upscale", description="The upscale node for real-time AI video.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log more (and show tracebacks of unexpected errors)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("upscale", help="upscale a video file, an image or a folder of frames")
    p.add_argument("input", help="video file, image, or folder of frames (never written)")
    p.add_argument("-o", "--output", required=True,
                   help="video file (.mp4/.mkv/.mov/.webm/.avi), image file, or folder")
    p.add_argument("-y", "--overwrite", action="store_true",
                   help="replace an existing output (only once the new one is complete)")
    _node_args(p)
    p.add_argument("--batch", default=None, help="frames per backend call (default 1)")
    p.add_argument("--fps", default=None, help="frame rate of a video made from a folder (default 30), or a new one")
    p.add_argument("--crf", default=None, help="H.264 quality for video output, 0-51, lower = better (default 16)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("demo", help="upscale a generated moving clip; no downloads, no GPU needed")
    p.add_argument("-o", "--output", default="live-upscale-demo", help="folder for the demo files")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=_size, default=(320, 180), help="input WxH (default 320x180)")
    _node_args(p)
    p.add_argument("--batch", default=None)
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


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 320x180, not {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1x1, not {text!r}")
    return w, h


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 error (one line on stderr, never a traceback), 130 interrupted (Ctrl-C, SIGTERM)."""
    import signal
    import threading

    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (already one line)
        return int(e.code or 0)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    if getattr(a, "offline", False):
        import os

        os.environ["LIVE_UPSCALE_OFFLINE"] = "1"
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return a.func(a)
    except ArgumentsError as e:
        for line in e.lines:
            print(f"live-upscale: error: {line}", file=sys.stderr)
        return EXIT_ERROR
    except LiveUpscaleError as e:
        print(f"live-upscale: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        what = "terminated" if isinstance(sys.exc_info()[1], Terminated) else "interrupted"
        done = "; no output was written" if getattr(a, "cmd", "") == "upscale" else ""
        print(f"live-upscale: {what}{done}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("live-upscale: error: out of memory; try a smaller --batch or --scale", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - a user gets one line; -v shows where it came from
        from ..errors import one_line

        if a.verbose:
            import traceback

            traceback.print_exc()
        print(f"live-upscale: error: unexpected {one_line(e)} (run with -v for details)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
