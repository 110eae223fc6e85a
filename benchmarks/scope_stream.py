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

Needs a Python 3.12 venv with Scope installed from its checkout and this package installed
(see the README, "Daydream Scope"). Run it from the Scope checkout (Scope reads ``uv.lock`` and
``pyproject.toml`` from the working directory)::

    cd /path/to/scope && /path/to/venv/bin/python /path/to/live-upscale/benchmarks/scope_stream.py \\
        --backend classic --size 256x256 --frames 48 --chain passthrough
"""

from __future__ import annotations

import argparse
import asyncio
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
    sink_q = run.sink_queues_by_node.get("output") or run.sink_processor.output_queue
    for p in run.processors:
        p.start()

    sent: dict[int, float] = {}
    received: list[tuple[tuple, str, int | None, float]] = []
    stop = threading.Event()

    def consume():
        while not stop.is_set() or not sink_q.empty():
            try:
                pkt = sink_q.get(timeout=0.05)
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
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:  # let the pipelines drain
        busy = any(q.qsize() for p in run.processors for q in p.input_queues.values())
        if not busy and time.perf_counter() - max([r[3] for r in received] or [0]) > 1.0:
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
            "events": events,
            "processor_fps": round(proc.get_fps(), 1),
            "latency_ms_median": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "latency_ms_max": round(1000 * latencies[-1], 1) if latencies else None,
            "upscaler": {k: info.get(k) for k in (
                "backend", "engine", "device", "scale", "ms_per_frame", "input_size", "calls", "plugin_frames_in",
                "plugin_frames_out", "resets", "pass_through_frames", "errors", "load_error", "last_error",
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
