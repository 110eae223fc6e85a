"""TouchDesigner Script TOP adapter, end to end with stand-ins for TD (tests/standins/td.py).

On CPU the stand-in's "CUDA" buffers are host memory: pointers, sizes and layouts are real and are
read back through raw addresses, so the only thing not exercised here is torch aliasing a *device*
pointer, which the GPU test at the bottom covers when a GPU is present.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from live_upscale import BackendUnavailable, InputError, UpscaleNode
from live_upscale.plugin.touchdesigner import interop, parameters, top
from tests.conftest import has_cuda
from tests.standins import td

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "windows" / "td_script_top_callbacks.py"


@pytest.fixture(autouse=True)
def _td(monkeypatch):
    monkeypatch.setitem(sys.modules, "td", td)
    monkeypatch.setattr(top, "ALLOW_HOST_MEMORY", True)
    monkeypatch.setattr(top, "INFO_EVERY_S", 0.0)
    top.drop()
    yield
    top.drop()


@pytest.fixture
def callbacks():
    """The shipped callbacks template, loaded as TD would load the DAT."""
    spec = importlib.util.spec_from_file_location("td_script_top_callbacks", TEMPLATE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rgba_image(h=24, w=32, seed=0) -> np.ndarray:
    """Top-row-first RGBA float: smooth noise, red top rows and blue bottom rows (to see flips)."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(1, 4, h // 4, w // 4, generator=g), size=(h, w), mode="bilinear", align_corners=False)
    img = x[0].permute(1, 2, 0).numpy().copy()
    img[:3] = [1.0, 0.0, 0.0, 1.0]
    img[-3:] = [0.0, 0.0, 1.0, 1.0]
    return img.astype(np.float32)


def make_op(image: np.ndarray, cb, **pars) -> td.ScriptTOP:
    op = td.ScriptTOP([td.TOP(image)])
    op.callbacks = cb
    cb.onSetupParameters(op)
    set_pars(op, **{"Backend": "classic", **pars})
    return op


def set_pars(op, **pars) -> None:
    for k, v in pars.items():
        getattr(op.par, k).val = v


# --- interop: layout, dtype, flip, zero copy ---------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,comps,channels",
    [(np.uint8, 4, "BGRA"), (np.float16, 4, "RGBA"), (np.float32, 4, "RGBA"), (np.uint16, 4, "RGBA"), (np.float32, 1, "GRAY"), (np.uint8, 1, "GRAY")],
)
def test_layout_of(dtype, comps, channels):
    s = td.CUDAMemoryShape()
    s.width, s.height, s.numComps, s.dataType = 7, 5, comps, dtype
    lay = interop.layout_of(s)
    assert (lay.height, lay.width, lay.comps) == (5, 7, comps) and lay.dtype == np.dtype(dtype)
    assert lay.fmt.channels == channels and lay.fmt.flipped and lay.fmt.layout == "HWC"
    assert lay.nbytes == 5 * 7 * comps * np.dtype(dtype).itemsize


def test_layout_refusals():
    s = td.CUDAMemoryShape()
    s.width, s.height, s.numComps, s.dataType = 4, 4, 2, np.float32
    with pytest.raises(InputError, match="2-component"):
        interop.layout_of(s)
    s.numComps, s.dataType = 4, np.float64
    with pytest.raises(InputError, match="not supported"):
        interop.layout_of(s)
    s.dataType, s.depth = np.float32, 6
    with pytest.raises(InputError, match="3D, cube"):
        interop.layout_of(s)


def test_describe_is_a_cuda_array_interface():
    lay = interop.layout_of(td.TOP(np.zeros((3, 5, 4), np.float16)).cudaMemory().shape)
    d = interop.describe(1234, lay)
    assert d == {"version": 3, "shape": (3, 5, 4), "typestr": "<f2", "data": (1234, False), "strides": None, "stream": None}


def test_tensor_from_memory_aliases_without_a_copy():
    mem = td.TOP(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)).cudaMemory()
    t, lay = interop.tensor_from_memory(mem, torch.device("cpu"), allow_host=True)
    assert t.shape == (2, 3, 4) and t.dtype == torch.uint8 and t.data_ptr() == mem.ptr
    mem._tensor.view(-1)[0] = 77  # TD writes into its buffer: the tensor sees it
    assert int(t[0, 0, 0]) == 77
    mem.size -= 1
    with pytest.raises(InputError, match="needs"):
        interop.tensor_from_memory(mem, torch.device("cpu"), allow_host=True)


def test_device_memory_is_never_read_as_host_memory():
    mem = td.TOP(np.zeros((2, 2, 4), np.uint8)).cudaMemory()
    with pytest.raises(BackendUnavailable, match="CUDA build of torch"):
        interop.tensor_from_memory(mem, torch.device("cpu"))


def test_buffer_of_checks_size():
    lay = interop.layout_of(td.TOP(np.zeros((2, 3, 4), np.uint8)).cudaMemory().shape)
    t = torch.zeros(2, 3, 4, dtype=torch.uint8)
    assert interop.buffer_of(t, lay) == (t.data_ptr(), 24)
    with pytest.raises(InputError):
        interop.buffer_of(torch.zeros(2, 3, 4, dtype=torch.float32), lay)
    with pytest.raises(InputError):
        interop.buffer_of(t.permute(1, 0, 2), lay)


# --- the cook path, end to end -----------------------------------------------------------------------


def test_parameters_page(callbacks):
    op = td.ScriptTOP([td.TOP(np.zeros((8, 8, 4), np.uint8))])
    callbacks.onSetupParameters(op)
    names = [p.name for page in op.pages for p in page.pars]
    for n in ("Backend", "Model", "Scale", "Quality", "Compile", "Stabilize", "Sharpen", "Reset", "Backendinuse", "Msperframe", "Lasterror", "Backendstatus"):
        assert n in names
    assert op.par.Backend.menuNames[:1] == ["auto"] and "classic" in op.par.Backend.menuNames
    assert "rtx_vsr" not in op.par.Backend.menuNames  # cannot run here: reason in the status instead
    assert "rtx_vsr:" in op.par.Backendstatus.val and op.par.Backendstatus.readOnly
    assert op.par.Scale.val == 2.0 and op.par.Quality.val == "balanced" and op.par.Quality.menuNames == ["fast", "balanced", "high"]
    assert parameters.read(op) == {
        "backend": "auto", "model": None, "scale": 2.0, "quality": "balanced", "compile": "off", "prescale": "auto",
        "stabilize": 0.0, "sharpen": 0.0,
    }
    assert op.par.Compile.menuNames == ["off", "default", "reduce-overhead", "max-autotune", "tensorrt"]


def test_uint8_bgra_flipped_end_to_end(callbacks):
    rgba = rgba_image()
    image = td.td_image(rgba, np.uint8)
    op = make_op(image, callbacks)
    op.cook(callbacks)
    assert not op.errors and not op.warnings
    out = op.output
    assert out.shape == (48, 64, 4) and out.dtype == np.uint8
    # exactly what the node makes of TD's frame
    ref = UpscaleNode(backend="classic", scale=2.0, device="cpu").cook(image, in_format="HWC:BGRA:uint8:flipped")
    assert np.array_equal(out, ref)
    # and it is the picture upright: red on top, blue at the bottom, alpha kept
    up = td.from_td_image(out)
    assert up[:4, :, 0].mean() > 0.9 and up[:4, :, 2].mean() < 0.1
    assert up[-4:, :, 2].mean() > 0.9 and up[-4:, :, 0].mean() < 0.1
    a_ref = F.interpolate(torch.from_numpy(rgba[..., 3])[None, None], size=(48, 64), mode="bilinear", align_corners=False)
    assert np.abs(up[..., 3] - a_ref[0, 0].numpy()).max() < 2.5 / 255
    copy = op.copies[-1]
    assert copy["hwc"] == (48, 64, 4) and copy["dtype"] == np.uint8 and copy["size"] == 48 * 64 * 4


@pytest.mark.parametrize("dtype", [np.float16, np.float32] + ([np.uint16] if hasattr(torch, "uint16") else []))
def test_float_and_16bit_rgba(callbacks, dtype):
    rgba = rgba_image(16, 20)
    op = make_op(td.td_image(rgba, dtype), callbacks, Scale=1.5)
    op.cook(callbacks)
    assert not op.errors and not op.warnings, op.warnings
    assert op.output.shape == (24, 30, 4) and op.output.dtype == dtype
    up = td.from_td_image(op.output)
    assert up[:3, :, 0].mean() > 0.9 and up[-3:, :, 2].mean() > 0.9


def test_mono_texture(callbacks):
    img = np.linspace(0, 1, 12 * 10, dtype=np.float32).reshape(12, 10, 1)
    op = make_op(img, callbacks)
    op.cook(callbacks)
    assert not op.warnings and op.output.shape == (24, 20, 1) and op.output.dtype == np.float32


def test_state_survives_cooks_and_parameters_apply(callbacks):
    op = make_op(td.td_image(rgba_image(), np.uint8), callbacks)
    op.cook(callbacks)
    st = top.state_for(op)
    node, engine = st.node, st.node.engine
    op.cook(callbacks)
    assert top.state_for(op) is st and st.node is node and st.node.engine is engine and node.frames_in == 2
    set_pars(op, Stabilize=0.4, Sharpen=0.5)  # runtime knobs: same engine
    op.cook(callbacks)
    assert node.params.stabilize == 0.4 and node.params.sharpen == 0.5 and st.node.engine is engine
    set_pars(op, Scale=3.0, Quality="high")  # load-time: engine re-created, output follows
    op.cook(callbacks)
    assert st.node.engine is not engine and op.output.shape == (72, 96, 4)
    assert "classic" in op.par.Backendinuse.val and op.par.Msperframe.val > 0 and op.par.Cookms.val > 0


def test_buffers_kept_alive_across_cooks(callbacks):
    op = make_op(td.td_image(rgba_image(), np.uint8), callbacks)
    for _ in range(3):
        op.cook(callbacks)
    st = top.state_for(op)
    assert len(st._keep) == top.KEEP_COOKS
    (mem_a, out_a), (mem_b, out_b) = st._keep
    assert mem_a is not None and out_a is not None and out_a.data_ptr() != out_b.data_ptr()
    assert op.inputs[0].streams == [None, None, None]  # CPU: no stream; on CUDA, the TOP's own stream


def test_one_state_per_top_dropped_on_delete(callbacks):
    a = make_op(td.td_image(rgba_image(), np.uint8), callbacks)
    b = make_op(td.td_image(rgba_image(seed=1), np.uint8), callbacks)
    a.cook(callbacks)
    b.cook(callbacks)
    sa, sb = top.state_for(a), top.state_for(b)
    assert sa is not sb and len(top._STATES) == 2
    a.valid = False  # deleted in TD
    b.cook(callbacks)
    assert top.op_key(a) not in top._STATES and sa.node is None and len(top._STATES) == 1


def test_input_size_change_resets_state(callbacks):
    op = make_op(td.td_image(rgba_image(24, 32), np.uint8), callbacks)
    op.cook(callbacks)
    node = top.state_for(op).node
    resets = node.resets
    op.inputs[0].image = td.td_image(rgba_image(16, 40), np.uint8)
    op.cook(callbacks)
    assert op.output.shape == (32, 80, 4) and node.resets == resets + 1 and top.state_for(op).in_size == (16, 40)


def test_reset_pulse(callbacks):
    op = make_op(td.td_image(rgba_image(), np.uint8), callbacks)
    op.cook(callbacks)
    node = top.state_for(op).node
    before = node.resets
    op.par.Reset.pulse()
    assert node.resets == before + 1


# --- never crash TD: pass-through and messages -------------------------------------------------------------


def test_no_input_is_a_warning(callbacks):
    op = td.ScriptTOP([])
    callbacks.onSetupParameters(op)
    op.cook(callbacks)
    assert op.warnings and "connect a TOP" in op.warnings[0] and op.output is None


def test_backend_that_cannot_load_passes_through_and_is_not_retried_every_frame(callbacks, monkeypatch):
    op = make_op(td.td_image(rgba_image(), np.uint8), callbacks, Backend="realesrgan")
    loads = []
    real_load = UpscaleNode.load
    monkeypatch.setattr(UpscaleNode, "load", lambda self: (loads.append(1), real_load(self))[1])
    for _ in range(3):
        op.cook(callbacks)
    assert op.output.shape == (48, 64, 4) and not op.errors
    assert "live-upscale fetch" in op.warnings[0] or "models fetch" in op.warnings[0]
    assert "passed through" in op.warnings[0] and "models fetch" in op.par.Lasterror.val
    assert len(loads) == 1  # tried once, remembered
    op.par.Reset.pulse()
    op.cook(callbacks)
    assert len(loads) == 2
    set_pars(op, Backend="classic")
    op.cook(callbacks)
    assert not op.warnings and op.par.Lasterror.val == "" and top.state_for(op).node.backend_id == "classic"


def test_exception_in_the_node_passes_through(callbacks, monkeypatch):
    op = make_op(td.td_image(rgba_image(), np.float32), callbacks, Scale=2.0)
    monkeypatch.setattr(UpscaleNode, "cook", lambda self, *a, **k: 1 / 0)
    op.cook(callbacks)
    assert op.output.shape == (48, 64, 4) and not op.errors
    assert "ZeroDivisionError" in op.warnings[0]
    ref = F.interpolate(torch.from_numpy(rgba_image()).permute(2, 0, 1)[None, :3], size=(48, 64), mode="bicubic", align_corners=False)
    got = torch.from_numpy(td.from_td_image(op.output)).permute(2, 0, 1)[None, :3]
    assert (got - ref.clamp(0, 1)).abs().max() < 1e-5


def test_unreadable_texture_is_an_error_not_an_exception(callbacks):
    op = make_op(np.zeros((8, 8, 2), np.float32), callbacks)
    op.cook(callbacks)
    assert op.errors and "2-component" in op.errors[0] and op.output is None


def test_bad_parameter_values_fall_back(callbacks):
    op = make_op(td.td_image(rgba_image(), np.uint8), callbacks)
    op.par.Scale.expr = "op('missing').par.x"
    op.cook(callbacks)
    assert not op.warnings and op.output.shape == (48, 64, 4)  # the default scale
    op.par.Scale.expr = None
    set_pars(op, Quality="ultra-mega")
    op.cook(callbacks)
    assert op.warnings and "quality" in op.warnings[0].lower() and op.output.shape == (48, 64, 4)


def test_callbacks_without_the_package_show_an_error(monkeypatch):
    import live_upscale.plugin as plugin

    monkeypatch.setitem(sys.modules, "live_upscale.plugin.touchdesigner", None)
    monkeypatch.delattr(plugin, "touchdesigner", raising=False)
    spec = importlib.util.spec_from_file_location("cb_broken", TEMPLATE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    op = td.ScriptTOP([td.TOP(np.zeros((4, 4, 4), np.uint8))])
    mod.onSetupParameters(op)
    op.cook(mod)
    assert op.errors and "setup.ps1" in op.errors[0]


def test_module_callbacks_never_raise(monkeypatch):
    op = td.ScriptTOP([td.TOP(np.zeros((4, 4, 4), np.uint8))])
    monkeypatch.setattr(top, "state_for", lambda *a, **k: 1 / 0)
    op._cooking = True
    top.cook(op)
    top.pulse(type("P", (), {"name": "Reset", "owner": op})())
    op._cooking = False
    assert op.errors and "ZeroDivisionError" in op.errors[0]


# --- GPU: real CUDA buffers shaped like TD's, and the interop overhead ---------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
def test_gpu_interop_1024_bgra(monkeypatch, capsys):
    """1024² BGRA uint8 from device buffers; checks correctness, the shared stream, and times the overhead."""
    monkeypatch.setattr(top, "ALLOW_HOST_MEMORY", False)
    dev = torch.device("cuda")
    rgba = rgba_image(1024, 1024)
    src = td.TOP(td.td_image(rgba, np.uint8), device=dev)
    op = td.ScriptTOP([src], out_device=dev)
    spec = importlib.util.spec_from_file_location("cb_gpu", TEMPLATE)
    cb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cb)
    cb.onSetupParameters(op)
    set_pars(op, Backend="classic", Quality="fast")
    op.cook(cb)
    assert not op.errors and not op.warnings, (op.errors, op.warnings)
    st = top.state_for(op)
    assert src.streams[-1] == st.stream.cuda_stream and op.copies[-1]["stream"] == st.stream.cuda_stream
    torch.cuda.synchronize()
    ref = UpscaleNode(backend="classic", quality="fast", device="cuda").cook(
        torch.from_numpy(src.image).to(dev), in_format="HWC:BGRA:uint8:flipped"
    )
    assert torch.equal(op.output, ref)

    # timing: the whole cook vs the node's own work on an already wrapped frame
    n = 50
    x = torch.from_numpy(src.image).to(dev)
    node = st.node
    for _ in range(5):
        op.cook(cb)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        op.cook(cb)
    torch.cuda.synchronize()
    t_cook = (time.perf_counter() - t0) * 1000 / n
    with torch.cuda.stream(st.stream):
        t0 = time.perf_counter()
        for _ in range(n):
            node.cook(x, in_format="HWC:BGRA:uint8:flipped")
        torch.cuda.synchronize()
    t_node = (time.perf_counter() - t0) * 1000 / n
    t0 = time.perf_counter()
    for _ in range(n):
        src.cudaMemory(stream=st.stream.cuda_stream)  # the stand-in's TD-side texture copy (TD pays this too)
    torch.cuda.synchronize()
    t_td = (time.perf_counter() - t0) * 1000 / n
    overhead = t_cook - t_node - t_td
    with capsys.disabled():
        print(f"\n[td interop 1024² BGRA uint8 -> 2048²] cook {t_cook:.3f} ms, node.cook alone {t_node:.3f} ms, "
              f"stand-in TD input copy {t_td:.3f} ms, adapter overhead {overhead:.3f} ms/frame "
              f"({torch.cuda.get_device_name()})")
    assert overhead < 2.0  # goal 0.3 ms; loose bound so a busy machine does not fail the suite
