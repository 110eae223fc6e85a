"""Parity with the official inference code on a golden fixture folder (FlashVSR v1.1 or Stream-DiffVSR).

    python benchmarks/parity.py FIXTURE_DIR [--tol 1e-4] [--batch N]

A fixture folder (format: ``../shared/parity/*/README.md``) holds random weights in the official
layout, the official run's inputs, its noise (and, for Stream-DiffVSR, its flow) and its outputs
stage by stage. The backend is decided from the files: ``diffusion_pytorch_model_streaming_dmd*``
-> FlashVSR, ``checkpoint/`` with ``unet/`` -> Stream-DiffVSR.

The check runs our code as a user does: the checkpoint through the backend's own loader, the LR
frames (``lr_u8 / 255``) through ``UpscaleNode.process`` ``--batch`` frames at a time (FlashVSR
then runs its 25-then-8 schedule), on CPU in fp32, scene cuts off. The fixture's noise and flow go
in through the engines' public options (``noise_file``, ``flow_file``) and every stage is read
through their ``trace`` hooks. Where we deliberately differ from the official code by default, the
documented official-mode option is used:

- FlashVSR: ``resize=pil`` (Pillow bicubic on uint8, as the official preparation), ``fit=crop``
  (centre crop to multiples of 128; a no-op when the upscaled size is one already); the colour fix
  is the fixture's (``config.json`` ``color_fix``, adain by default = ours by default);
- Stream-DiffVSR: none (native size, the scheduler as diffusers loads it, HR flow: all default).

``--our-defaults`` runs FlashVSR without those two options, to show what our choices change.

Printed per stage and per frame: max abs error and PSNR (peak: 1 for [0, 1] frames, 2 for
[-1, 1] frames, else the expected tensor's max abs). Exit status 0 when every final frame is
within ``--tol`` max abs (FlashVSR: ``final_frames`` and ``final_pool8`` over all output frames;
Stream-DiffVSR: ``frames``), 1 when not, 2 when the folder cannot be checked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from live_upscale import UpscaleNode  # noqa: E402
from live_upscale.errors import LiveUpscaleError  # noqa: E402

DEFAULT_TOL = 1e-4


@dataclass
class Row:
    stage: str
    max_abs: float
    psnr: float | None = None
    note: str = ""
    final: bool = False  # counts for the pass/fail verdict


@dataclass
class Report:
    backend: str
    fixture: str
    tol: float
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    info: list[str] = field(default_factory=list)

    @property
    def final_max(self) -> float:
        return max((r.max_abs for r in self.rows if r.final), default=math.inf)

    @property
    def ok(self) -> bool:
        return any(r.final for r in self.rows) and self.final_max <= self.tol

    def stage_max(self, prefix: str) -> float:
        return max((r.max_abs for r in self.rows if r.stage.startswith(prefix)), default=float("nan"))


def psnr(err_max_sq_mean: float, peak: float) -> float:
    return math.inf if err_max_sq_mean == 0 else 10 * math.log10(peak * peak / err_max_sq_mean)


def compare(stage: str, ours: torch.Tensor, ref: torch.Tensor, peak: float | None = None, final: bool = False) -> Row:
    ours, ref = ours.detach().double().cpu(), ref.detach().double().cpu()
    if tuple(ours.shape) != tuple(ref.shape):
        return Row(stage, math.inf, None, f"shape {tuple(ours.shape)} != expected {tuple(ref.shape)}", final)
    d = ours - ref
    pk = peak if peak is not None else max(float(ref.abs().max()), 1e-12)
    return Row(stage, float(d.abs().max()), psnr(float((d * d).mean()), pk), f"peak {pk:.3g}", final)


def _load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def detect(folder: Path) -> str | None:
    if any(folder.glob("diffusion_pytorch_model_streaming_dmd*")):
        return "flashvsr"
    if (folder / "checkpoint" / "unet").is_dir():
        return "stream_diffvsr"
    return None


def _frames(lr_u8: torch.Tensor) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, H, W)`` float [0, 1], as a host hands frames to the node."""
    return lr_u8.permute(0, 3, 1, 2).float() / 255.0


def _stream(node: UpscaleNode, x: torch.Tensor, batch: int, need: int) -> torch.Tensor:
    """All frames through ``node.process``; ``flush()`` only when fewer than ``need`` came out."""
    outs = [node.process(x[i : i + batch]) for i in range(0, x.shape[0], batch)]
    if sum(o.shape[0] for o in outs) < need:
        tail = node.flush()
        if tail is not None:
            outs.append(tail)
    outs = [o for o in outs if o.shape[0]]
    return torch.cat(outs) if outs else x[:0]


# --- FlashVSR -------------------------------------------------------------------------------------------


def check_flashvsr(folder: Path, batch: int = 8, tol: float = DEFAULT_TOL, official: bool = True) -> Report:
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    inputs, exp = _load(folder / "inputs.safetensors"), _load(folder / "expected.safetensors")
    lr = _frames(inputs["lr_u8"])
    scale = float(cfg.get("stream", {}).get("scale", 4))
    settings = ["allow_cpu=1", f"color_fix={cfg.get('color_fix', 'adain')}",
                f"noise_file={folder / 'noise.safetensors'}", "attention=sdpa"]
    if official:
        settings += ["resize=pil", "fit=crop"]
    node = UpscaleNode(backend="flashvsr", model=",".join([str(folder), *settings]), scale=scale, device="cpu",
                       precision="fp32", scene_cut=0.0, download=False)
    rep = Report("flashvsr", str(folder), tol)
    t0 = time.perf_counter()
    engine = node.load()
    got: dict[str, list[torch.Tensor]] = {}
    engine.stream.trace = lambda name, t: got.setdefault(name, []).append(t.detach().clone())
    n = exp["final_pool8"].shape[0] if "final_pool8" in exp else int(exp["final_idx"].max()) + 1
    out = _stream(node, lr, batch, n) * 2 - 1  # the node's frames, [0, 1] -> [-1, 1] as the fixture's
    rep.seconds = time.perf_counter() - t0
    rep.info.append(f"engine: {engine.describe()}")
    rep.info.append("official-mode options: resize=pil (Pillow bicubic on uint8), fit=crop (centre crop to 128 multiples)"
                    if official else "our defaults: resize=bicubic (torch, float), fit=pad")
    if "colorfix_call0" in got and tuple(out.shape[-2:]) != tuple(got["colorfix_call0"][0].shape[-2:]):
        # fit=crop on a size that is not a multiple of 128: the node resized the crop; compare the crop
        keys = sorted((k for k in got if k.startswith("colorfix_call")), key=lambda k: int(k.removeprefix("colorfix_call")))
        out = torch.cat([t for k in keys for t in got[k]]).clamp(-1, 1)
        rep.info.append("compared the engine's centre-cropped frames (the node resizes them to the output size)")
    if "lq_u8" in inputs:
        ours = torch.cat(got.get("lq_frames", []))[: inputs["lq_u8"].shape[0]]
        rep.rows.append(compare("LQ input (vs lq_u8)", ours, inputs["lq_u8"].permute(0, 3, 1, 2).float() / 255 * 2 - 1, 2.0))
    calls = sorted({int(k.removeprefix("dit_pred_call")) for k in exp if k.startswith("dit_pred_call")})
    for c in calls:
        for stage in ("lq_tokens", "dit_pred"):
            key = f"{stage}_call{c}"
            if key in exp:
                ours = got.get(key, [None])[0]
                rep.rows.append(compare(key, ours, exp[key]) if ours is not None else Row(key, math.inf, None, "not produced"))
    masks = sorted(k for k in exp if k.startswith("mask_call"))
    if masks:
        differ, total = 0, 0
        for k in masks:
            ours = got.get(k, [None])[0]
            if ours is None or ours.shape != exp[k].shape:
                differ, total = math.inf, total + exp[k].numel()
                break
            differ += int((ours.cpu() != exp[k]).sum())
            total += exp[k].numel()
        rep.rows.append(Row(f"masks ({len(masks)})", float(differ), None, f"entries that differ, of {total}"))
    if "decoder_call0_frames" in exp and "decoder_call0" in got:
        dec = got["decoder_call0"][0].float()
        idx = exp.get("decoder_call0_idx", torch.arange(exp["decoder_call0_frames"].shape[0]))
        H, W = exp["decoder_call0_frames"].shape[-2:]
        rep.rows.append(compare("decoder_call0_frames", dec[idx][..., :H, :W], exp["decoder_call0_frames"], 1.0))
        if "decoder_call0_pool8" in exp:
            rep.rows.append(compare("decoder_call0_pool8", F.avg_pool2d(dec[..., :H, :W].double(), 8), exp["decoder_call0_pool8"], 1.0))
    if out.shape[0] < n:
        rep.rows.append(Row("output frames", math.inf, None, f"{out.shape[0]} frames out, expected at least {n}", True))
        return rep
    rep.info.append(f"{lr.shape[0]} frames in, {out.shape[0]} out so far (the official code outputs {n}; compared: the first {n})")
    idx = exp.get("final_idx", torch.arange(exp["final_frames"].shape[0]))
    for j, i in enumerate(idx.tolist()):
        rep.rows.append(compare(f"final_frames[{i}]", out[i], exp["final_frames"][j], 2.0, final=True))
    if "final_pool8" in exp:
        pool = F.avg_pool2d(out[:n].double(), 8)
        for i in range(n):
            rep.rows.append(compare(f"final_pool8[{i}]", pool[i], exp["final_pool8"][i], 2.0, final=True))
    return rep


# --- Stream-DiffVSR ---------------------------------------------------------------------------------------


def check_stream_diffvsr(folder: Path, batch: int = 1, tol: float = DEFAULT_TOL) -> Report:
    from live_upscale.backends.stream_diffvsr import CPU_ENV

    inputs, exp = _load(folder / "inputs.safetensors"), _load(folder / "expected.safetensors")
    lr = _frames(inputs["lr_u8"]) if "lr_u8" in inputs else (inputs["lr"] + 1) / 2
    opts = {"noise_file": str(folder / "noise.safetensors"), "allow_cpu": True}
    if (folder / "flow.safetensors").is_file():
        opts["flow_file"] = str(folder / "flow.safetensors")
    if (folder / "prompt_embeds.safetensors").is_file():
        opts["prompt_embeds"] = str(folder / "prompt_embeds.safetensors")
    settings = json.loads((folder / "settings.json").read_text()) if (folder / "settings.json").is_file() else {}
    if "num_inference_steps" in settings:
        opts["steps"] = int(settings["num_inference_steps"])
    if "controlnet_conditioning_scale" in settings:
        opts["controlnet_scale"] = float(settings["controlnet_conditioning_scale"])
    old = os.environ.get(CPU_ENV)
    os.environ[CPU_ENV] = "1"  # the backend's probe refuses CPU for real checkpoints otherwise
    try:
        node = UpscaleNode(backend="stream_diffvsr", model=str(folder / "checkpoint"), scale=4.0, device="cpu",
                           precision="fp32", scene_cut=0.0, download=False, backend_options=opts)
        rep = Report("stream_diffvsr", str(folder), tol)
        t0 = time.perf_counter()
        engine = node.load()
    finally:
        if old is None:
            os.environ.pop(CPU_ENV, None)
        else:
            os.environ[CPU_ENV] = old
    got: dict[str, torch.Tensor] = {}
    engine.trace = lambda name, t: got.__setitem__(name, t.detach().clone())
    out = _stream(node, lr, batch, exp["frames"].shape[0])
    rep.seconds = time.perf_counter() - t0
    rep.info.append(f"engine: {engine.describe()}")
    if "prompt_embeds" in exp:
        rep.rows.append(compare("prompt_embeds", engine.emb, exp["prompt_embeds"]))
    if "timesteps" in exp:
        ts = torch.tensor(engine.plan.timesteps)
        same = ts.shape == exp["timesteps"].shape and torch.equal(ts, exp["timesteps"].to(ts.dtype))
        rep.rows.append(Row("timesteps", 0.0 if same else math.inf, None, f"ours {ts.tolist()}, expected {exp['timesteps'].tolist()}"))
    n = exp["frames"].shape[0]
    for i in range(n):
        if i and "warped_prev" in exp:
            rep.rows.append(compare(f"warped_prev[{i - 1}]", got.get(f"warped_prev[{i - 1}]", torch.full((0,), math.nan)), exp["warped_prev"][i - 1 : i], 2.0))
        for key in ("model_out", "latents_steps"):
            if key in exp:
                for s in range(exp[key].shape[1]):
                    name = f"{key}[{i},{s}]"
                    rep.rows.append(compare(name, got.get(name, torch.full((0,), math.nan)), exp[key][i, s : s + 1]))
        if "decoded" in exp:
            rep.rows.append(compare(f"decoded[{i}]", got.get(f"decoded[{i}]", torch.full((0,), math.nan)), exp["decoded"][i : i + 1], 2.0))
        if i < out.shape[0]:
            rep.rows.append(compare(f"frames[{i}]", out[i], exp["frames"][i], 1.0, final=True))
        else:
            rep.rows.append(Row(f"frames[{i}]", math.inf, None, "not produced", True))
    return rep


# --- entry ----------------------------------------------------------------------------------------------


def check(folder: str | Path, batch: int | None = None, tol: float = DEFAULT_TOL, official: bool = True) -> Report:
    """``official=False``: FlashVSR at our defaults (float resize, padding), to see what they change."""
    folder = Path(folder).expanduser()
    kind = detect(folder)
    if kind is None:
        raise LiveUpscaleError(f"{folder}: not a parity fixture (no FlashVSR DiT file, no checkpoint/unet/)")
    if kind == "flashvsr":
        return check_flashvsr(folder, batch or 8, tol, official)
    return check_stream_diffvsr(folder, batch or 1, tol)


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return "exact" if v == math.inf else f"{v:.1f} dB"


def summary(rep: Report) -> dict[str, tuple[float, float | None]]:
    """Stage family (``model_out``, ``dit_pred``, ...) -> (worst max abs, lowest PSNR)."""
    import re

    fam: dict[str, tuple[float, float | None]] = {}
    for r in rep.rows:
        key = re.sub(r"(_call\d+)|(\[[\d,]+\])", "", r.stage)
        worst, low = fam.get(key, (0.0, None))
        p = r.psnr if low is None else (low if r.psnr is None else min(low, r.psnr))
        fam[key] = (max(worst, r.max_abs), p)
    return fam


def print_report(rep: Report, out=print) -> None:
    out(f"parity: {rep.backend} on {rep.fixture} (CPU, fp32; {rep.seconds:.1f} s)")
    for line in rep.info:
        out(f"  {line}")
    out(f"  {'stage':<28} {'max abs':>10} {'PSNR':>10}  note")
    for r in rep.rows:
        mark = " *" if r.final and r.max_abs > rep.tol else ""
        out(f"  {r.stage:<28} {r.max_abs:>10.3g} {_fmt(r.psnr):>10}  {r.note}{mark}")
    out("  per stage (worst frame / call):")
    for stage, (worst, psnr_min) in summary(rep).items():
        out(f"    {stage:<26} {worst:>10.3g} {_fmt(psnr_min):>10}")
    verdict = "PASS" if rep.ok else "FAIL"
    out(f"{verdict}: every final frame within {rep.final_max:.3g} max abs (tolerance {rep.tol:g})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fixture", help="a parity fixture folder (e.g. ../shared/parity/flashvsr)")
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL, help="max abs error allowed on final frames")
    ap.add_argument("--batch", type=int, default=None, help="frames per node.process call (FlashVSR 8, else 1)")
    ap.add_argument("--our-defaults", action="store_true",
                    help="FlashVSR without the official-mode options (shows what our float resize changes)")
    args = ap.parse_args(argv)
    try:
        rep = check(args.fixture, args.batch, args.tol, official=not args.our_defaults)
    except (LiveUpscaleError, OSError, KeyError, ValueError) as e:
        print(f"parity: cannot check {args.fixture}: {e}", file=sys.stderr)
        return 2
    print_report(rep)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
