"""Stream frames through the live-upscale postprocessor inside a real Daydream Scope, and report.

Runs Scope's own code, nothing of ours stands in for it:

1. ``import scope.core.pipelines.registry``: Scope's start-up registration (built-in pipelines,
   then ``load_plugins()`` + ``register_plugin_nodes()`` through its ``PluginManager``, which finds
   our ``[project.entry-points."scope"]``);
2. ``PipelineManager.load_pipelines([(node_id, pipeline_id, load_params), ...])``;
3. ``graph_executor.build_graph(build_linear_graph([...]))``: source -> [main] -> live-upscale -> sink,
   one ``PipelineProcessor`` thread per pipeline, as a stream in the UI starts;
4. frames fed into the source queue at ``--fps`` (``VideoPacket`` with timestamps), read from the
   sink queue; mid-stream a runtime update (sharpen, stabilize), a resolution change and a reset.

Cases (``--case``):

- ``stream`` (default): the above.
- ``burst``: a main pipeline that emits chunks of ``--burst`` frames (12, like chunked generators)
  in front of the upscaler, ``--frames`` in all (48 = four bursts); reports how many frames reach
  the sink and whether their timestamps are contiguous. ``--pr532`` applies Scope's open PR #532
  (``input_size=1`` drains the queue and keeps the newest frame) to Scope's ``prepare_chunk``.
- ``reload``: ``--reloads`` load-parameter changes through ``PipelineManager.load_pipelines``
  (Scope unloads by dropping its reference + ``gc``), then unload; counts FlashVSR worker threads
  and live models after each step (use ``--backend flashvsr --model tiny,async=1``).

Needs Scope's source importable: a Python 3.12 venv with Scope installed from its checkout, or (for
these cases) Scope's ``src`` on ``PYTHONPATH`` with ``omegaconf`` and ``httpx`` beside it. Run it
from the Scope checkout (Scope reads ``uv.lock`` and ``pyproject.toml`` from there)::

    cd /path/to/scope && /path/to/venv/bin/python /path/to/live-upscale/benchmarks/scope_stream.py \\
        --backend classic --size 256x256 --frames 48 --chain passthrough
    ... scope_stream.py --case burst --backend flashvsr --model tiny --size 64x64 [--pr532]
    ... scope_stream.py --case reload --backend flashvsr --model tiny,async=1 --size 32x32
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import queue
import sys
import tempfile
import threading
import time
from collections import Counter
from fractions import Fraction
from typing import Any

import torch

PIPELINE_ID = "live-upscale"


def synthetic_frame(i: int, h: int, w: int) -> torch.Tensor:
    """A moving pattern, (1,H,W,3) uint8 (Scope's input format)."""
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    t = i / 25.0
    r = 0.5 + 0.5 * torch.sin(2 * math.pi * (3 * x + t))
    g = 0.5 + 0.5 * torch.cos(2 * math.pi * (2 * y - 0.5 * t))
    b = ((x * 8 + y * 8 + t).floor() % 2) * 0.8 + 0.1
    img = torch.stack([r.expand(h, w), g.expand(h, w), b.expand(h, w)], -1)
    return (img * 255).round().to(torch.uint8)[None]


def register_burst_main(size: int) -> str:
    """A stand-in main pipeline that emits chunks: it asks Scope for ``size`` frames and returns them all.

    Written against Scope's own base classes and registered in Scope's ``NodeRegistry``, so Scope's
    ``PipelineManager`` builds it (plugin branch) and a ``PipelineProcessor`` drives it like any
    chunked generator (LongLive, Krea: a chunk of frames per call).
    """
    from scope.core.nodes.registry import NodeRegistry
    from scope.core.pipelines.base_schema import BasePipelineConfig, ModeDefaults
    from scope.core.pipelines.interface import Pipeline, Requirements
    from scope.server.media_packets import MediaTimestamp

    pid = f"burst-main-{size}"

    class BurstConfig(BasePipelineConfig):
        pipeline_id = pid
        pipeline_name = f"Burst main ({size} frames per chunk)"
        pipeline_description = "benchmark: emits chunks"
        supports_prompts = False
        modes = {"video": ModeDefaults(default=True)}

    class BurstMain(Pipeline):
        frames_in = 0
        frames_out = 0

        @classmethod
        def get_config_class(cls):
            return BurstConfig

        def __init__(self, **kwargs):
            super().__init__()
            self.held: list = []

        def prepare(self, **kwargs):
            return Requirements(input_size=1)  # takes every source frame (no sampling loss on its side)

        def __call__(self, **kwargs):
            video = kwargs.get("video") or []
            if not video:
                return {}
            stamps = list(kwargs.get("video_timestamps") or [None] * len(video))
            type(self).frames_in += len(video)
            self.held += list(zip(video, stamps, strict=False))
            if len(self.held) < size:
                return {"video": None}  # generating: nothing out yet (Scope treats this as a done call)
            chunk, self.held = self.held[:size], self.held[size:]
            first = type(self).frames_out
            type(self).frames_out += len(chunk)
            out = torch.cat([v.float() / 255.0 for v, _ in chunk])
            # a generator stamps what it makes: 0, 1, 2, ... (so gaps downstream are the upscaler's)
            tb = getattr(chunk[0][1], "time_base", None)
            stamps = [MediaTimestamp(pts=first + i, time_base=tb) for i in range(len(chunk))]
            return {"video": out, "video_timestamps": stamps}  # a chunk of frames at once

    NodeRegistry.register(BurstMain)
    BURST_MAINS.append(BurstMain)
    return pid


BURST_MAINS: list = []


def pr532_prepare_chunk(original):
    """Scope's open PR #532 on top of a ``prepare_chunk``: input_size=1 drains the queue, keeps the newest."""

    def prepare_chunk(self, input_queue_ref, chunk_size):
        if chunk_size != 1:
            return original(self, input_queue_ref, chunk_size)
        newest = None
        while not input_queue_ref.empty():
            try:
                newest = input_queue_ref.get_nowait()
            except queue.Empty:
                break
        return [newest] if newest is not None else []

    return prepare_chunk


def apply_pr532() -> None:
    """Patch the imported Scope's ``PipelineProcessor`` with PR #532's sampling."""
    from scope.server.pipeline_processor import PipelineProcessor

    PipelineProcessor.prepare_chunk = pr532_prepare_chunk(PipelineProcessor.prepare_chunk)


def contiguous(pts: list) -> bool:
    """Timestamps in order with no gap (each one more than the last)."""
    vals = [p for p in pts if p is not None]
    return len(vals) == len(pts) and all(b == a + 1 for a, b in zip(vals, vals[1:]))


def flashvsr_census() -> dict[str, int]:
    """FlashVSR worker threads alive and FlashVSR models still in memory."""
    gc.collect()
    try:
        from live_upscale.backends.flashvsr.model import FlashVSRModel
    except Exception:  # noqa: BLE001
        FlashVSRModel = ()  # noqa: N806
    models = sum(1 for o in gc.get_objects() if FlashVSRModel and isinstance(o, FlashVSRModel))
    threads = sum(1 for t in threading.enumerate() if t.name == "flashvsr-worker" and t.is_alive())
    return {"threads": threads, "models": models}


def case_reload(args, load_params: dict[str, Any], report: dict) -> int:
    """Load, stream a few frames, change a load parameter ``--reloads`` times, unload: count what is left."""
    from scope.server.pipeline_manager import PipelineManager

    manager = PipelineManager()
    scales = [2.0, 3.0, 4.0, 1.5]
    steps = []
    h, w = load_params["height"], load_params["width"]
    for i in range(args.reloads + 1):
        params = {**load_params, "upscale_scale": str(scales[i % len(scales)])}
        t0 = time.perf_counter()
        ok = asyncio.run(manager.load_pipelines([(PIPELINE_ID, PIPELINE_ID, params)]))
        if not ok:
            report["load_error"] = manager.error_message
            print(json.dumps(report, indent=2, default=str))
            return 1
        pipe = manager.get_pipeline_by_id(PIPELINE_ID)
        pipe(video=[synthetic_frame(k, h, w) for k in range(3)], init_cache=True)
        engine = pipe.upscaler.node.engine.describe() if pipe.upscaler.node.engine is not None else None
        del pipe
        steps.append({"load": i, "scale": params["upscale_scale"], "load_s": round(time.perf_counter() - t0, 2),
                      "engine": engine, **flashvsr_census()})
    manager.unload_all_pipelines()
    time.sleep(0.5)
    left = flashvsr_census()
    report.update({"case": "reload", "reloads": args.reloads, "steps": steps, "left_after_unload": left,
                   "summary": f"{left['threads']} threads / {left['models']} models left after {args.reloads} reloads"})
    return 0



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="classic")
    ap.add_argument("--model", default=None, help="registered name or weights path (realesrgan)")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--size", default="256x256", help="HxW of the input frames")
    ap.add_argument("--size2", default="192x320", help="HxW after the mid-stream resolution change ('' = none)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--fps", type=float, default=25.0, help="rate at which frames enter the graph")
    ap.add_argument("--chain", default="", help="main pipeline before the upscaler, e.g. 'passthrough' ('' = none)")
    ap.add_argument("--batch", type=int, default=0, help="upscale_batch (0 = automatic)")
    ap.add_argument("--plain", action="store_true", help="no mid-stream events (runtime update, resize, reset): for timing")
    ap.add_argument("--json", default="", help="also write the report here")
    ap.add_argument("--case", choices=("stream", "burst", "reload"), default="stream")
    ap.add_argument("--burst", type=int, default=12, help="burst case: frames per chunk of the main pipeline")
    ap.add_argument("--pr532", action="store_true", help="apply Scope PR #532's input_size=1 draining first")
    ap.add_argument("--reloads", type=int, default=3, help="reload case: load-parameter changes")
    ap.add_argument("--drain-s", type=float, default=120.0, help="longest wait for the pipelines to drain")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "scope.server.kafka_publisher"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    home = tempfile.mkdtemp(prefix="scope-home-")
    os.environ.setdefault("DAYDREAM_SCOPE_PLUGINS_DIR", os.path.join(home, "plugins"))  # no plugins.txt: nothing reinstalled
    os.environ.setdefault("DAYDREAM_SCOPE_MODELS_DIR", os.path.join(home, "models"))

    # 1. Scope's start-up registration
    t0 = time.perf_counter()
    import scope
    from scope.core.nodes.registry import NodeRegistry
    from scope.core.pipelines.registry import PipelineRegistry  # noqa: F401  (registers on import)
    from scope.core.plugins import get_plugin_manager

    pm = get_plugin_manager()
    report: dict = {
        "scope_package": os.path.dirname(scope.__file__),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "registered": NodeRegistry.list_node_types(),
        "failed_plugins": [f.__dict__ for f in pm.get_failed_plugins()],
        "plugin_for_pipeline": pm.get_plugin_for_pipeline(PIPELINE_ID),
        "registration_s": round(time.perf_counter() - t0, 2),
    }
    if args.pr532:
        apply_pr532()
        report["pr532"] = True
    if PIPELINE_ID not in report["registered"]:
        print(json.dumps(report, indent=2, default=str))
        print(f"{PIPELINE_ID} was not discovered", file=sys.stderr)
        return 1

    # 2. load through the PipelineManager (flat load params, as the UI sends them)
    from scope.server.graph_executor import build_graph
    from scope.server.graph_schema import build_linear_graph
    from scope.server.media_packets import MediaTimestamp, VideoPacket
    from scope.server.pipeline_manager import PipelineManager

    h, w = (int(v) for v in args.size.lower().split("x"))
    load_params = {"height": h, "width": w, "upscale_backend": args.backend, "upscale_scale": str(args.scale)}
    if args.model:
        load_params["upscale_model"] = args.model
    if args.case == "reload":
        code = case_reload(args, load_params, report)
        text = json.dumps(report, indent=2, default=str)
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                f.write(text + "\n")
        return code
    if args.case == "burst":
        args.chain = register_burst_main(args.burst)
        args.plain = True
    chain = [p for p in args.chain.split(",") if p] + [PIPELINE_ID]
    manager = PipelineManager()
    t0 = time.perf_counter()
    ok = asyncio.run(manager.load_pipelines([(pid, pid, dict(load_params)) for pid in chain]))
    report["load_ok"], report["load_s"] = ok, round(time.perf_counter() - t0, 2)
    if not ok:
        report["load_error"] = manager.error_message
        print(json.dumps(report, indent=2, default=str))
        return 1
    upscaler = manager.get_pipeline_by_id(PIPELINE_ID)

    # 3. the graph a stream builds
    initial = {"input_mode": "video", "prompts": [{"text": "a test", "weight": 1.0}], "upscale_sharpen": 0.2}
    if args.batch:
        initial["upscale_batch"] = args.batch
    run = build_graph(build_linear_graph(chain), manager, initial_parameters=initial)
    proc = next(p for p in run.processors if p.pipeline_id == PIPELINE_ID)
    def sink_queue():
        # re-read every time: Scope replaces an output queue (and updates these references) when a
        # call returns more frames than it holds (``_resize_output_queue``)
        return run.sink_queues_by_node.get("output") or run.sink_processor.output_queue

    for p in run.processors:
        p.start()

    sent: dict[int, float] = {}
    received: list[tuple[tuple, str, int | None, float]] = []
    stop = threading.Event()

    def consume():
        while not stop.is_set() or not sink_queue().empty():
            try:
                pkt = sink_queue().get(timeout=0.05)
            except queue.Empty:
                continue
            t = pkt.tensor if hasattr(pkt, "tensor") else pkt
            pts = getattr(getattr(pkt, "timestamp", None), "pts", None)
            received.append((tuple(t.shape), str(t.dtype), pts, time.perf_counter()))

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()

    # 4. feed at the requested rate; mid-stream: runtime update, resolution change, reset
    if args.plain:
        args.size2 = ""
    h2, w2 = (int(v) for v in args.size2.lower().split("x")) if args.size2 else (h, w)
    dropped_at_source = 0
    period = 1.0 / args.fps
    start = time.perf_counter()
    events = []
    for i in range(args.frames):
        if i == args.frames // 3 and not args.plain:
            proc.update_parameters({"upscale_sharpen": 0.8, "upscale_stabilize": 0.5})
            events.append((i, "runtime update: upscale_sharpen 0.8, upscale_stabilize 0.5"))
        if i == args.frames // 2 and args.size2:
            events.append((i, f"resolution change {h}x{w} -> {h2}x{w2}"))
        if i == (3 * args.frames) // 4 and not args.plain:
            for p in run.processors:
                p.update_parameters({"reset_cache": True})
            events.append((i, "reset_cache"))
        fh, fw = (h2, w2) if (args.size2 and i >= args.frames // 2) else (h, w)
        frame = synthetic_frame(i, fh, fw)
        if torch.cuda.is_available():
            frame = frame.cuda()
        ts = MediaTimestamp(pts=i, time_base=Fraction(1, int(args.fps)))
        sent[i] = time.perf_counter()
        for q in run.source_queues:
            try:
                q.put_nowait(VideoPacket(tensor=frame, timestamp=ts))
            except queue.Full:
                dropped_at_source += 1
        delay = start + (i + 1) * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    deadline = time.perf_counter() + args.drain_s
    last_calls, last_change = -1, time.perf_counter()
    while time.perf_counter() < deadline:  # let the pipelines drain: queues empty, nothing new for 1.5 s
        calls = getattr(getattr(upscaler, "upscaler", None), "calls", 0)
        if calls != last_calls:
            last_calls, last_change = calls, time.perf_counter()
        busy = any(q.qsize() for p in run.processors for q in p.input_queues.values())
        quiet = time.perf_counter() - max([r[3] for r in received] + [last_change]) > 1.5
        if not busy and quiet:
            break
        time.sleep(0.05)
    stop.set()
    consumer.join(timeout=5)
    for p in run.processors:
        p.stop()

    latencies = sorted(r[3] - sent[r[2]] for r in received if r[2] in sent)
    info = upscaler.info() if hasattr(upscaler, "info") else {}
    report.update(
        {
            "chain": chain,
            "load_params": load_params,
            "frames_sent": args.frames,
            "dropped_at_source_queue": dropped_at_source,
            "frames_received": len(received),
            "output_shapes": {str(k): v for k, v in Counter(r[0] for r in received).items()},
            "output_dtypes": sorted({r[1] for r in received}),
            "pts_in_order": [r[2] for r in received] == sorted(r[2] for r in received if r[2] is not None),
            "pts_contiguous": contiguous([r[2] for r in received]),
            "first_pts": received[0][2] if received else None,
            "last_pts": received[-1][2] if received else None,
            "engine_still_holds": len(getattr(upscaler.upscaler, "_timestamps", ())),
            "frames_per_call": dict(getattr(upscaler.upscaler, "call_sizes", {})),
            "main_frames_in_out": [(m.frames_in, m.frames_out) for m in BURST_MAINS],
            "received_pts": [r[2] for r in received],
            "events": events,
            "processor_fps": round(proc.get_fps(), 1),
            "latency_ms_median": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "latency_ms_max": round(1000 * latencies[-1], 1) if latencies else None,
            "upscaler": {k: info.get(k) for k in (
                "backend", "engine", "device", "scale", "ms_per_frame", "input_size", "calls", "plugin_frames_in",
                "plugin_frames_out", "resets", "pass_through_frames", "errors", "load_error", "last_error",
                "scope_drains_single_frame", "engine_batch",
            )},  # fmt: skip
            "node_params": {k: getattr(upscaler.upscaler.node.params, k) for k in ("sharpen", "stabilize", "scene_cut")},
        }
    )
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
