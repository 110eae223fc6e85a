"""rtx_vsr backend against a stand-in ``nvvfx`` that follows nvidia-vfx's documented API.

The stand-in (tests/standins/nvvfx) accepts CPU tensors so the engine runs here; the real SDK
needs CUDA tensors on an RTX GPU under Windows (or Linux with the driver's NGX library).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from live_upscale import BackendUnavailable, InputError, LiveUpscaleError, UpscaleNode
from live_upscale.backends import EngineConfig, registry, rtx_vsr
from live_upscale.backends.rtx_vsr import RTXVSRBackend, parse_spec, plan_sizes
from live_upscale.ops.resample import out_size

CPU = torch.device("cpu")


@pytest.fixture
def nv(monkeypatch):
    from tests.standins import nvvfx as stub

    stub.reset()
    monkeypatch.setitem(sys.modules, "nvvfx", stub)
    monkeypatch.setitem(sys.modules, "nvvfx.effects", stub.effects)
    yield stub
    stub.reset()


@pytest.fixture
def ready(nv, monkeypatch):
    """A machine where RTX VSR can run: Windows, nvvfx importable, a CUDA RTX GPU (faked for the probe)."""
    monkeypatch.setattr(rtx_vsr, "_system", lambda: "Windows")
    monkeypatch.setattr(rtx_vsr, "cuda_reason", lambda device: None)
    monkeypatch.setattr(rtx_vsr, "_gpu_reason", lambda device: None)
    monkeypatch.setattr(rtx_vsr, "_capability", lambda device: (8, 6))
    return nv


def load(scale=2.0, model=None, **options):
    return RTXVSRBackend.load(EngineConfig(CPU, scale=scale, model=model, options=options))


def smooth(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, max(2, h // 4), max(2, w // 4), generator=g)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


# --- probe: clear reasons ---------------------------------------------------------------------------


def test_probe_wrong_os(monkeypatch):
    monkeypatch.setattr(rtx_vsr, "_system", lambda: "Darwin")
    p = RTXVSRBackend.probe(CPU)
    assert not p and "Windows" in p.reason and "Darwin" in p.reason


def test_probe_package_missing(monkeypatch):
    monkeypatch.setattr(rtx_vsr, "_system", lambda: "Windows")
    monkeypatch.delitem(sys.modules, "nvvfx", raising=False)
    monkeypatch.setattr(rtx_vsr.importlib.util, "find_spec", lambda name: None)
    p = RTXVSRBackend.probe(torch.device("cuda"))
    assert not p and "nvidia-vfx" in p.reason and "pypi.nvidia.com" in p.reason


def test_probe_linux_without_ngx_library(nv, monkeypatch):
    monkeypatch.setattr(rtx_vsr, "_system", lambda: "Linux")
    monkeypatch.setattr(rtx_vsr.ctypes.util, "find_library", lambda name: None)

    def no_lib(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(rtx_vsr.ctypes, "CDLL", no_lib)
    p = RTXVSRBackend.probe(torch.device("cuda"))
    assert not p and "libnvidia-ngx.so.1" in p.reason


def test_probe_needs_cuda(nv, monkeypatch):
    monkeypatch.setattr(rtx_vsr, "_system", lambda: "Windows")
    p = RTXVSRBackend.probe(CPU)
    assert not p and "CUDA" in p.reason
    monkeypatch.setattr(rtx_vsr.torch.cuda, "is_available", lambda: False)
    p = RTXVSRBackend.probe(torch.device("cuda"))
    assert not p and "CUDA" in p.reason


@pytest.mark.parametrize(
    "name,cap,ok",
    [
        ("NVIDIA GeForce GTX 1080", (6, 1), False),
        ("Tesla V100-SXM2-16GB", (7, 0), False),
        ("NVIDIA GeForce GTX 1660 SUPER", (7, 5), False),
        ("NVIDIA GeForce RTX 2060", (7, 5), True),
        ("NVIDIA GeForce RTX 4090", (8, 9), True),
        ("NVIDIA H100 80GB HBM3", (9, 0), True),
    ],
)
def test_probe_tensor_cores(monkeypatch, name, cap, ok):
    monkeypatch.setattr(rtx_vsr.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(rtx_vsr.torch.cuda, "get_device_name", lambda i: name)
    monkeypatch.setattr(rtx_vsr.torch.cuda, "get_device_capability", lambda i: cap)
    why = rtx_vsr._gpu_reason(torch.device("cuda"))
    assert (why is None) == ok
    if not ok:
        assert "Tensor Cores" in why


def test_probe_ok_and_model_spec_checked(ready):
    p = RTXVSRBackend.probe(torch.device("cuda"))
    assert p.ok and "nvidia-vfx" in p.reason
    assert RTXVSRBackend.probe(torch.device("cuda"), "ULTRA,denoise=low").ok
    bad = RTXVSRBackend.probe(torch.device("cuda"), "ULTRA,sharpness=3")
    assert not bad and "sharpness" in bad.reason
    # a spandrel model name left in `model` (auto picked RTX VSR) is not an error
    assert RTXVSRBackend.probe(torch.device("cuda"), "realesr-animevideov3").ok


def test_probe_streaming_levels_need_ampere(ready, monkeypatch):
    monkeypatch.setattr(rtx_vsr, "_capability", lambda device: (7, 5))
    p = RTXVSRBackend.probe(torch.device("cuda"), "STREAMING_ULTRA")
    assert not p and "Ampere" in p.reason
    assert RTXVSRBackend.probe(torch.device("cuda"), "ULTRA").ok


def test_auto_prefers_rtx_vsr_where_it_can_run(ready, monkeypatch):
    assert RTXVSRBackend.priority > registry.get("realesrgan").priority
    cls, why = registry.choose("auto", CPU)
    assert cls is RTXVSRBackend and "auto" in why
    monkeypatch.setattr(rtx_vsr, "_system", lambda: "Darwin")
    cls, why = registry.choose("auto", CPU)
    assert cls.id != "rtx_vsr" and "rtx_vsr: runs on Windows" in why


def test_asking_for_rtx_vsr_where_it_cannot_run_is_one_line(monkeypatch):
    monkeypatch.setattr(rtx_vsr, "_system", lambda: "Linux")
    monkeypatch.delitem(sys.modules, "nvvfx", raising=False)
    monkeypatch.setattr(rtx_vsr.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable) as e:
        UpscaleNode(backend="rtx_vsr", device="cpu").load()
    assert "rtx_vsr" in str(e.value) and "nvidia-vfx" in str(e.value) and "\n" not in str(e.value)


# --- settings ---------------------------------------------------------------------------------------


def test_parse_spec():
    s = parse_spec("ultra")
    assert s.level == "ULTRA" and s.strength is None and s.prepass is None
    s = parse_spec("HIGHBITRATE_HIGH, strength=0.6; denoise=medium, async=1")
    assert (s.level, s.strength, s.prepass, s.non_blocking) == ("HIGHBITRATE_HIGH", 0.6, "DENOISE_MEDIUM", True)
    assert parse_spec("deblur_low").prepass == "DEBLUR_LOW"
    assert parse_spec("fast").level == "LOW"
    assert parse_spec("some/model.pth").ignored_model == "some/model.pth"
    for bad in ("ULTRA,strength=2", "ULTRA,strength=x", "HIGH,denoise=lots", "quality=SUPER", "ULTRA,bogus"):
        with pytest.raises(InputError):
            parse_spec(bad)


@pytest.mark.parametrize("quality,level", [("fast", "LOW"), ("balanced", "HIGH"), ("high", "ULTRA")])
def test_node_quality_maps_to_sdk_levels(nv, quality, level):
    eng = load(quality=quality)
    eng.process(torch.rand(1, 3, 32, 32))
    (sr,) = nv.INSTANCES
    assert sr.quality.name == level and sr.device == 0 and sr.strength == 1.0
    assert (sr.input_width, sr.input_height, sr.output_width, sr.output_height) == (32, 32, 64, 64)
    assert sr.calls[0]["non_blocking"] is False and sr.calls[0]["stream_ptr"] == 0  # CPU: no stream


def test_explicit_level_strength_and_prepass(nv):
    eng = load(model="HIGHBITRATE_HIGH,strength=0.6,denoise=medium", quality="fast")
    y = eng.process(torch.rand(2, 3, 24, 40))
    assert y.shape == (2, 3, 48, 80)
    pre, sr = nv.INSTANCES
    assert pre.quality.name == "DENOISE_MEDIUM" and (pre.output_width, pre.output_height) == (40, 24)
    assert sr.quality.name == "HIGHBITRATE_HIGH" and sr.strength == 0.6
    assert len(pre.calls) == len(sr.calls) == 2
    assert "HIGHBITRATE_HIGH" in eng.describe() and "DENOISE_MEDIUM" in eng.describe()


def test_options_override_spec(nv):
    eng = load(model="ULTRA", rtx_quality="MEDIUM", strength=0.3, deblur="high", non_blocking=True)
    eng.process(torch.rand(1, 3, 16, 16))
    pre, sr = nv.INSTANCES
    assert pre.quality.name == "DEBLUR_HIGH" and sr.quality.name == "MEDIUM" and sr.strength == 0.3
    assert sr.calls[0]["non_blocking"] is True


def test_strength_on_an_old_wheel_is_a_clear_error(nv):
    nv.SUPPORTS_STRENGTH = False
    load(quality="high").process(torch.rand(1, 3, 16, 16))  # no strength: fine on 0.1
    with pytest.raises(BackendUnavailable, match="strength.*upgrade to 0.2"):
        load(strength=0.5).process(torch.rand(1, 3, 16, 16))


# --- sizes, copies, re-creation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h,w,scale",
    [(64, 64, 2.0), (33, 47, 2.0), (50, 70, 1.5), (31, 17, 3.0), (40, 24, 4.0), (20, 28, 6.0), (27, 19, 1.0), (16, 16, 1.25)],
)
def test_output_is_exactly_the_node_size(nv, h, w, scale):
    eng = load(scale=scale)
    x = smooth(2, h, w)
    y = eng.process(x)
    assert y.shape == (2, 3, *out_size(h, w, scale))
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    for sr in nv.INSTANCES:  # the SDK only ever saw multiple-of-8 sizes within 1x..4x
        assert sr.output_width % 8 == 0 and sr.output_height % 8 == 0
        assert sr.input_width % 8 == 0 and sr.input_height % 8 == 0
    # the content is the input, upscaled, in the right place (no shift from padding or cropping)
    ref = F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)
    assert (y - ref).abs().mean() < 0.03


def test_integer_scale_on_aligned_input_is_a_pure_copy_of_the_sdk_output(nv):
    x = torch.rand(1, 3, 32, 48)
    y = load(scale=2.0, quality="balanced").process(x)
    ref = F.interpolate(x, size=(64, 96), mode="bilinear", align_corners=False) + 0.003  # HIGH = 3
    assert torch.allclose(y, ref.clamp(0, 1), atol=1e-6)


def test_plan_sizes():
    p = plan_sizes(33, 47, 2.0)
    assert p.padded == (40, 48) and p.sdk_out == (80, 96) and p.valid == (66, 94) == p.target and p.exact
    p = plan_sizes(100, 100, 1.5)
    assert p.sdk_out[0] % 8 == 0 and p.target == (150, 150) and not p.exact
    p = plan_sizes(20, 20, 6.0)
    assert p.sdk_out == (96, 96) and p.target == (120, 120)
    assert plan_sizes(20, 20, 1.0).sdk_out is None


def test_reused_sdk_buffer_is_copied(nv):
    eng = load(scale=2.0)
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    ya = eng.process(a)
    keep = ya.clone()
    yb = eng.process(b)
    (sr,) = nv.INSTANCES
    assert len(sr.buffer_ptrs) == 1  # the stand-in really reused one buffer
    assert torch.equal(ya, keep) and not torch.equal(ya, yb)
    assert ya.data_ptr() not in sr.buffer_ptrs


def test_batch_equals_frame_by_frame(nv):
    x = torch.rand(3, 3, 24, 24)
    eng = load(scale=2.0)
    batch = eng.process(x)
    single = torch.cat([eng.process(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batch, single) and not torch.equal(batch[0], batch[1])


def test_input_size_change_recreates_the_effect(nv):
    eng = load(scale=2.0, deblur="low")
    eng.process(torch.rand(1, 3, 32, 32))
    assert eng.recreated == 2 and len(nv.INSTANCES) == 2
    eng.process(torch.rand(2, 3, 32, 32))
    assert eng.recreated == 2  # same size: same effects
    y = eng.process(torch.rand(1, 3, 24, 40))
    assert y.shape == (1, 3, 48, 80) and eng.recreated == 4
    old_pre, old_sr, new_pre, new_sr = nv.INSTANCES
    assert old_pre._closed and old_sr._closed and not new_sr._closed
    assert (new_sr.input_width, new_sr.input_height, new_sr.output_width, new_sr.output_height) == (40, 24, 80, 48)
    eng.reset()  # cheap: no reload
    eng.process(torch.rand(1, 3, 24, 40))
    assert eng.recreated == 4
    eng.close()
    assert new_pre._closed and new_sr._closed


def test_runtime_options_recreate_on_next_frame(nv):
    eng = load(scale=2.0)
    eng.process(torch.rand(1, 3, 16, 16))
    eng.set_options(strength=0.25, sharpen=0.5)
    eng.process(torch.rand(1, 3, 16, 16))
    assert [i.strength for i in nv.INSTANCES] == [1.0, 0.25] and eng.sharpen == 0.5


def test_model_that_is_not_a_spec_is_ignored_and_said(nv):
    eng = load(model="realesr-animevideov3")
    assert eng.process(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)
    assert "ignored" in eng.describe()


# --- errors: one clear line ----------------------------------------------------------------------------


def test_sdk_load_failure_is_one_line_with_a_hint(nv):
    nv.FAIL["load"] = "NvVFX_Load failed\n(code -12)"
    with pytest.raises(BackendUnavailable) as e:
        load().process(torch.rand(1, 3, 16, 16))
    msg = str(e.value)
    assert "\n" not in msg and "rtx_vsr" in msg and "NvVFXError" in msg and "driver" in msg and "16x16 -> 32x32" in msg


def test_sdk_run_failure_is_one_line(nv):
    eng = load()
    eng.process(torch.rand(1, 3, 16, 16))
    nv.FAIL["run"] = "NVCV_ERR_CUDA_KERNEL: kernel launch failed"
    with pytest.raises(LiveUpscaleError) as e:
        eng.process(torch.rand(1, 3, 16, 16))
    assert "\n" not in str(e.value) and "rtx_vsr upscale failed on a 16x16 frame" in str(e.value)


def test_real_sdk_refuses_cpu_tensors(nv):
    nv.ACCEPT_CPU = False
    with pytest.raises(LiveUpscaleError, match="CUDA"):
        load().process(torch.rand(1, 3, 16, 16))


def test_unknown_level_in_an_old_wheel(nv, monkeypatch):
    class Old:  # an enum without the streaming levels
        __members__ = {"LOW": 1, "HIGH": 3}

        def __class_getitem__(cls, name):
            return cls.__members__[name]

    monkeypatch.setattr(nv.VideoSuperRes, "QualityLevel", Old)
    with pytest.raises(BackendUnavailable, match="no quality level STREAMING_ULTRA"):
        load(model="STREAMING_ULTRA").process(torch.rand(1, 3, 16, 16))


# --- inside the node and inside a host ------------------------------------------------------------------


def test_node_runs_rtx_vsr_with_stabilizer_and_sharpen(ready):
    node = UpscaleNode(backend="auto", device="cpu", scale=2.0, stabilize=0.5)
    frame = (np.random.default_rng(0).random((20, 36, 4)) * 255).astype(np.uint8)
    for _ in range(3):
        out = node.cook(frame, in_format="HWC:BGRA:uint8:flipped")
    assert out.shape == (40, 72, 4) and out.dtype == np.uint8
    assert node.backend_id == "rtx_vsr" and not node.engine.caps.temporal  # the node's stabilizer applies
    node.update(sharpen=0.7)
    assert node.engine.sharpen == 0.7
    assert node.info()["backend"] == "rtx_vsr"


def test_pass_through_when_the_sdk_fails_inside_a_host(ready, monkeypatch):
    """In TouchDesigner an SDK failure passes the input through (scaled) and shows the reason."""
    from live_upscale.plugin.touchdesigner import top
    from tests.standins import td

    monkeypatch.setitem(sys.modules, "td", td)
    monkeypatch.setattr(top, "ALLOW_HOST_MEMORY", True)
    rgba = np.random.default_rng(1).random((16, 24, 4)).astype(np.float32)
    src = td.TOP(td.td_image(rgba, np.float32))
    op = td.ScriptTOP([src])
    st = top.UpscaleTOP(op, device="cpu")
    ready.FAIL["run"] = "NVCV_ERR_CUDA_ILLEGAL_ADDRESS"
    op._cooking = True
    st.cook(op)
    op._cooking = False
    assert op.output.shape == (32, 48, 4) and not op.errors
    assert op.warnings and "NVCV_ERR_CUDA_ILLEGAL_ADDRESS" in op.warnings[0] and "passed through" in op.warnings[0]
    assert st.node.backend_id == "rtx_vsr"
    x = torch.from_numpy(rgba).permute(2, 0, 1)[None]
    ref = F.interpolate(x[:, :3], size=(32, 48), mode="bicubic", align_corners=False).clamp(0, 1)
    ref_a = F.interpolate(x[:, 3:], size=(32, 48), mode="bilinear", align_corners=False)  # alpha: bilinear
    got = torch.from_numpy(td.from_td_image(op.output)).permute(2, 0, 1)[None]
    assert (got[:, :3] - ref).abs().max() < 1e-3 and (got[:, 3:] - ref_a).abs().max() < 1e-3


def test_node_passes_the_model_spec_and_reloads_on_quality_change(ready):
    node = UpscaleNode(backend="rtx_vsr", model="HIGHBITRATE_ULTRA,deblur=low", device="cpu", scale=3.0)
    y = node.process(torch.rand(1, 3, 16, 24))
    assert y.shape == (1, 3, 48, 72)
    pre, sr = ready.INSTANCES
    assert pre.quality.name == "DEBLUR_LOW" and sr.quality.name == "HIGHBITRATE_ULTRA"
    assert "HIGHBITRATE_ULTRA" in node.info()["engine"]
    node.update(model=None, quality="fast")  # load-time change: a new engine with the node's level
    node.process(torch.rand(1, 3, 16, 24))
    assert pre._closed and sr._closed and ready.INSTANCES[-1].quality.name == "LOW"


# --- nvidia-vfx 0.1 and 0.2, and the 10-bit path (issue 16) -----------------------------------------------


@pytest.mark.parametrize("api", ["0.1", "0.2"])
def test_both_api_shapes_load_and_run(nv, api):
    nv.use_api(api)
    eng = load(scale=2.0)
    x = smooth(2, 20, 28)
    y = eng.process(x)
    assert y.shape == (2, 3, 40, 56)
    (fx,) = nv.INSTANCES
    if api == "0.2":
        assert (fx.input_width, fx.input_height) == (32, 24)  # the padded input, set where the class has it
        assert "encoding RGB8" in eng.describe() and "0.2.0.0" in eng.describe()
    else:
        assert not hasattr(type(fx), "input_width")  # 0.1 takes the input size from the frame
        assert "nvidia-vfx 0.1 has no choice" in eng.describe() and "0.1.0.1" in eng.describe()
    assert fx.image_encoding == (nv.VideoSuperRes.ImageEncoding.RGB8 if api == "0.2" else None)


def test_setting_input_size_on_01_would_fail(nv):
    """What the adapter used to do: on 0.1 every load failed."""
    nv.use_api("0.1")
    fx = nv.VideoSuperRes(quality=nv.QualityLevel.HIGH)
    with pytest.raises(AttributeError):
        fx.input_width = 32


def test_strength_on_01_is_a_clear_error(nv):
    nv.use_api("0.1")
    eng = load(model="HIGH,strength=0.5")
    with pytest.raises(BackendUnavailable, match="does not take strength"):
        eng.process(smooth(1, 16, 16))


@pytest.mark.parametrize("bits,enc", [(8, "RGB8"), (16, "RGB10A2"), (32, "RGB10A2")])
def test_deep_sources_use_the_10_bit_encoding(nv, bits, enc):
    eng = load(source_bits=bits)
    eng.process(smooth(1, 16, 16))
    (fx,) = nv.INSTANCES
    assert fx.image_encoding == getattr(nv.VideoSuperRes.ImageEncoding, enc)
    assert f"encoding {enc}" in eng.describe()


def test_source_bits_at_runtime_rebuild_the_effect_once(nv):
    eng = load()
    x = smooth(1, 16, 16)
    eng.process(x)
    eng.set_options(source_bits=16)
    eng.process(x)
    eng.set_options(source_bits=16)  # unchanged: no rebuild
    eng.process(x)
    assert [fx.image_encoding for fx in nv.INSTANCES] == [0, 1]


def test_01_keeps_8_bits_for_deep_sources_and_refuses_a_forced_10_bit(nv):
    nv.use_api("0.1")
    eng = load(source_bits=16)
    assert eng.process(smooth(1, 16, 16)).shape == (1, 3, 32, 32)
    assert eng.encoding() is None and nv.INSTANCES[0].image_encoding is None
    with pytest.raises(BackendUnavailable, match="RGB10A2"):
        load(model="HIGH,encoding=rgb10a2")
    nv.use_api("0.2")
    assert load(model="HIGH,encoding=rgb10a2").encoding() == "RGB10A2"
    with pytest.raises(InputError):
        parse_spec("HIGH,encoding=12bit")


def test_touchdesigner_tells_the_engine_its_texture_depth(nv):
    from live_upscale.plugin.touchdesigner import interop
    from tests.standins import td

    eng = load()
    for dtype, bits in ((np.uint8, 8), (np.float16, 16), (np.float32, 32)):
        s = td.CUDAMemoryShape()
        s.width, s.height, s.numComps, s.dataType = 8, 8, 4, dtype
        interop.tell_source_bits(eng, interop.layout_of(s))
        assert eng.source_bits == bits
    assert eng.encoding() == "RGB10A2"
