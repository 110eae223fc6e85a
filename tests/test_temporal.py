"""Stabilizer and scene cuts, on real computation through the node."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from live_upscale import UpscaleNode
from live_upscale.backends.classic import ClassicEngine
from live_upscale.ops.resample import gaussian_blur, resize
from live_upscale.nodes import temporal
from live_upscale.nodes.temporal import SceneCutDetector, Stabilizer
from live_upscale.ops.flow import lk_flow, lk_flow_cv, luma, warp
from tests.conftest import registered_engine
from tests.test_node import chunk_backend  # noqa: F401  (fixture)

G = torch.Generator().manual_seed(7)
TEXTURE = F.interpolate(torch.rand(1, 3, 40, 56, generator=G), size=(160, 224), mode="bicubic").clamp(0, 1)


def moving(t: int, dx: float = 1.5, dy: float = 0.7) -> torch.Tensor:
    """HR frame t of a texture translating by (dx, dy) px per frame (exact sub-pixel shifts)."""
    fl = torch.zeros(1, 2, *TEXTURE.shape[-2:])
    fl[:, 0], fl[:, 1] = t * dx, t * dy
    return warp(TEXTURE, fl, "bicubic")[..., 16:-16, 16:-16].clamp(0, 1)


def lr_of(hr: torch.Tensor) -> torch.Tensor:
    return resize(hr, (hr.shape[-2] // 2, hr.shape[-1] // 2), "bicubic").clamp(0, 1)


def run(node, frames):
    return [node.process(f) for f in frames]


@pytest.fixture(autouse=True, params=["opencv", "torch"])
def stabilizer_path(request, monkeypatch):
    """Every stabilizer test runs on both paths: OpenCV (what the CPU uses) and torch (CUDA/MPS, here on CPU)."""
    if request.param == "torch":
        monkeypatch.setattr(temporal, "CV_OK", False)
    return request.param


def test_flow_recovers_subpixel_translation():
    a, b = lr_of(moving(0)), lr_of(moving(1))
    fl = lk_flow(luma(b), luma(a))[..., 6:-6, 6:-6]
    assert (fl[:, 0] - 0.75).abs().mean() < 0.08 and (fl[:, 1] - 0.35).abs().mean() < 0.08


def test_opencv_flows_recover_subpixel_translation(stabilizer_path):
    if stabilizer_path == "torch":
        pytest.skip("OpenCV flows only")
    a, b = lr_of(moving(0)), lr_of(moving(1))
    ga, gb = (luma(x)[0, 0].contiguous().numpy() for x in (a, b))
    full = lk_flow_cv(gb, ga)[6:-6, 6:-6]
    assert abs(full[..., 0] - 0.75).mean() < 0.08 and abs(full[..., 1] - 0.35).mean() < 0.08
    ref = lk_flow(luma(b), luma(a))[0].permute(1, 2, 0)[6:-6, 6:-6].numpy()
    assert abs(full - ref).mean() < 0.03  # the same algorithm (borders of the windows differ)
    st = Stabilizer()  # DIS, refined by two LK iterations: what the CPU path uses
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST).calc(
        cv2.convertScaleAbs(gb, alpha=255.0), cv2.convertScaleAbs(ga, alpha=255.0), None)
    refined = lk_flow_cv(gb, ga, iters=st.refine_iters, init=dis)[6:-6, 6:-6]
    assert abs(refined[..., 0] - 0.75).mean() < 0.08 and abs(refined[..., 1] - 0.35).mean() < 0.08


def test_opencv_and_torch_paths_agree(stabilizer_path, monkeypatch):
    """The two implementations of the stabilizer, with the same flow algorithm (full pyramid LK), give nearly the
    same frames (box windows at the borders, area downscales and the blend's rounding differ a little)."""
    if stabilizer_path == "torch":
        pytest.skip("compares both paths itself")
    frames = [lr_of(moving(t)) for t in range(6)]
    node = UpscaleNode(backend="classic", stabilize=1.0)
    node._stabilizer.cpu_flow = "lk"
    cv_out = run(node, frames)
    monkeypatch.setattr(temporal, "CV_OK", False)
    t_out = run(UpscaleNode(backend="classic", stabilize=1.0), frames)
    raw = run(UpscaleNode(backend="classic"), frames)
    for c, t, r in zip(cv_out[1:], t_out[1:], raw[1:]):
        inner = (..., slice(8, -8), slice(8, -8))
        assert (c - t)[inner].abs().mean() < 0.25 * (t - r)[inner].abs().mean() + 1e-4


class BoilingEngine(ClassicEngine):
    """What a frame-by-frame SR model does to video: the resampled frame plus invented fine detail that is
    drawn anew every frame (band-passed noise, std ~0.02, as measured flicker goes), i.e. detail that boils."""

    def __init__(self, config):
        super().__init__(config)
        self.k = 0

    def process(self, frames):
        y = super().process(frames)
        g = torch.Generator().manual_seed(1000 + self.k)
        self.k += 1
        n = torch.randn(y.shape, generator=g)
        return (y + 0.025 * (n - gaussian_blur(n, 1.0))).clamp(0, 1)


@pytest.fixture
def boiling():
    with registered_engine("test_boiling", BoilingEngine):
        yield


def test_static_scene_stays_static(boiling):
    """A still scene through an upscaler whose invented detail boils: frame-to-frame variation drops >= 2.5x."""
    frames = [lr_of(moving(0))] * 12
    raw = run(UpscaleNode(backend="test_boiling"), frames)
    stab = run(UpscaleNode(backend="test_boiling", stabilize=1.0), frames)
    std = lambda outs: torch.cat(outs[4:]).std(0).mean().item()  # noqa: E731
    assert std(stab) < std(raw) / 2.5


def test_moving_pattern_is_not_ghosted(boiling):
    """A translating texture with boiling detail: the stabilized output is closer to the moving ground truth
    than the frame-by-frame output. Bound: never worse (+2%); a ghost or a lag of even 1 px would make it
    clearly worse, since the texture has detail at that scale."""
    hrs = [moving(t) for t in range(10)]
    frames = [lr_of(h) for h in hrs]
    raw = run(UpscaleNode(backend="test_boiling"), frames)
    stab = run(UpscaleNode(backend="test_boiling", stabilize=1.0), frames)
    err = lambda outs: sum((o - h).abs()[..., 8:-8, 8:-8].mean().item() for o, h in zip(outs[3:], hrs[3:])) / 7  # noqa: E731
    assert err(stab) <= 1.02 * err(raw)
    assert err(stab) < err(raw)  # the motion-compensated history averages the boiling away
    lagged = [o for o in raw[2:9]]  # the same outputs one frame late: what a ghosting stabilizer would give
    assert sum((o - h).abs()[..., 8:-8, 8:-8].mean().item() for o, h in zip(lagged, hrs[3:])) / 7 > 1.1 * err(raw)


def test_object_leaving_leaves_no_trail():
    """A bright square moves away over a static background: where it was, the output is background."""
    bg = lr_of(moving(0))
    frames = []
    for t in range(8):
        f = bg.clone()
        x0 = 4 + 6 * t
        f[..., 20:36, x0 : x0 + 16] = 1.0
        frames.append(f)
    raw = run(UpscaleNode(backend="classic"), frames)
    stab = run(UpscaleNode(backend="classic", stabilize=1.0), frames)
    # the square's first position (x 4..20 LR -> 8..40 HR) is background from frame 3 on
    region = (..., slice(40, 72), slice(8, 40))
    for t in range(4, 8):
        assert (stab[t] - raw[t])[region].abs().max() < 0.1  # no ghost of the bright square


def test_hard_cut_resets_the_history():
    a = lr_of(moving(0))
    b = 1.0 - a  # a different scene
    frames = [a] * 5 + [b] * 3
    raw = run(UpscaleNode(backend="classic"), frames)
    node = UpscaleNode(backend="classic", stabilize=1.0)
    stab = run(node, frames)
    assert torch.allclose(stab[5], raw[5], atol=1e-6)  # the first frame after the cut is the backend's own
    assert (stab[7] - raw[7]).abs().max() < 1e-3  # nothing of scene A comes back


def test_size_change_resets_the_history():
    node = UpscaleNode(backend="classic", stabilize=1.0)
    run(node, [lr_of(moving(0))] * 3)
    small = lr_of(moving(1))[..., :40, :60]
    ref = UpscaleNode(backend="classic").process(small)
    assert torch.allclose(node.process(small), ref, atol=1e-6)


def test_strength_zero_is_exactly_off():
    frames = [lr_of(moving(t)) for t in range(4)]
    a = run(UpscaleNode(backend="classic"), frames)
    b = run(UpscaleNode(backend="classic", stabilize=0.0), frames)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_scene_cut_detector():
    det = SceneCutDetector()
    a, b = lr_of(moving(0)), 1.0 - lr_of(moving(0))
    assert det.cuts(torch.cat([a, a, b, b]), 0.15) == [2]
    assert det.cuts(torch.cat([b, a]), 0.15) == [1]  # compares against the previous batch too
    assert det.cuts(torch.cat([lr_of(moving(1))]), 0.15) == []  # motion is not a cut


def test_scene_cut_resets_temporal_backends(chunk_backend):  # noqa: F811
    node = UpscaleNode(backend="test_chunk", scale=2)
    a, b = torch.full((1, 3, 6, 8), 0.9), torch.full((1, 3, 6, 8), 0.1)
    outs = [node.process(a) for _ in range(4)] + [node.process(b) for _ in range(5)]
    eng = node.engine
    assert eng.resets == 1 and node.resets == 1
    total = sum(o.shape[0] for o in outs) + (node.flush().shape[0])
    assert total == 9  # frames of the old scene were flushed, not dropped
    # after the cut no output mixes in scene A's 0.9
    assert outs[4].shape[0] == 1 and float(outs[4].min()) > 0.8  # scene A's last frame, flushed at the cut
    after = torch.cat([o for o in outs[5:] if o.shape[0]])
    assert after.shape[0] == 3 and float(after.max()) < 0.2  # no output after the cut mixes in scene A


def test_stabilizer_cost_benchmark_runs_on_cpu(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stabilizer_cost.py"
    spec = importlib.util.spec_from_file_location("stabilizer_cost", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--size", "32x24", "--frames", "5", "--device", "cpu"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("| classic", "| realesrgan"))]
    assert len(rows) == 2 and all(float(ln.split("|")[2]) > 0 and ln.rstrip().endswith("% |") for ln in rows)


@pytest.mark.parametrize("size", [(6, 6), (11, 11), (20, 200), (200, 8)])
def test_tiny_and_thin_frames_are_stabilized(size):
    """OpenCV's DIS flow refuses frames under 12 px and crashes on short wide ones: those take the LK flow."""
    h, w = size
    st = Stabilizer()
    a = F.interpolate(TEXTURE, size=(h, w), mode="area")
    b = torch.roll(a, 1, dims=-1)
    hr_a, hr_b = (F.interpolate(x, scale_factor=2, mode="bilinear") for x in (a, b))
    st(a, hr_a, 1.0)
    out = st(b, hr_b, 1.0)
    assert out.shape == hr_b.shape and torch.isfinite(out).all()
    assert (out - hr_b).abs().max() < 0.5  # blended with the history, never replaced by garbage
