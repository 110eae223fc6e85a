"""classic and realesrgan backends on real computation, with checkpoints in the official key layouts."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from live_upscale import BackendUnavailable, UpscaleNode, WeightsError
from live_upscale.backends import EngineConfig, choose, table
from live_upscale.backends.classic import ClassicBackend
from live_upscale.backends.realesrgan import RealESRGANBackend, load_descriptor
from live_upscale.ops.resample import _lanczos_matrix_cpu, resize

CPU = torch.device("cpu")


def smooth_image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, max(2, h // 4), max(2, w // 4), generator=g)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


# --- classic ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,scale", [(1, 1, 2.0), (7, 13, 2.0), (31, 17, 1.5), (16, 16, 3.0), (5, 9, 4.0), (33, 65, 1.0)])
@pytest.mark.parametrize("quality", ["fast", "balanced", "high"])
def test_classic_any_size_any_scale(h, w, scale, quality):
    eng = ClassicBackend.load(EngineConfig(CPU, scale=scale, options={"quality": quality}))
    y = eng.process(torch.rand(2, 3, h, w))
    assert y.shape == (2, 3, round(h * scale), round(w * scale))
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_lanczos_is_normalised_and_flat_stays_flat():
    for n_in, n_out in [(10, 20), (20, 10), (7, 11), (1, 3)]:
        m = _lanczos_matrix_cpu(n_in, n_out, 3)
        assert torch.allclose(m.sum(1), torch.ones(n_out), atol=1e-5)
    eng = ClassicBackend.load(EngineConfig(CPU, scale=2.0, options={"quality": "high", "sharpen": 1.0}))
    y = eng.process(torch.full((1, 3, 12, 12), 0.4))
    assert torch.allclose(y, torch.full_like(y, 0.4), atol=1e-5)


def test_classic_beats_nearest_on_smooth_content():
    hr = smooth_image(64, 64)
    lr = resize(hr, (32, 32), "bicubic")
    eng = ClassicBackend.load(EngineConfig(CPU, scale=2.0))
    err = (eng.process(lr) - hr).abs().mean()
    err_nearest = (F.interpolate(lr, scale_factor=2, mode="nearest") - hr).abs().mean()
    assert err < 0.6 * err_nearest


def test_sharpen_is_a_runtime_knob():
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    eng = ClassicBackend.load(EngineConfig(CPU, scale=2.0, options={"quality": "fast"}))
    soft = eng.process(x)
    eng.set_options(sharpen=1.5)
    sharp = eng.process(x)
    lap = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert lap(sharp) > 1.3 * lap(soft)


# --- realesrgan --------------------------------------------------------------------------------------


def test_compact_official_layout_loads_and_matches_plain_model(compact_x4):
    desc = load_descriptor(compact_x4)
    assert desc.architecture.id == "Compact" and desc.scale == 4
    eng = RealESRGANBackend.load(EngineConfig(CPU, scale=4.0, model=str(compact_x4)))
    x = torch.rand(2, 3, 13, 17)
    y = eng.process(x)
    assert y.shape == (2, 3, 52, 68)
    with torch.inference_mode():
        ref = desc.model(x).clamp(0, 1)
    assert torch.allclose(y, ref, atol=1e-6)


def test_rrdb_x2_unshuffle_pads_odd_sizes_and_crops_back(rrdb_x2):
    desc = load_descriptor(rrdb_x2)
    assert desc.scale == 2 and desc.size_requirements.multiple_of == 4
    eng = RealESRGANBackend.load(EngineConfig(CPU, scale=2.0, model=str(rrdb_x2)))
    x = torch.rand(1, 3, 13, 18)  # not a multiple of 4: padded to 16x20 inside, cropped back
    y = eng.process(x)
    assert y.shape == (1, 3, 26, 36)
    # the visible region equals a run on the reflect-padded frame, cropped
    xp = F.pad(x, (0, 2, 0, 3), mode="reflect")
    with torch.inference_mode():
        ref = desc.model(xp).clamp(0, 1)[..., :26, :36]
    assert torch.allclose(y, ref, atol=1e-5)
    # frames smaller than the padding fall back to replicate padding instead of failing
    assert eng.process(torch.rand(1, 3, 1, 2)).shape == (1, 3, 2, 4)


def test_scale_routes_for_a_4x_model(compact_x4):
    x = smooth_image(20, 28, seed=2)
    via_in = RealESRGANBackend.load(EngineConfig(CPU, scale=2.0, model=str(compact_x4), options={"prescale": "input"}))
    via_out = RealESRGANBackend.load(EngineConfig(CPU, scale=2.0, model=str(compact_x4), options={"prescale": "output"}))
    a, b = via_in.process(x), via_out.process(x)
    assert a.shape == b.shape == (1, 3, 40, 56)
    assert "input resized" in via_in.caps.notes and "output resized" in via_out.caps.notes
    # input route == model on the bicubic-halved input (no resize afterwards: 2x = 4x of a half)
    with torch.inference_mode():
        ref = via_in.desc.model(resize(x, (10, 14), "bicubic").clamp(0, 1)).clamp(0, 1)
    assert torch.allclose(a, ref, atol=1e-6)
    assert (a - b).abs().mean() > 1e-4  # the two routes really differ
    # non-integer target: output size is exact
    odd = RealESRGANBackend.load(EngineConfig(CPU, scale=3.0, model=str(compact_x4)))
    assert odd.process(torch.rand(1, 3, 11, 7)).shape == (1, 3, 33, 21)


def test_precision_choice(compact_x4):
    eng = RealESRGANBackend.load(EngineConfig(CPU, scale=4.0, model=str(compact_x4), precision="bf16"))
    assert eng.dtype == torch.bfloat16
    y = eng.process(torch.rand(1, 3, 8, 8))
    assert y.dtype == torch.float32 and y.shape == (1, 3, 32, 32)
    auto = RealESRGANBackend.load(EngineConfig(CPU, scale=4.0, model=str(compact_x4)))
    assert auto.dtype == torch.float32  # fp32 on CPU for 'auto'


def test_corrupt_wrong_and_unsafe_weights_give_one_clear_line(tmp_path, compact_x4):
    trunc = tmp_path / "truncated.pth"
    trunc.write_bytes(compact_x4.read_bytes()[:500])
    with pytest.raises(WeightsError, match="truncated.pth") as e:
        load_descriptor(trunc)
    assert "\n" not in str(e.value)

    wrong = tmp_path / "wrong.pth"
    torch.save({"foo.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(WeightsError, match="not a model architecture spandrel knows"):
        load_descriptor(wrong)

    class Evil:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"params": Evil()}, f)
    with pytest.raises(WeightsError, match="refused to load"):
        load_descriptor(evil)
    assert not (tmp_path / "PWNED").exists()


def test_probe_and_auto_choice(compact_x4):
    rows = {r.id: r.probe for r in table(CPU)}
    assert rows["classic"].ok
    assert not rows["realesrgan"].ok and "models fetch realesr-animevideov3" in rows["realesrgan"].reason
    assert rows["realesrgan"].downloadable
    cls, why = choose("auto", CPU)
    assert cls.id == "classic" and "realesrgan: weights" in why
    cls, _ = choose("auto", CPU, str(compact_x4))  # weights on disk: the better backend wins
    assert cls.id == "realesrgan"
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        choose("nope", CPU)


def test_missing_registered_weights_offline_is_a_clear_error():
    node = UpscaleNode(backend="realesrgan", model="RealESRGAN_x2plus")
    with pytest.raises(WeightsError) as e:
        node.load()
    msg = str(e.value)
    assert "live-upscale models fetch RealESRGAN_x2plus" in msg and "\n" not in msg


def test_compiled_path_matches_eager_fp32(compact_x4):
    """torch.compile (inductor, fixed shapes) gives the eager fp32 result; a new size compiles once more."""
    eager = RealESRGANBackend.load(EngineConfig(CPU, scale=2.0, model=str(compact_x4)))
    fast = RealESRGANBackend.load(EngineConfig(CPU, scale=2.0, model=str(compact_x4), options={"compile": "default"}))
    for shape in [(2, 3, 24, 32), (1, 3, 20, 28)]:
        x = torch.rand(*shape)
        assert (fast.process(x) - eager.process(x)).abs().max() < 1e-4


def test_warmup_runs_a_frame_and_leaves_no_state():
    node = UpscaleNode(backend="classic", stabilize=1.0)
    node.warmup(16, 24, batch=2)
    assert node.engine is not None and node.frames_in == 2 and node.resets == 0
    assert node._stabilizer.prev_hr is None
