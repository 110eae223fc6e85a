"""realesrgan scale routes (issue 19): the 2x default of a 4x model runs it at full size and downscales the
output; native 2x models are preferred when cached; each route's cost is counted on the model; hosts share
the default. Random weights in the official layouts for the logic, the real weight on real Vid4 frames for
the quality claim."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch

from live_upscale import UpscaleNode, weights
from live_upscale.backends import EngineConfig, table
from live_upscale.backends.realesrgan import (
    DEFAULT_MODEL,
    NATIVE_DEFAULTS,
    RealESRGANBackend,
    count_model,
    default_model,
    estimated_vram_gb,
    resolve_route,
)
from live_upscale.errors import InputError
from live_upscale.nodes.params import UpscaleParams
from live_upscale.ops.resample import resize
from tests.conftest import SHARED, compact_state_dict, rrdb_state_dict

CPU = torch.device("cpu")
XSX2, X2PLUS = NATIVE_DEFAULTS[2]


def engine(model, scale=2.0, **options):
    return RealESRGANBackend.load(EngineConfig(CPU, scale=scale, model=str(model) if model else None, options=options))


def cache(name: str, sd: dict, key: str = "params") -> Path:
    """Put a checkpoint where the weights manager keeps the registered model ``name`` (as `models fetch` would)."""
    p = weights.cached_path(weights.lookup(name))
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: sd}, p)
    return p


# --- routes ------------------------------------------------------------------------------------------


def test_route_resolution():
    assert resolve_route("auto", 4, 2.0) == resolve_route(None, 4, 2.0) == "output"
    assert resolve_route("input", 4, 2.0) == "input" and resolve_route("output", 4, 3.0) == "output"
    assert resolve_route("input", 2, 2.0) == resolve_route("auto", 4, 4.0) == "native"
    with pytest.raises(InputError, match="prescale must be one of"):
        resolve_route("sideways", 4, 2.0)


def test_default_route_of_a_4x_model_at_2x_is_full_size_then_antialiased_downscale(compact_x4):
    x = torch.rand(3, 3, 18, 22)
    eng = engine(compact_x4)  # no prescale: the default
    assert eng.route == "output" and "full input size" in eng.describe()
    y = eng.process(x)
    with torch.inference_mode():
        ref = resize(eng.desc.model(x).clamp(0, 1), (36, 44), "bicubic").clamp(0, 1)
    assert y.shape == (3, 3, 36, 44) and torch.allclose(y, ref, atol=1e-6)
    # the node's default reaches the engine as 'auto' -> the same route
    node = UpscaleNode(backend="realesrgan", model=str(compact_x4), device="cpu")
    assert node.params.prescale == "auto" and node.load().route == "output"
    assert torch.allclose(node.process(x), y, atol=1e-6)
    # the speed route is still there, and differs
    fast = engine(compact_x4, prescale="input")
    assert fast.route == "input" and "speed route" in fast.describe()
    assert (fast.process(x) - y).abs().mean() > 1e-4


def test_downscale_filter_option(compact_x4):
    x = torch.rand(1, 3, 16, 20)
    bic, lan = engine(compact_x4).process(x), engine(compact_x4, downscale="lanczos").process(x)
    with torch.inference_mode():
        full = engine(compact_x4, scale=4.0).process(x)
    assert torch.allclose(lan, resize(full, (32, 40), "lanczos").clamp(0, 1), atol=1e-5)
    assert (bic - lan).abs().mean() > 1e-4
    with pytest.raises(InputError, match="downscale must be one of"):
        engine(compact_x4, downscale="nearest")


def test_output_route_batches_and_tiles_give_the_same_frames(compact_x4):
    """Batches are downscaled one part at a time, tiles are stitched at model scale first: same result."""
    x = torch.rand(7, 3, 20, 24)
    whole = engine(compact_x4).process(x)
    parts = engine(compact_x4, max_batch=2).process(x)
    tiled = engine(compact_x4, tile=12, tile_overlap=8).process(x)
    one_by_one = torch.cat([engine(compact_x4).process(x[i : i + 1]) for i in range(7)])
    for other in (parts, tiled, one_by_one):
        assert (other - whole).abs().max() < 1e-5


def test_output_route_compiles_one_graph_per_shape_like_the_others(compact_x4):
    from torch._dynamo.utils import counters

    eager = engine(compact_x4)
    fast = engine(compact_x4, compile="default", compile_backend="eager")
    x = torch.rand(2, 3, 19, 23)
    assert (fast.process(x) - eager.process(x)).abs().max() < 1e-5  # compiles (or reuses dynamo's graph)
    g = counters["stats"]["unique_graphs"]
    for _ in range(2):  # the same shape again: no new graph
        assert (fast.process(x) - eager.process(x)).abs().max() < 1e-5
    assert counters["stats"]["unique_graphs"] == g and fast.compiled.shapes == {(2, 3, 19, 23)}


# --- native 2x models ----------------------------------------------------------------------------------


def test_native_2x_models_load_from_official_layouts_and_run_natively(tmp_path):
    xsx2 = tmp_path / "RealESRGANv2-animevideo-xsx2.pth"
    torch.save({"params": compact_state_dict(scale=2)}, xsx2)
    x2plus = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": rrdb_state_dict(scale=2)}, x2plus)
    x = torch.rand(2, 3, 14, 18)
    for p in (xsx2, x2plus):
        eng = engine(p)
        assert eng.model_scale == 2 and eng.route == "native" and "native 2x" in eng.describe()
        y = eng.process(x)
        with torch.inference_mode():
            ref = eng.desc.model(torch.nn.functional.pad(x, (0, 2, 0, 2), mode="reflect")).clamp(0, 1)[..., :28, :36] \
                if eng.desc.size_requirements.multiple_of == 4 else eng.desc.model(x).clamp(0, 1)
        assert y.shape == (2, 3, 28, 36) and (y - ref).abs().max() < 1e-5


def test_cached_native_model_is_the_2x_default_and_describe_and_doctor_say_so(compact_x4, capsys):
    from live_upscale.plugin.cli import main

    assert default_model(2.0) == (DEFAULT_MODEL, "default model")
    assert not {r.id: r for r in table(CPU)}["realesrgan"].probe.ok
    cache(X2PLUS, rrdb_state_dict(scale=2), "params_ema")
    assert default_model(2.0)[0] == X2PLUS
    cache(XSX2, compact_state_dict(scale=2))
    cache(DEFAULT_MODEL, compact_state_dict(scale=4))
    assert default_model(2.0) == (XSX2, "native 2x model cached")  # the cheaper native model wins
    assert default_model(4.0)[0] == default_model(1.5)[0] == DEFAULT_MODEL

    node = UpscaleNode(backend="realesrgan", scale=2.0, device="cpu")
    eng = node.load()
    assert eng.model_scale == 2 and eng.route == "native"
    assert f"from {XSX2} (native 2x model cached)" in eng.describe()
    assert node.process(torch.rand(1, 3, 10, 12)).shape == (1, 3, 20, 24)
    node.update(scale=4.0)
    assert node.load().source == DEFAULT_MODEL and node.engine.route == "native"
    # a named model is used as named, even where a native one is cached
    named = engine(DEFAULT_MODEL)
    assert named.model_scale == 4 and named.route == "output"

    probe = {r.id: r for r in table(CPU)}["realesrgan"].probe
    assert probe.ok and f"at 2x: native {XSX2}" in probe.reason
    assert main(["doctor"]) == 0
    assert f"at 2x: native {XSX2}" in capsys.readouterr().out


def test_only_a_native_model_cached_is_enough_at_2x(capsys):
    cache(XSX2, compact_state_dict(scale=2))
    probe = {r.id: r for r in table(CPU)}["realesrgan"].probe
    assert probe.ok and "only" in probe.reason and DEFAULT_MODEL in probe.reason
    assert UpscaleNode(backend="realesrgan", scale=2.0, device="cpu").load().source == XSX2


# --- cost ---------------------------------------------------------------------------------------------


def test_counted_cost_is_the_convolutions_and_routes_scale_with_pixels(compact_x4):
    eng = engine(compact_x4)
    nf, nconv = 8, 2  # the fixture's architecture
    per_px = 9 * (3 * nf + nconv * nf * nf + nf * 3 * 16)
    macs, act = count_model(eng.model, eng.desc.size_requirements)
    assert macs == per_px and act == 3 * 16  # the largest map: the 48-channel conv before the pixel shuffle
    out, inp = eng.cost(64, 48), eng.cost(64, 48, route="input")
    assert out.macs == per_px * 64 * 48 and inp.macs == per_px * 32 * 24 and out.macs == 4 * inp.macs
    assert out.activation_bytes > 3 * inp.activation_bytes
    assert "GMAC/frame at 512² in, 4x the input route's" in eng.describe()
    assert "0.25x the output route's" in engine(compact_x4, prescale="input").describe()


@pytest.mark.parametrize("name,sd", [
    ("realesr-animevideov3", lambda: compact_state_dict(64, 16, 4)),
    ("realesr-general-x4v3", lambda: compact_state_dict(64, 32, 4)),
    ("RealESRGANv2-animevideo-xsx2", lambda: compact_state_dict(64, 16, 2)),
    ("RealESRGAN_x2plus", lambda: rrdb_state_dict(2, 64, 23)),
])
def test_registry_cost_figures_are_counted_on_the_official_architectures(name, sd):
    info = weights.lookup(name)
    desc = spandrel.ModelLoader().load_from_state_dict(sd()).eval()
    assert desc.scale == info.scale
    assert sum(p.numel() for p in desc.model.parameters()) == info.params
    assert count_model(desc.model, desc.size_requirements) == (info.macs_per_px, info.act_per_px)


def test_vram_estimate_follows_the_route():
    full, half = estimated_vram_gb(DEFAULT_MODEL, 2.0, "output"), estimated_vram_gb(DEFAULT_MODEL, 2.0, "input")
    assert full == estimated_vram_gb(DEFAULT_MODEL, 2.0) and full > 3 * half > 0
    assert estimated_vram_gb(X2PLUS, 2.0, "input") == estimated_vram_gb(X2PLUS, 2.0, "output")  # native: no route
    assert estimated_vram_gb(DEFAULT_MODEL, 2.0, batch=8) > 7 * full
    assert estimated_vram_gb("not-a-model") == 0.0


# --- hosts share the default -------------------------------------------------------------------------


def test_hosts_default_to_auto():
    from live_upscale.plugin.cli import build_parser, node_params
    from live_upscale.plugin.touchdesigner import parameters
    from tests.standins import td

    assert UpscaleParams().prescale == "auto"
    args = build_parser().parse_args(["upscale", "a.mp4", "-o", "b.mp4"])
    assert node_params(args).prescale == "auto"  # the CLI leaves defaults to the node's params
    args = build_parser().parse_args(["upscale", "a.mp4", "-o", "b.mp4", "--prescale", "input"])
    assert node_params(args).prescale == "input"
    op = td.ScriptTOP([td.TOP(np.zeros((8, 8, 4), np.uint8))])
    parameters.setup(op, CPU)
    assert op.par.Prescale.menuNames == ["auto", "output", "input"] and op.par.Prescale.val == "auto"
    assert parameters.read(op)["prescale"] == "auto"
    op.par.Prescale.val = "input"
    assert UpscaleNode(**parameters.read(op)).params.prescale == "input"


def test_scope_config_defaults_follow_the_node(monkeypatch):
    import importlib

    from live_upscale.backends.realesrgan import COST_SIZE

    if importlib.util.find_spec("scope") is None:
        monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "scope_standins"))
    scope_modules = lambda: [m for m in sys.modules if m == "scope" or m.startswith(("scope.", "live_upscale.plugin.scope"))]  # noqa: E731
    for name in scope_modules():
        monkeypatch.delitem(sys.modules, name)  # put back afterwards
    try:
        importlib.import_module("live_upscale.plugin.scope.schema")
    finally:
        imported = {name: sys.modules.pop(name) for name in scope_modules()}  # what this test imported leaves with it
    LiveUpscaleConfig = imported["live_upscale.plugin.scope.schema"].LiveUpscaleConfig  # noqa: N806
    fields = LiveUpscaleConfig.model_fields
    assert fields["upscale_prescale"].default == "auto" and fields["upscale_model"].default == ""
    # the VRAM estimate covers the heaviest 2x default (full-size 4x Compact or a native 2x model) at 512²
    assert COST_SIZE == 512
    need = max(estimated_vram_gb(m, 2.0) for m in (DEFAULT_MODEL, *NATIVE_DEFAULTS[2]))
    assert need < LiveUpscaleConfig.estimated_vram_gb < need + 1.0


# --- real weight, real video ----------------------------------------------------------------------------


def _metrics():
    pytest.importorskip("cv2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import metrics

    return metrics


@pytest.mark.parametrize("seq", ["calendar", "city"])
def test_default_route_beats_bicubic_on_detail_at_its_psnr_and_flicker(shared_weight, seq):
    """Issue 19's bar on a crop of real Vid4 frames with the real model: more detail than bicubic, PSNR within
    2 dB of it, warping error at most 1.25x bicubic's (the full table: benchmarks/quality.py, README)."""
    from PIL import Image

    metrics = _metrics()
    files = sorted((SHARED / "data" / "vid4" / seq).glob("*.png"))[:4]
    if len(files) < 4:
        pytest.skip(f"../shared/data/vid4/{seq} not present")
    hr_imgs = [Image.open(f).convert("RGB").crop((200, 160, 392, 352)) for f in files]  # 192² HR crop
    gt = [np.asarray(i, dtype=np.float32) / 255 for i in hr_imgs]
    lr = torch.stack([torch.from_numpy(np.asarray(i.resize((96, 96), Image.BICUBIC), dtype=np.float32) / 255)
                      .permute(2, 0, 1) for i in hr_imgs])
    node = UpscaleNode(backend="realesrgan", model=str(shared_weight), device="cpu")
    ours = [f.permute(1, 2, 0).numpy() for f in node.process(lr)]
    bic = [f.permute(1, 2, 0).numpy() for f in resize(lr, (192, 192), "bicubic").clamp(0, 1)]
    flows = metrics.reference_flows(gt)
    psnr = lambda out: float(np.mean([metrics.psnr(o, g) for o, g in zip(out, gt)]))  # noqa: E731
    assert metrics.laplacian_energy(ours) > 1.2 * metrics.laplacian_energy(bic)
    assert psnr(ours) > psnr(bic) - 2.0
    assert metrics.warping_error(ours, flows) <= 1.25 * metrics.warping_error(bic, flows)


def test_auto_leaves_the_route_to_each_backend():
    """'auto' reaches no backend as a value: each applies its own default (stream_diffvsr keeps 'input')."""
    from live_upscale.backends.base import Engine
    from tests.conftest import registered_engine

    seen: list[dict] = []

    class Capture(Engine):
        def __init__(self, config):
            super().__init__(config)
            seen.append(dict(config.options))

        def process(self, frames):
            return resize(frames, (frames.shape[-2] * 2, frames.shape[-1] * 2), "bilinear")

    with registered_engine("capture_route", Capture):
        UpscaleNode(backend="capture_route", device="cpu").load()
        UpscaleNode(backend="capture_route", device="cpu", prescale="input").load()
    assert "prescale" not in seen[0] and seen[1]["prescale"] == "input"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["off", "reduce-overhead"])
def test_gpu_default_route_fp16_batched_compiled_matches_eager_fp32(compact_x4, mode):
    """The full-size route on CUDA: fp16, batches of 4 + 1, CUDA graphs; each batch downscaled as it comes."""
    cuda = torch.device("cuda")
    x = torch.rand(5, 3, 64, 80, device=cuda)
    ref = RealESRGANBackend.load(EngineConfig(cuda, scale=2.0, model=str(compact_x4), precision="fp32"))
    fast = RealESRGANBackend.load(EngineConfig(cuda, scale=2.0, model=str(compact_x4), precision="fp16",
                                               options={"compile": mode, "max_batch": 4}))
    assert fast.route == "output"
    want = ref.process(x)
    for _ in range(3):  # CUDA-graph replays must not hand out overwritten buffers
        y = fast.process(x)
    assert y.dtype == torch.float32 and y.shape == want.shape == (5, 3, 128, 160)
    err = (y - want).abs()
    assert err.max() < 2e-2 and err.mean() < 2e-3
    if mode != "off":
        assert fast.compiled.shapes == {(4, 3, 64, 80), (1, 3, 64, 80)}


def test_describe_survives_a_model_the_counter_cannot_run(compact_x4, monkeypatch):
    import live_upscale.backends.realesrgan as rg

    eng = engine(compact_x4)
    monkeypatch.setattr(rg, "count_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("untraceable")))
    assert "cost not counted" in eng.describe()


def test_quality_benchmark_runs_routes_filters_and_timing(compact_x4, capsys, monkeypatch):
    """benchmarks/quality.py end to end on two real street frames, with a tiny model through --weights."""
    import importlib.util

    if not (SHARED / "data" / "realworld" / "street_320x180").is_dir():
        pytest.skip("../shared/data/realworld/street_320x180 not present")
    pytest.importorskip("cv2")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_bench", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality_bench", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "WEIGHTS", bench.WEIGHTS)  # main() rebinds it from --weights
    keys = ["bicubic", "realesrgan", "realesrgan-out-lanczos", "realesrgan-out+stab"]
    assert bench.main(["--sequences", "street", "--backends", *keys, "--max-frames", "2", "--timing", "1",
                       "--weights", str(compact_x4)]) == 0
    out = capsys.readouterr().out
    rows = {ln.split("|")[2].strip(): ln for ln in out.splitlines() if ln.startswith("| street")}
    assert set(rows) == {bench.CONFIGS[k][0] for k in ["bicubic", "realesrgan-out", "realesrgan-in",
                                                        "realesrgan-out-lanczos", "realesrgan-out+stab"]}
    gmac = lambda label: float(rows[label].strip().strip("|").split("|")[-1])  # noqa: E731
    full, half = gmac(bench.CONFIGS["realesrgan-out"][0]), gmac(bench.CONFIGS["realesrgan-in"][0])
    assert full == pytest.approx(4 * half, rel=0.05) and full > 0
    assert "ms/frame taking turns (1 rounds" in out
