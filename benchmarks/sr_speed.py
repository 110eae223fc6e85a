"""GPU speed of the realesrgan backend vs the reference loop, in one run, same GPU, same weights.

    python benchmarks/sr_speed.py [--frames 200] [--sizes 512x512 1280x720] [--models rrdb_x2 compact_x4]

Reference = what Scope's RealESRGAN postprocessor does: plain bf16 PyTorch, one frame at a time,
``torch.cuda.synchronize()`` after each frame. Ours = the node's realesrgan engine: fp16,
channels_last, optionally torch.compile (CUDA graphs / max-autotune), batching, no host syncs.
Also the TouchDesigner-style path end to end: a BGRA uint8 flipped texture-shaped CUDA tensor
through ``node.cook`` and back. Random weights of the real architectures (speed does not depend
on the values). Prints a markdown table last: FPS, ms/frame, speedup over the reference, peak memory.
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

from live_upscale import UpscaleNode  # noqa: E402


def rrdb_x2_state_dict(nf=64, nb=23, gc=32) -> dict:
    """RealESRGAN_x2plus architecture (basicsr key layout), random weights."""
    sd = {}

    def conv(name, cout, cin):
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3) * (0.1 / (cin * 9) ** 0.5)
        sd[f"{name}.bias"] = torch.zeros(cout)

    conv("conv_first", nf, 12)
    for b in range(nb):
        for r in (1, 2, 3):
            for k in range(1, 6):
                conv(f"body.{b}.rdb{r}.conv{k}", nf if k == 5 else gc, nf + (k - 1) * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", 3, nf)
    return {"params_ema": sd}


def compact_x4_state_dict(nf=64, nconv=16) -> dict:
    """realesr-animevideov3 architecture (SRVGGNetCompact, 4x), random weights."""
    sd, idx = {}, 0
    shapes = [(nf, 3)] + [(nf, nf)] * nconv + [(48, nf)]
    for k, (co, ci) in enumerate(shapes):
        sd[f"body.{idx}.weight"] = torch.randn(co, ci, 3, 3) * (0.5 / (ci * 9) ** 0.5)
        sd[f"body.{idx}.bias"] = torch.zeros(co)
        if k < len(shapes) - 1:
            sd[f"body.{idx + 1}.weight"] = torch.full((co,), 0.25)
        idx += 2
    return {"params": sd}


MODELS = {"rrdb_x2": (rrdb_x2_state_dict, 2.0), "compact_x4": (compact_x4_state_dict, 2.0)}


def timeit(fn, frames: int, per_call: int) -> tuple[float, float]:
    """(ms per frame, peak GiB) over ``frames`` frames after a warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    calls = max(1, frames // per_call)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1000 / (calls * per_call)
    return ms, torch.cuda.max_memory_allocated() / 2**30


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--sizes", nargs="*", default=["512x512", "1280x720"])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--compile", nargs="*", default=["off", "reduce-overhead", "max-autotune"])
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("sr_speed: no CUDA device here; this benchmark needs a GPU (skipped)")
        return 0
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for name in a.models:
        make, scale = MODELS[name]
        path = tmp / f"{name}.pth"
        torch.save(make(), path)
        from live_upscale.backends.realesrgan import load_descriptor

        ref_model = load_descriptor(path).model.to(dev, torch.bfloat16).eval()
        for size in a.sizes:
            w, h = (int(v) for v in size.split("x"))
            frame = torch.rand(1, 3, h, w, device=dev)
            native = name == "rrdb_x2"  # the 4x compact model runs 2x with the input halved

            @torch.inference_mode()
            def reference():
                x = frame if native else torch.nn.functional.interpolate(frame, scale_factor=0.5, mode="bicubic",
                                                                          antialias=True)
                ref_model(x.to(torch.bfloat16)).float().clamp(0, 1)
                torch.cuda.synchronize()  # what the reference postprocessor does per frame

            ref_ms, ref_mem = timeit(reference, a.frames, 1)
            rows.append((name, size, "reference bf16, sync/frame", ref_ms, ref_ms, ref_mem))
            for mode in a.compile:
                node = UpscaleNode(backend="realesrgan", model=str(path), scale=scale, precision="fp16",
                                   compile=mode, device="cuda")
                for batch in (1, a.batch):
                    node.warmup(h, w, batch)
                    x = frame.expand(batch, -1, -1, -1).contiguous()
                    ms, mem = timeit(lambda: node.process(x), a.frames, batch)
                    rows.append((name, size, f"ours fp16 compile={mode} batch={batch}", ms, ref_ms, mem))
                # TouchDesigner-style: BGRA uint8 flipped texture in, same format out, all on the GPU
                tex = (torch.rand(h, w, 4, device=dev) * 255).to(torch.uint8)
                ms, mem = timeit(lambda: node.cook(tex, in_format="HWC:BGRA:uint8:flipped"), a.frames, 1)
                rows.append((name, size, f"TD path (cook BGRA u8) compile={mode}", ms, ref_ms, mem))
                node.close()
                torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name()
    print(f"\nGPU: {gpu}, torch {torch.__version__}")
    print("| model | input | path | FPS | ms/frame | speedup vs reference | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for name, size, path_name, ms, ref_ms, mem in rows:
        print(f"| {name} | {size} | {path_name} | {1000 / ms:.1f} | {ms:.2f} | {ref_ms / ms:.1f}x | {mem:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
