"""The Daydream Scope postprocessor, driven the way Scope drives it.

Discovery through Scope's ``PluginManager`` (entry point group ``scope``, pluggy hooks), construction
through ``PipelineManager``'s plugin branch (schema defaults + a flat dict of load params, no
device), then frames through ``PipelineProcessor.process_chunk``: ``prepare()``, lists of
``(1,H,W,3)`` uint8, ``init_cache``, runtime params as kwargs on every call, resets, a resolution
change, output split into frames.

With Scope installed (Python 3.12) these are Scope's real classes. Without it (CI) the minimal
stand-ins in ``tests/scope_standins`` are put on ``sys.path`` for this module only; see the README
there for the Scope commit they follow.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import logging
import queue
import subprocess
import sys
import threading
import time
import tomllib
import weakref
from fractions import Fraction
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from live_upscale import UpscaleNode
from live_upscale.backends import registry
from live_upscale.backends.base import Backend, Capabilities, Engine, Probe
from live_upscale.ops.resample import out_size

REPO = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).resolve().parent / "scope_standins"
PIPELINE_ID = "live-upscale"
REAL_SCOPE = importlib.util.find_spec("scope") is not None
PLUGIN_MODULES = ("live_upscale.plugin.scope.plugin", "live_upscale.plugin.scope.schema", "live_upscale.plugin.scope.pipeline")


def _forget_scope_modules() -> None:
    for name in list(sys.modules):
        if name == "scope" or name.startswith("scope.") or name in PLUGIN_MODULES:
            del sys.modules[name]


@pytest.fixture(scope="module", autouse=True)
def scope_env():
    """Scope's real modules when installed, else the stand-ins (for this module only)."""
    if REAL_SCOPE:
        yield "real"
        return
    sys.path.insert(0, str(STANDINS))
    _forget_scope_modules()
    try:
        yield "stand-ins"
    finally:
        sys.path.remove(str(STANDINS))
        _forget_scope_modules()


# --- test engines --------------------------------------------------------------------------------


class BlendEngine(Engine):
    """Temporal, one output per input: each output is averaged with the previous one."""

    caps = Capabilities(temporal=True)

    def __init__(self, config):
        super().__init__(config)
        self.prev = None
        self.resets = 0

    def process(self, frames):
        outs = []
        for f in frames:
            y = F.interpolate(f[None], size=out_size(*f.shape[-2:], self.scale), mode="nearest")
            if self.prev is not None:
                y = 0.5 * y + 0.5 * self.prev
            self.prev = y
            outs.append(y)
        return torch.cat(outs)

    def reset(self):
        self.prev = None
        self.resets += 1


class ChunkEngine(BlendEngine):
    """Buffers frames and emits them in chunks of (at least) 3, like chunked video SR models."""

    caps = Capabilities(temporal=True, delay=2, chunk=3)

    def __init__(self, config):
        super().__init__(config)
        self.buf = []

    def process(self, frames):
        self.buf.extend(frames)
        if len(self.buf) < 3:
            h, w = out_size(*frames.shape[-2:], self.scale)
            return frames.new_zeros((0, 3, h, w))
        out = super().process(torch.stack(self.buf))
        self.buf = []
        return out

    def reset(self):
        super().reset()
        self.buf = []


class FailingEngine(Engine):
    error: type[BaseException] = RuntimeError

    def process(self, frames):
        raise type(self).error("boom: engine exploded")


def _backend(engine_cls, backend_id):
    return type(
        f"{engine_cls.__name__}Backend",
        (Backend,),
        {
            "id": backend_id,
            "label": backend_id,
            "priority": -10,
            "probe": classmethod(lambda cls, device, model=None: Probe(True)),
            "load": classmethod(lambda cls, config: engine_cls(config)),
        },
    )


@pytest.fixture
def test_backends():
    added = [_backend(BlendEngine, "test_blend"), _backend(ChunkEngine, "test_chunk"), _backend(FailingEngine, "test_fail")]
    for b in added:
        registry.register(b)
    yield
    for b in added:
        registry._BACKENDS.pop(b.id, None)
    FailingEngine.error = RuntimeError


# --- Scope's side --------------------------------------------------------------------------------


def _our_entry_point() -> tuple[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    group = data["project"]["entry-points"]["scope"]
    assert len(group) == 1, "Scope rejects a package with more than one entry point in group 'scope'"
    return next(iter(group.items()))


def _installed_entry_point():
    return next((ep for ep in entry_points(group="scope") if ep.value.startswith("live_upscale.")), None)


def discover():
    """Scope's discovery: PluginManager.load_plugins() + register_plugin_nodes() -> NodeRegistry."""
    from scope.core.nodes.registry import NodeRegistry
    from scope.core.plugins import PluginManager

    pm = PluginManager()
    if _installed_entry_point() is not None:
        pm.load_plugins()  # reads installed metadata, like Scope
        assert not [f for f in pm.get_failed_plugins() if "live" in f.package_name.lower()]
    else:  # metadata predates the entry point (editable install not refreshed): what pluggy does with it
        name, value = _our_entry_point()
        pm.pm.register(importlib.import_module(value), name=name)
    pm.register_plugin_nodes()
    cls = NodeRegistry.get(PIPELINE_ID)
    assert cls is not None, f"{PIPELINE_ID} not registered; got {NodeRegistry.list_node_types()}"
    return cls


def load(load_params: dict | None = None):
    """PipelineManager's plugin branch: cls(**non-None schema defaults, **load_params)."""
    from scope.server.pipeline_manager import PipelineManager

    discover()
    return PipelineManager()._load_pipeline_implementation(PIPELINE_ID, dict(load_params or {}))


class Spy:
    """Records what the processor hands to the upscaler and what it gets back."""

    def __init__(self, inner):
        self.inner, self.calls, self.outs = inner, [], []

    def __call__(self, **kw):
        self.calls.append(kw)
        out = self.inner(**kw)
        self.outs.append(out)
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def processor(pipeline, **initial):
    from scope.server.pipeline_processor import PipelineProcessor

    proc = PipelineProcessor(pipeline=pipeline, pipeline_id=PIPELINE_ID, initial_parameters={"input_mode": "video", **initial})
    proc.input_queues["video"] = queue.Queue(maxsize=30)  # graph_executor's DEFAULT_INPUT_QUEUE_MAXSIZE
    proc.output_queues["video"] = [queue.Queue(maxsize=1000)]
    pipeline.upscaler = Spy(pipeline.upscaler)
    return proc


_pts = iter(range(10**9))


def feed(proc, frames):
    from scope.server.media_packets import MediaTimestamp, VideoPacket

    stamps = []
    for f in frames:
        ts = MediaTimestamp(pts=next(_pts), time_base=Fraction(1, 30))
        proc.input_queues["video"].put_nowait(VideoPacket(tensor=f, timestamp=ts))
        stamps.append(ts)
    return stamps


def run(proc, max_ticks=100):
    """Tick until the processor stops making progress (it waits for input_size frames)."""
    for _ in range(max_ticks):
        before = (proc.input_queues["video"].qsize(), len(proc.pipeline.upscaler.calls))
        proc.process_chunk()
        if (proc.input_queues["video"].qsize(), len(proc.pipeline.upscaler.calls)) == before:
            return


def drain(proc):
    q = proc.output_queues["video"][0]
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def frame(h, w, value=None, seed=0):
    """One Scope input frame: (1,H,W,3) uint8 RGB, distinct channels."""
    if value is not None:
        return torch.full((1, h, w, 3), round(value * 255), dtype=torch.uint8)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, max(2, h // 4), max(2, w // 4), generator=g)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x[:, 1] *= 0.5  # channels differ, so a channel mix-up shows
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# --- discovery, schema, imports ---------------------------------------------------------------------


def test_entry_point_and_discovery():
    name, value = _our_entry_point()
    assert value == "live_upscale.plugin.scope.plugin"
    ep = _installed_entry_point()
    if ep is not None:
        assert (ep.name, ep.value) == (name, value)
    cls = discover()
    from scope.core.pipelines.base_schema import BasePipelineConfig, UsageType
    from scope.core.pipelines.interface import Pipeline

    assert issubclass(cls, Pipeline)
    cfg = cls.get_config_class()
    assert issubclass(cfg, BasePipelineConfig) and cfg.pipeline_id == PIPELINE_ID
    assert UsageType.POSTPROCESSOR in cfg.usage and list(cfg.modes) == ["video"] and not cfg.supports_prompts
    meta = cfg.get_schema_with_metadata()
    json.dumps(meta)  # the UI gets it as JSON
    props = meta["config_schema"]["properties"]
    ours = {k: v for k, v in props.items() if "ui" in v}
    assert set(ours) == {
        "upscale_backend", "upscale_model", "upscale_scale", "upscale_precision", "upscale_prescale",
        "upscale_quality", "upscale_compile", "upscale_sharpen", "upscale_stabilize", "upscale_scene_cut",
        "upscale_batch",
    }  # fmt: skip
    load_params = {k for k, v in ours.items() if v["ui"]["is_load_param"]}
    assert load_params == {"upscale_backend", "upscale_model", "upscale_scale", "upscale_precision", "upscale_prescale",
                           "upscale_quality", "upscale_compile"}
    assert set(props["upscale_compile"]["enum"]) == {"off", "default", "reduce-overhead", "max-autotune", "tensorrt"}
    assert {"auto", "classic", "realesrgan"} <= set(props["upscale_backend"]["enum"])
    assert props["upscale_model"]["type"] == "string"  # names, weights paths, RTX VSR specs
    assert set(props["upscale_scale"]["enum"]) == {1.5, 2.0, 3.0, 4.0}
    assert props["upscale_sharpen"]["minimum"] == 0 and props["upscale_sharpen"]["maximum"] == 2
    assert props["upscale_stabilize"]["maximum"] == 1
    cfg()  # Scope instantiates the config for defaults: every field has one
    assert cls.get_definition().node_type_id == PIPELINE_ID


def test_importing_the_package_never_imports_scope():
    # (a Scope venv imports scope at start-up through its patches.pth: compare before/after)
    code = (
        "import sys\n"
        "def scope_mods(): return {m for m in sys.modules if m == 'scope' or m.startswith('scope.')}\n"
        "before = scope_mods()\n"
        "import live_upscale, live_upscale.plugin, live_upscale.plugin.scope, live_upscale.plugin.scope.adapter\n"
        "assert scope_mods() == before, sorted(scope_mods() - before)\n"
        "try:\n    import live_upscale.plugin.scope.plugin\nexcept ImportError as e:\n    print('ImportError:', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    if not REAL_SCOPE:
        assert "needs Scope" in r.stdout


# --- streaming through the processor ---------------------------------------------------------------


def test_stream_frames_params_and_timestamps():
    # the flat load-param bag carries other pipelines' keys too; the select widget sends strings
    pipe = load({"upscale_backend": "classic", "upscale_scale": "2", "height": 24, "width": 32, "quantization": None, "vace_enabled": False, "loras": []})
    proc = processor(pipe, prompts=[{"text": "a cat", "weight": 1.0}], noise_scale=0.7, upscale_sharpen=0.3)
    assert pipe.prepare(video=True).input_size == 1
    frames = [frame(24, 32, seed=i) for i in range(5)]
    stamps = feed(proc, frames)
    run(proc)
    calls, outs = pipe.upscaler.calls, pipe.upscaler.outs
    assert len(calls) == 5
    assert [c["init_cache"] for c in calls] == [True, False, False, False, False]
    for c in calls:
        assert all(v.shape == (1, 24, 32, 3) and v.dtype == torch.uint8 for v in c["video"])
        assert c["upscale_sharpen"] == 0.3 and c["prompts"][0]["text"] == "a cat"  # every call, foreign keys too
    for o in outs:
        v = o["video"]
        assert v.dtype == torch.float32 and v.shape == (1, 48, 64, 3)
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    packets = drain(proc)
    assert len(packets) == 5 and [p.timestamp for p in packets] == stamps
    assert all(p.tensor.shape == (1, 48, 64, 3) and p.tensor.dtype == torch.uint8 for p in packets)
    # the same frames through the node directly: the plugin adds nothing and mixes no channels
    node = UpscaleNode(backend="classic", scale=2.0, sharpen=0.3)
    for f, p in zip(frames, packets, strict=True):
        want = node.process(f.permute(0, 3, 1, 2).float() / 255).permute(0, 2, 3, 1)
        assert (p.tensor.float() / 255 - want).abs().max() <= 1.5 / 255
    assert pipe.upscaler.node.params.sharpen == 0.3 and pipe.upscaler.node.backend_id == "classic"


def test_runtime_params_apply_without_reload():
    pipe = load({"upscale_backend": "classic"})
    proc = processor(pipe)
    f = frame(16, 16, seed=3)
    feed(proc, [f])
    run(proc)
    engine = pipe.upscaler.node.engine
    proc.update_parameters({"upscale_sharpen": 1.5, "upscale_stabilize": 0.5, "upscale_scene_cut": 0.3})
    feed(proc, [f])
    run(proc)
    p = pipe.upscaler.node.params
    assert (p.sharpen, p.stabilize, p.scene_cut) == (1.5, 0.5, 0.3)
    assert pipe.upscaler.node.engine is engine  # runtime knobs never re-create the engine
    a, b = (o["video"] for o in pipe.upscaler.outs)
    assert not torch.equal(a, b)  # sharpening changed the output
    proc.update_parameters({"upscale_sharpen": 7.0, "upscale_stabilize": "junk"})  # out of range / not a number
    feed(proc, [f])
    run(proc)
    assert pipe.upscaler.node.params.sharpen == 2.0 and pipe.upscaler.node.params.stabilize == 0.5
    assert pipe.upscaler.outs[-1]["video"].shape == (1, 32, 32, 3)


def test_temporal_state_survives_calls_and_reset_is_honoured(test_backends):
    pipe = load({"upscale_backend": "test_blend", "upscale_scale": 2.0})
    proc = processor(pipe, upscale_scene_cut=0.0)
    feed(proc, [frame(8, 8, 0.40)])
    run(proc)
    feed(proc, [frame(8, 8, 0.46)])
    run(proc)
    out = [p.tensor.float() / 255 for p in drain(proc)]
    assert len(out) == 2
    assert torch.allclose(out[1], torch.full_like(out[1], (0.40 + 0.46) / 2), atol=1.5 / 255)  # history from the last call
    engine = pipe.upscaler.node.engine
    resets = engine.resets
    proc.update_parameters({"reset_cache": True})
    feed(proc, [frame(8, 8, 0.60)])
    run(proc)
    assert pipe.upscaler.calls[-1]["init_cache"] is True
    assert engine.resets == resets + 1 and pipe.upscaler.node.engine is engine  # reset, not reloaded
    (p,) = drain(proc)
    assert torch.allclose(p.tensor.float() / 255, torch.full((1, 16, 16, 3), 0.60), atol=1.5 / 255)  # no ghost
    feed(proc, [frame(8, 8, 0.60)])
    run(proc)
    assert pipe.upscaler.calls[-1]["init_cache"] is False


def test_resolution_change_mid_stream(test_backends):
    pipe = load({"upscale_backend": "test_blend", "upscale_scale": 2.0})
    proc = processor(pipe, upscale_scene_cut=0.0)
    feed(proc, [frame(8, 12, 0.2), frame(8, 12, 0.2)])
    run(proc)
    resets = pipe.upscaler.node.resets
    feed(proc, [frame(10, 6, 0.9), frame(10, 6, 0.9)])
    run(proc)
    packets = drain(proc)
    assert [tuple(p.tensor.shape) for p in packets] == [(1, 16, 24, 3)] * 2 + [(1, 20, 12, 3)] * 2
    assert pipe.upscaler.node.resets == resets + 1
    assert torch.allclose(packets[2].tensor.float() / 255, torch.full((1, 20, 12, 3), 0.9), atol=1.5 / 255)  # no old history


def test_buffering_engine_returns_fewer_frames_then_the_rest(test_backends):
    pipe = load({"upscale_backend": "test_chunk"})
    assert pipe.prepare(video=True).input_size == 1  # one frame per call for chunked engines too
    proc = processor(pipe, upscale_scene_cut=0.0)
    stamps = feed(proc, [frame(6, 6, 0.5)] * 2)
    run(proc)
    assert [tuple(o["video"].shape) for o in pipe.upscaler.outs] == [(0, 12, 12, 3)] * 2  # empty chunks, not {}
    stamps += feed(proc, [frame(6, 6, 0.5)] * 2)
    run(proc)
    assert [c["init_cache"] for c in pipe.upscaler.calls] == [True, False, False, False]  # {} would re-send init_cache
    packets = drain(proc)
    assert len(packets) == 3 and [p.timestamp for p in packets] == stamps[:3]  # the held frames keep their timestamps
    assert all(p.tensor.shape == (1, 12, 12, 3) for p in packets)
    assert len(pipe.upscaler.inner._timestamps) == 1  # the 4th frame: still in the engine, stamp kept for it


def test_mixed_sizes_in_one_batch_and_empty_input():
    pipe = load({"upscale_backend": "classic", "upscale_scale": 1.5})
    out = pipe(video=[frame(20, 20, seed=1), frame(12, 16, seed=2), frame(20, 20, seed=3)], init_cache=True)
    assert out["video"].shape == (3, 30, 30, 3)  # resized to the first frame's size, as Scope's helpers do
    assert pipe(video=[], init_cache=False) == {}
    assert pipe(video=None) == {}
    assert pipe() == {}
    out = pipe(video=torch.zeros(2, 4, 4, 3, dtype=torch.uint8))  # a THWC tensor instead of a list
    assert out["video"].shape == (2, 6, 6, 3)
    assert pipe(video=[torch.zeros(1, 4, 4, 5, dtype=torch.uint8)]) == {}  # unreadable: skipped, no raise
    assert pipe.upscaler.errors == 1


def test_errors_pass_frames_through_resized_and_log_once(test_backends, caplog):
    pipe = load({"upscale_backend": "test_fail", "upscale_scale": 2.0})
    proc = processor(pipe)
    caplog.set_level(logging.DEBUG, logger="live_upscale.plugin.scope")
    frames = [frame(10, 14, seed=i) for i in range(3)]
    feed(proc, frames)
    run(proc)
    packets = drain(proc)
    assert len(packets) == 3 and all(p.tensor.shape == (1, 20, 28, 3) for p in packets)
    for f, p in zip(frames, packets, strict=True):  # the input, resized: the stream keeps its size and content
        small = F.interpolate(p.tensor.permute(0, 3, 1, 2).float(), size=(10, 14), mode="area")
        assert (small - f.permute(0, 3, 1, 2).float()).abs().mean() < 6
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "boom" in r.getMessage()]
    assert len(errors) == 1
    assert pipe.upscaler.errors == 3 and "boom" in pipe.upscaler.info()["last_error"]


def test_out_of_memory_never_reaches_the_processor(test_backends):
    FailingEngine.error = torch.cuda.OutOfMemoryError  # Scope's processor would stop on this one
    pipe = load({"upscale_backend": "test_fail"})
    proc = processor(pipe, upscale_batch=8)
    feed(proc, [frame(6, 6, 0.5)] * 8)
    run(proc)
    assert len(drain(proc)) == 8
    assert pipe.prepare(video=True, upscale_batch=8).input_size == 8  # what the user asked Scope for
    assert pipe.upscaler.info()["engine_batch"] == 4  # the engine gets halves of it from now on


def test_unloadable_backend_falls_back_to_classic(test_backends):
    # tests run offline with an empty weights cache: the registered model cannot be fetched
    pipe = load({})  # schema defaults only: realesrgan + realesr-animevideov3
    up = pipe.upscaler
    assert up.node.backend_id == "classic" and "realesr-animevideov3" in up.load_error
    proc = processor(pipe)
    feed(proc, [frame(8, 8, seed=1)])
    run(proc)
    assert drain(proc)[0].tensor.shape == (1, 16, 16, 3)


def test_bad_load_values_never_block_loading():
    pipe = load({"upscale_backend": "classic", "upscale_scale": "x", "upscale_sharpen": "junk", "upscale_stabilize": 9, "upscale_batch": "many"})
    p = pipe.upscaler.node.params
    assert (p.scale, p.sharpen, p.stabilize) == (2.0, 0.0, 1.0)  # default, default, clamped
    assert pipe.prepare(video=True).input_size == 1
    out = pipe(video=[frame(8, 8, seed=0)], init_cache=True)
    assert out["video"].shape == (1, 16, 16, 3)
    assert pipe.info()["backend"] == "classic"


def test_realesrgan_model_by_path(compact_x4):
    pipe = load({"upscale_backend": "realesrgan", "upscale_model": str(compact_x4), "upscale_scale": 2.0})
    assert pipe.upscaler.node.backend_id == "realesrgan" and not pipe.upscaler.load_error
    proc = processor(pipe)
    feed(proc, [frame(12, 16, seed=i) for i in range(2)])
    run(proc)
    packets = drain(proc)
    assert len(packets) == 2 and all(p.tensor.shape == (1, 24, 32, 3) for p in packets)


def test_scopes_even_sampling_drops_frames_when_batching():
    """Why the default is one frame per call: Scope keeps ``input_size`` of the queued frames and drops the rest."""
    got = {}
    for batch in (1, 4):
        pipe = load({"upscale_backend": "classic"})
        proc = processor(pipe, upscale_batch=batch)
        feed(proc, [frame(6, 6, seed=i) for i in range(12)])  # a generator's chunk arrives at once
        run(proc)
        got[batch] = len(drain(proc))
    assert got[1] == 12 and got[4] < 12


def test_weights_go_beside_scopes_models(monkeypatch, tmp_path):
    from live_upscale.plugin.scope.adapter import use_scope_models_dir

    monkeypatch.delenv("LIVE_UPSCALE_CACHE", raising=False)
    monkeypatch.setenv("DAYDREAM_SCOPE_MODELS_DIR", str(tmp_path / "models"))
    use_scope_models_dir()
    import os

    assert os.environ["LIVE_UPSCALE_CACHE"] == str(tmp_path / "models" / "live-upscale")
    monkeypatch.setenv("LIVE_UPSCALE_CACHE", "/elsewhere")
    use_scope_models_dir()
    assert os.environ["LIVE_UPSCALE_CACHE"] == "/elsewhere"  # the user's choice wins


# --- bursts, reloads, tiers (issue 16) --------------------------------------------------------------


@pytest.fixture
def pr532(monkeypatch, request):
    """Scope's sampling as of 0.2.4 (False) or with PR #532 merged (True: input_size=1 drains the queue)."""
    from scope.server.pipeline_processor import PipelineProcessor

    from live_upscale.plugin.scope import pipeline as pipeline_mod

    drains = bool(getattr(request, "param", False))
    if not REAL_SCOPE:
        monkeypatch.setattr(PipelineProcessor, "DRAIN_SINGLE_FRAME", drains)
    elif drains:  # real Scope: its prepare_chunk with the PR's change applied on top (as benchmarks/scope_stream.py)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
        try:
            from scope_stream import pr532_prepare_chunk
        finally:
            sys.path.pop(0)
        monkeypatch.setattr(PipelineProcessor, "prepare_chunk", pr532_prepare_chunk(PipelineProcessor.prepare_chunk))
    monkeypatch.setattr(pipeline_mod, "_DRAINS", None)  # the probe asks Scope's code again
    yield drains
    pipeline_mod._DRAINS = None


def bursts(proc, n_bursts=4, size=12, h=8, w=8):
    """A main pipeline emitting chunks: each burst lands in the queue at once, then the processor runs."""
    sent = []
    for b in range(n_bursts):
        sent += [ts.pts for ts in feed(proc, [frame(h, w, seed=b * size + i) for i in range(size)])]
        run(proc, max_ticks=200)
    return sent


@pytest.mark.parametrize("pr532", [False, True], indirect=True, ids=["scope-0.2.4", "pr532"])
@pytest.mark.parametrize("backend", ["classic", "test_chunk"])
def test_bursts_of_12_lose_no_frame(test_backends, pr532, backend):
    pipe = load({"upscale_backend": backend, "upscale_scale": 2.0})
    assert pipe.upscaler.drains_single is pr532  # the pipeline asked Scope's own prepare_chunk
    proc = processor(pipe, upscale_scene_cut=0.0)
    sent = bursts(proc)
    pts = [p.timestamp.pts for p in drain(proc)]
    held = len(pipe.upscaler.inner._timestamps)  # frames the engine still buffers
    assert len(pts) + held == 48 and held < 3  # nothing dropped: only what the chunk engine holds
    assert pts == sent[: len(pts)]  # in order, no gap
    sizes = {len(c["video"]) for c in pipe.upscaler.calls}
    assert sizes == ({12} if pr532 else {1})  # PR #532: every queued frame at once; else one per call


@pytest.mark.parametrize("pr532", [False, True], indirect=True, ids=["scope-0.2.4", "pr532"])
def test_what_scope_drops_when_asked_for_the_wrong_size(pr532):
    """The stand-in's two behaviours, shown with a forced frames-per-call: why the automatic choice matters."""
    forced = 1 if pr532 else 8  # PR #532 drains for 1; even sampling drops for 8 (FlashVSR's old chunk)
    pipe = load({"upscale_backend": "classic"})
    proc = processor(pipe, upscale_batch=forced)
    bursts(proc)
    got = len(drain(proc))
    assert got < 48
    if pr532:
        assert got == 4  # the newest frame of each burst


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "flashvsr-worker" and t.is_alive()]


def _models() -> int:
    from live_upscale.backends.flashvsr.model import FlashVSRModel

    return sum(1 for o in gc.get_objects() if isinstance(o, FlashVSRModel))


def test_reloads_leak_no_thread_and_no_model():
    """Scope's unload drops its reference and runs gc (never shutdown()): nothing of ours may stay."""
    import asyncio

    from scope.server.pipeline_manager import PipelineManager

    discover()
    torch.set_num_threads(1)
    gc.collect()
    base_threads, base_models = len(_workers()), _models()
    manager = PipelineManager()
    refs = []
    for scale in ("2", "3", "4", "2"):  # three load-parameter changes
        params = {"upscale_backend": "flashvsr", "upscale_model": "tiny,async=1", "upscale_scale": scale, "height": 16, "width": 16}
        assert asyncio.run(manager.load_pipelines([(PIPELINE_ID, PIPELINE_ID, params)]))
        pipe = manager.get_pipeline_by_id(PIPELINE_ID)
        assert pipe.upscaler.node.backend_id == "flashvsr" and "async worker" in pipe.upscaler.node.engine.describe()
        out = pipe(video=[frame(16, 16, seed=i) for i in range(3)], init_cache=True)  # the worker runs
        assert out["video"].shape[0] <= 3
        refs.append(weakref.ref(pipe.upscaler.node.engine.model))
        del pipe, out
        assert len(_workers()) - base_threads == 1 and _models() - base_models == 1
    assert [r() is None for r in refs] == [True, True, True, False]  # only the current model is alive
    manager.unload_all_pipelines()
    deadline = time.monotonic() + 10
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_workers()) == base_threads and _models() == base_models  # 0 threads, 0 models left
    assert refs[-1]() is None


def test_shutdown_and_drop_close_the_engine_once():
    pipe = load({"upscale_backend": "flashvsr", "upscale_model": "tiny,async=1"})
    node = pipe.upscaler.node
    assert node.engine is not None and len(_workers()) >= 1
    pipe.shutdown()
    assert node.engine is None
    pipe.shutdown()  # a second call is harmless
    pipe = load({"upscale_backend": "flashvsr", "upscale_model": "tiny,async=1"})
    model = weakref.ref(pipe.upscaler.node.engine.model)
    del pipe
    gc.collect()
    assert model() is None


def test_tiers_register_with_artifacts_names_and_vram():
    discover()
    from scope.core.nodes.registry import NodeRegistry
    from scope.core.pipelines.artifacts import HuggingfaceRepoArtifact

    metas = {}
    for pid in ("live-upscale", "live-upscale-flashvsr", "live-upscale-stream-diffvsr"):
        cls = NodeRegistry.get(pid)
        assert cls is not None, pid
        cfg = cls.get_config_class()
        cfg()  # every field has a default
        metas[pid] = cfg.get_schema_with_metadata()
        json.dumps(metas[pid], default=str)
    assert metas["live-upscale"]["name"].startswith("Live Upscale") and "Real-ESRGAN" in metas["live-upscale"]["name"]
    assert metas["live-upscale-flashvsr"]["name"] == "Live Upscale · FlashVSR"
    assert metas["live-upscale-stream-diffvsr"]["name"] == "Live Upscale · Stream-DiffVSR"
    vram = {pid: m["estimated_vram_gb"] for pid, m in metas.items()}
    assert vram["live-upscale"] < vram["live-upscale-stream-diffvsr"] < vram["live-upscale-flashvsr"]
    assert not metas["live-upscale"]["requires_models"]
    assert metas["live-upscale-flashvsr"]["requires_models"] and metas["live-upscale-stream-diffvsr"]["requires_models"]
    (fa,) = NodeRegistry.get("live-upscale-flashvsr").get_config_class().artifacts
    assert isinstance(fa, HuggingfaceRepoArtifact) and fa.repo_id == "JunhaoZhuang/FlashVSR-v1.1"
    assert set(fa.files) == {"diffusion_pytorch_model_streaming_dmd.safetensors", "LQ_proj_in.ckpt", "TCDecoder.ckpt"}
    (sa,) = NodeRegistry.get("live-upscale-stream-diffvsr").get_config_class().artifacts
    assert sa.repo_id == "Jamichsu/Stream-DiffVSR" and {"unet", "controlnet", "vae", "model_index.json"} <= set(sa.files)
    backends = set(metas["live-upscale"]["config_schema"]["properties"]["upscale_backend"]["enum"])
    assert "flashvsr" not in backends and "stream_diffvsr" not in backends  # they are their own entries
    for pid in ("live-upscale-flashvsr", "live-upscale-stream-diffvsr"):
        assert "upscale_backend" not in metas[pid]["config_schema"]["properties"]


def test_tiers_load_what_scopes_download_left_in_its_models_folder(monkeypatch, tmp_path):
    """Scope's download flow puts HuggingfaceRepoArtifact files in get_models_dir()/<repo name>."""
    from scope.core.config import get_models_dir
    from scope.core.nodes.registry import NodeRegistry

    from live_upscale import weights
    from live_upscale.plugin.scope.adapter import TIERS, tier_model

    monkeypatch.setenv("DAYDREAM_SCOPE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("LIVE_UPSCALE_CACHE", raising=False)
    discover()
    models = Path(get_models_dir())
    flash = TIERS["live-upscale-flashvsr"]
    folder = models / "FlashVSR-v1.1"
    assert tier_model(flash, "") is None  # nothing downloaded yet: the backend's own message
    (fa,) = NodeRegistry.get(flash.pipeline_id).get_config_class().artifacts
    folder.mkdir(parents=True)
    for f in fa.files:  # what Scope's download leaves
        (folder / f).write_bytes(b"x")
    try:  # Scope's own check, where it is importable
        from scope.server.models_config import models_are_downloaded

        assert models_are_downloaded(flash.pipeline_id)
    except ImportError:
        pass
    # the 4 MB prompt embedding is not on Hugging Face: fetched through our cache (pre-filled: offline test)
    monkeypatch.setenv("LIVE_UPSCALE_CACHE", str(models / "live-upscale"))
    prompt = weights.cached_path(weights.lookup("FlashVSR-v1.1-prompt"))
    prompt.parent.mkdir(parents=True)
    prompt.write_bytes(b"prompt")
    assert tier_model(flash, "") == str(folder)
    assert (folder / "posi_prompt.pth").read_bytes() == b"prompt"
    assert tier_model(flash, "sparse_ratio=1.5,async=1") == f"{folder},sparse_ratio=1.5,async=1"
    assert tier_model(flash, "realesr-animevideov3") == str(folder)  # Live Upscale's model in the shared dict
    assert tier_model(flash, "tiny,async=1") == "tiny,async=1"
    # through the pipeline: FlashVSR needs CUDA for real weights, so here it falls back, having asked for the folder
    cls = NodeRegistry.get(flash.pipeline_id)
    from scope.server.pipeline_manager import PipelineManager

    pipe = PipelineManager()._load_pipeline_implementation(flash.pipeline_id, {"upscale_backend": "realesrgan"})
    info = pipe.info()
    assert info["pipeline_id"] == flash.pipeline_id and info["requested"]["backend"] == "flashvsr"
    if not torch.cuda.is_available():
        assert info["backend"] == "classic" and info["load_error"]
    assert cls is type(pipe)
    sd = TIERS["live-upscale-stream-diffvsr"]
    (models / "Stream-DiffVSR").mkdir()
    assert tier_model(sd, "") == str(models / "Stream-DiffVSR")


def test_weights_we_fetch_go_into_scopes_models_dir(monkeypatch, tmp_path):
    from live_upscale.plugin.scope.adapter import scope_models_dir, use_scope_models_dir

    monkeypatch.delenv("LIVE_UPSCALE_CACHE", raising=False)
    monkeypatch.setenv("DAYDREAM_SCOPE_MODELS_DIR", str(tmp_path / "m"))
    from scope.core.config import get_models_dir

    assert scope_models_dir() == Path(get_models_dir())  # Scope's own answer
    use_scope_models_dir()
    import os

    assert Path(os.environ["LIVE_UPSCALE_CACHE"]) == Path(get_models_dir()) / "live-upscale"


def test_load_fields_arriving_at_runtime_recreate_the_engine(test_backends):
    """Graph mode hands node-card values over at run time: a changed load field re-creates the engine."""
    pipe = load({"upscale_backend": "classic", "upscale_scale": "2"})
    proc = processor(pipe)
    feed(proc, [frame(8, 8, seed=1)])
    run(proc)
    engine = pipe.upscaler.node.engine
    proc.update_parameters({"upscale_scale": "2", "upscale_backend": "classic"})  # unchanged: nothing happens
    feed(proc, [frame(8, 8, seed=2)])
    run(proc)
    assert pipe.upscaler.node.engine is engine and pipe.upscaler.info()["runtime_reloads"] == 0
    proc.update_parameters({"upscale_scale": "3", "upscale_backend": "test_blend"})
    feed(proc, [frame(8, 8, seed=3)])
    run(proc)
    assert pipe.upscaler.node.backend_id == "test_blend" and pipe.upscaler.info()["runtime_reloads"] == 1
    assert drain(proc)[-1].tensor.shape == (1, 24, 24, 3)
