"""The realesrgan fast path (issue 9): compiled shape cache, batch plans, TensorRT fallback, transfers.

CPU tests compile for real with torch.compile (dynamo, and inductor where a C compiler is needed
anyway by the existing equivalence test); GPU tests are marked and skipped without CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from live_upscale import UpscaleNode
from live_upscale.backends import EngineConfig
from live_upscale.backends.realesrgan import (
    MAX_BATCH,
    CompiledModel,
    RealESRGANBackend,
    batch_plan,
    cudnn_autotune,
    tensorrt_cache_dir,
)
from live_upscale.nodes import formats
from tests.conftest import has_cuda

CPU = torch.device("cpu")


def engine(path, **options):
    return RealESRGANBackend.load(EngineConfig(CPU, scale=2.0, model=str(path), options=options))


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


# --- batch plans ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,max_batch,pow2,plan",
    [
        (1, 8, True, [1]),
        (7, 8, True, [4, 2, 1]),
        (8, 8, True, [8]),
        (13, 8, True, [8, 4, 1]),
        (13, 6, True, [4, 4, 4, 1]),  # a max that is not a power of two rounds down
        (13, 8, False, [8, 5]),
        (3, 1, True, [1, 1, 1]),
        (0, 8, True, []),
    ],
)
def test_batch_plan(n, max_batch, pow2, plan):
    assert batch_plan(n, max_batch, pow2) == plan


def test_batch_plan_covers_every_size_with_few_distinct_parts():
    for n in range(1, 100):
        parts = batch_plan(n, MAX_BATCH, True)
        assert sum(parts) == n and all(p <= MAX_BATCH and p & (p - 1) == 0 for p in parts)
    assert len({p for n in range(1, 100) for p in batch_plan(n)}) == 4  # 8, 4, 2, 1: four graphs per frame size


# --- compiled shape cache --------------------------------------------------------------------------------


def test_size_change_compiles_once_and_going_back_compiles_nothing(compact_x4):
    eager = engine(compact_x4)
    fast = engine(compact_x4, compile="default", compile_backend="eager")  # dynamo for real, no C compiler
    a, b = torch.rand(1, 3, 24, 32), torch.rand(1, 3, 20, 28)
    before = graphs()
    for x, new_graphs in [(a, 1), (b, 1), (a, 0), (b, 0), (a, 0)]:
        g = graphs()
        y = fast.process(x)
        assert graphs() - g == new_graphs
        assert (y - eager.process(x)).abs().max() < 1e-5
    assert graphs() - before == 2 and len(fast.compiled.shapes) == 2


def test_odd_batches_reuse_power_of_two_graphs(compact_x4):
    eager = engine(compact_x4)
    fast = engine(compact_x4, compile="default", compile_backend="eager")
    x = torch.rand(7, 3, 16, 20)
    g = graphs()
    y = fast.process(x)
    assert graphs() - g == 3  # 4 + 2 + 1
    assert (y - eager.process(x)).abs().max() < 1e-5
    g = graphs()
    fast.process(torch.rand(6, 3, 16, 20))  # 4 + 2: both compiled already
    fast.process(torch.rand(3, 3, 16, 20))  # 2 + 1
    assert graphs() == g


def test_shape_cache_is_bounded(compact_x4, caplog):
    eager = engine(compact_x4)
    fast = engine(compact_x4, compile="default", compile_backend="eager", max_shapes=2)
    g = graphs()
    with caplog.at_level("WARNING"):
        for s in (12, 14, 16, 18):
            x = torch.rand(1, 3, s, s)
            assert (fast.process(x) - eager.process(x)).abs().max() < 1e-5
    assert graphs() - g == 2 and len(fast.compiled.shapes) == 2
    assert sum("new shapes run uncompiled" in r.message for r in caplog.records) == 1


def test_batched_equals_frame_by_frame(compact_x4):
    """The whole batch goes through the model at once and gives what one frame at a time gives."""
    eng = engine(compact_x4)
    x = torch.rand(5, 3, 18, 22)
    y = eng.process(x)
    ys = torch.cat([eng.process(x[i : i + 1]) for i in range(5)])
    assert y.shape == (5, 3, 36, 44) and (y - ys).abs().max() < 1e-5


def test_tensorrt_without_torch_tensorrt_falls_back_and_says_so(compact_x4, caplog, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_trt(name, *a, **k):
        if name == "torch_tensorrt":
            raise ImportError("No module named 'torch_tensorrt'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_trt)
    with caplog.at_level("WARNING"):
        fast = engine(compact_x4, compile="tensorrt", compile_backend="eager")
    assert fast.compiled.mode == "max-autotune"
    assert "torch-tensorrt is not usable here" in fast.describe() and "max-autotune" in fast.describe()
    assert any("torch-tensorrt" in r.message for r in caplog.records)
    x = torch.rand(2, 3, 16, 16)
    assert (fast.process(x) - engine(compact_x4).process(x)).abs().max() < 1e-5


def test_a_failing_tensorrt_build_falls_back_at_the_first_frame(compact_x4, caplog):
    """torch-tensorrt builds lazily, at the first call of a shape: a failure there must not end the stream."""
    fast = engine(compact_x4, compile="default", compile_backend="eager")
    cm = fast.compiled
    cm.mode = "tensorrt"  # as if torch-tensorrt had been set up

    def broken(x):
        raise RuntimeError("TensorRT: builder failed\nlong log")

    cm.fn = broken
    x = torch.rand(1, 3, 16, 16)
    with caplog.at_level("WARNING"):
        y = fast.process(x)
    assert (y - engine(compact_x4).process(x)).abs().max() < 1e-5
    assert cm.mode == "max-autotune" and "TensorRT build failed (RuntimeError: TensorRT: builder failed long log)" in cm.note


def test_a_failing_inductor_compile_is_not_hidden(compact_x4):
    fast = engine(compact_x4, compile="default", compile_backend="eager")

    def broken(x):
        raise RuntimeError("inductor bug")

    fast.compiled.fn = broken
    with pytest.raises(RuntimeError, match="inductor bug"):
        fast.process(torch.rand(1, 3, 8, 8))


def test_tensorrt_cache_dir_is_keyed_by_device_build_and_precision(monkeypatch, tmp_path):
    monkeypatch.setenv("LIVE_UPSCALE_CACHE", str(tmp_path))
    a = tensorrt_cache_dir(CPU, torch.float16)
    b = tensorrt_cache_dir(CPU, torch.bfloat16)
    assert a != b and a.parent == tmp_path / "tensorrt"
    assert "float16" in a.name and "trt" in a.name and all(c.isalnum() or c in "-." for c in a.name)


def test_compile_mode_is_checked():
    with pytest.raises(ValueError, match="compile mode"):
        CompiledModel(torch.nn.Identity(), "turbo", CPU, torch.float32)
    with pytest.raises(Exception, match="compile"):
        UpscaleNode(compile="turbo")


def test_cudnn_autotune_restores_the_host_flag():
    prev = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_autotune(True):
            assert torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark is False
        with pytest.raises(KeyError):
            with cudnn_autotune(True):
                raise KeyError("x")
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = prev


def test_oom_first_makes_batches_smaller_then_tiles(compact_x4):
    node = UpscaleNode(backend="realesrgan", model=str(compact_x4), scale=2)
    eng = node.load()
    real = eng._run_batch
    seen = []

    def limited(x):  # a "GPU" that holds one 32x32 frame per call at most
        seen.append(tuple(x.shape))
        if x.shape[0] * x.shape[-1] * x.shape[-2] > 32 * 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(x)

    eng._run_batch = limited
    x = torch.rand(4, 3, 32, 32)  # the default route: the model sees 4 x 32x32
    y = node.process(x)
    ref = engine(compact_x4).process(x)
    assert (y - ref).abs().max() < 1e-5
    assert eng.max_batch == 1 and not eng.tile
    assert node.notices == ["out of memory at (32, 32): realesrgan now uses batches of at most 2 frames",
                            "out of memory at (32, 32): realesrgan now uses batches of at most 1 frames"]


# --- transfers ---------------------------------------------------------------------------------------


def test_pinned_upload_is_a_plain_copy_off_cuda():
    up = formats.PinnedUpload()
    t = torch.arange(12, dtype=torch.uint8).reshape(2, 2, 3)
    assert up(t, CPU) is t or torch.equal(up(t, CPU), t)
    assert up._ring == []  # nothing pinned for a CPU node


def test_bgr_decode_encode_roundtrip_without_index_lists():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgb, alpha, fmt = formats.decode(img, "HWC:BGRA:uint8:flipped")
    assert torch.allclose(rgb[0, 0], torch.from_numpy(img[::-1, :, 2].copy()).float() / 255, atol=1e-6)
    out = formats.encode(rgb, fmt, alpha)
    assert np.array_equal(out.numpy(), img)


# --- GPU ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
def test_gpu_pinned_upload_keeps_every_frame_intact(compact_x4):
    node = UpscaleNode(backend="realesrgan", model=str(compact_x4), scale=2, device="cuda", precision="fp32")
    ref = UpscaleNode(backend="realesrgan", model=str(compact_x4), scale=2, device="cpu")
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 64, 4), dtype=np.uint8) for _ in range(6)]
    outs = [node.cook(f, "HWC:BGRA:uint8") for f in frames]  # numpy in, numpy out, buffers reused in turn
    assert len(node._upload._ring) == 2 and not node._upload.disabled
    for f, o in zip(frames, outs):
        want = ref.cook(f, "HWC:BGRA:uint8").astype(int)
        assert isinstance(o, np.ndarray) and np.abs(o.astype(int) - want).max() <= 2  # TF32 convs on CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend,stabilize", [("realesrgan", 0.0), ("realesrgan", 1.0), ("classic", 1.0)])
def test_gpu_hot_path_never_syncs_the_host(compact_x4, backend, stabilize):
    """CUDA frames in, CUDA frames out: torch's sync debugger raises on any device->host wait."""
    node = UpscaleNode(backend=backend, model=str(compact_x4) if backend == "realesrgan" else None, scale=2,
                       device="cuda", stabilize=stabilize)
    tex = (torch.rand(64, 96, 4, device="cuda") * 255).to(torch.uint8)
    node.warmup(64, 96)
    node.cook(tex, "HWC:BGRA:uint8:flipped")  # first frame: history allocation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            node.cook(tex, "HWC:BGRA:uint8:flipped")
            node.process(torch.rand(2, 3, 64, 96, device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["off", "reduce-overhead"])
def test_gpu_fp16_fast_path_matches_eager_fp32(rrdb_x2, mode):
    x = torch.rand(3, 3, 64, 80, device="cuda")
    ref = RealESRGANBackend.load(EngineConfig(torch.device("cuda"), scale=2.0, model=str(rrdb_x2), precision="fp32"))
    fast = RealESRGANBackend.load(
        EngineConfig(torch.device("cuda"), scale=2.0, model=str(rrdb_x2), precision="fp16", options={"compile": mode})
    )
    want = ref.process(x)
    for _ in range(3):  # CUDA-graph replays must not hand out overwritten buffers
        y = fast.process(x)
    assert y.dtype == torch.float32 and y.shape == want.shape
    err = (y - want).abs()
    assert err.max() < 2e-2 and err.mean() < 2e-3


# --- the benchmark script itself (so it works the day a GPU is lent) ------------------------------------


def test_sr_speed_benchmark_runs_end_to_end_on_cpu(capsys, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    from live_upscale.plugin.touchdesigner import top
    from tests.standins import td

    monkeypatch.setitem(sys.modules, "td", td)
    monkeypatch.setattr(top, "ALLOW_HOST_MEMORY", True)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sr_speed.py"
    spec = importlib.util.spec_from_file_location("sr_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--device", "cpu", "--tiny", "--sizes", "40x24", "--frames", "2", "--compile", "off"]) == 0
    out = capsys.readouterr().out
    table = [ln for ln in out.splitlines() if ln.startswith("| rrdb_x2plus") or ln.startswith("| compact_x2")]
    assert len(table) == 2 * 5  # reference, batch 1, batch 4, TouchDesigner, CPU host
    for ln in table:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert float(cells[3]) > 0 and cells[5].endswith("x")
        if cells[2].startswith(("reference", "ours")):
            assert float(cells[7].split("/")[0]) < 1e-4  # fp32 on CPU: our path is the model
    assert "RESULTS.md rows:" in out and out.count("| CPU (") >= 8


def test_native_2x_compact_runs_at_full_size_without_resizes(tmp_path):
    """RealESRGANv2-animevideo-xsx2's layout (SRVGGNetCompact, upscale 2): the 2x goal model, no resize around it."""
    from tests.conftest import compact_state_dict

    path = tmp_path / "RealESRGANv2-animevideo-xsx2.pth"
    torch.save({"params": compact_state_dict(num_feat=8, num_conv=3, scale=2)}, path)
    eng = engine(path)
    assert eng.model_scale == 2 and "native 2x" in eng.describe()
    x = torch.rand(2, 3, 30, 42)
    with torch.inference_mode():
        want = eng.model(x).clamp(0, 1)
    assert torch.equal(eng.process(x), want)
