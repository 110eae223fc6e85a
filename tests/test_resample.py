"""ops.resample's Lanczos-3 fast paths against the dense reference matrix, and the OpenCV format conversions
against the torch ones (same results, within stated tolerances)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from live_upscale.nodes import formats
from live_upscale.ops import resample as R

SIZES = [(512, 512, 1024, 1024), (7, 13, 14, 26), (16, 16, 48, 48), (5, 9, 20, 36), (32, 64, 16, 32),
         (31, 17, 62, 17), (20, 30, 10, 30), (1, 1, 2, 2), (64, 64, 16, 16), (24, 40, 36, 60), (9, 11, 17, 23)]


def dense(x: torch.Tensor, size) -> torch.Tensor:
    my = R._lanczos_matrix_cpu(x.shape[-2], size[0]).double()
    mx = R._lanczos_matrix_cpu(x.shape[-1], size[1]).double()
    return (my @ x.double() @ mx.t()).float()


@pytest.mark.parametrize("h,w,H,W", SIZES)
def test_lanczos_paths_equal_the_dense_filter(h, w, H, W):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    ref = dense(x, (H, W))
    y = R.resize(x, (H, W), "lanczos")
    assert y.shape == (2, 3, H, W)
    assert (y - ref).abs().max() < 2e-6  # the stated tolerance (float32 accumulation)
    assert (R._lanczos_torch(x, (H, W)) - ref).abs().max() < 2e-6
    integer = R._factor(h, H) is not None and R._factor(w, W) is not None
    assert R._cv_ok(x, (H, W)) == integer  # OpenCV for integer factors, the torch gather for the rest
    assert torch.equal(x, torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w)))  # input untouched


def test_taps_are_lanczos3_and_o_of_taps():
    idx, w = R.lanczos_taps(100, 200)
    assert idx.shape == (200, 6)  # 6 taps enlarging
    assert np.allclose(w.sum(1), 1.0)
    c = (10 + 0.5) / 2 - 0.5
    d = idx[10] - c
    assert np.allclose(w[10], np.sinc(d) * np.sinc(d / 3) / (np.sinc(d) * np.sinc(d / 3)).sum())
    idx, w = R.lanczos_taps(200, 100)
    assert idx.shape[1] == 12  # stretched (antialiased) when shrinking: 6 / scale


def test_half_precision_and_non_contiguous_inputs():
    x = torch.rand(1, 3, 12, 20)
    ref = dense(x, (24, 40))
    assert (R.resize(x.half(), (24, 40), "lanczos").float() - ref).abs().max() < 5e-3
    xt = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, other strides
    assert (R.resize(xt, (24, 40), "lanczos") - ref).abs().max() < 2e-6


def test_blur_and_unsharp_match_torch(monkeypatch):
    x = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(3))
    fast_blur, fast_sharp = R.gaussian_blur(x, 1.0), R.unsharp(x, 0.4, 1.0)
    monkeypatch.setattr(R, "cv2", None)
    assert (fast_blur - R.gaussian_blur(x, 1.0)).abs().max() < 1e-6
    assert (fast_sharp - R.unsharp(x, 0.4, 1.0)).abs().max() < 1e-6
    y = torch.tensor([[[[-0.5, 0.25, 1.5, float("inf"), -float("inf")]]]])
    monkeypatch.undo()
    assert R.clamp01_(y.clone()).tolist() == [[[[0.0, 0.25, 1.0, 1.0, 0.0]]]]


FORMATS = ["HWC:RGB:uint8", "HWC:BGRA:uint8:flipped", "HWC:RGBA:float32", "HWC:BGR:float32:flipped", "HWC:RGB:uint8:batched"]


@pytest.mark.parametrize("spec", FORMATS)
def test_opencv_conversions_equal_the_torch_ones(spec, monkeypatch):
    fmt = formats.FrameFormat.parse(spec)
    g = np.random.default_rng(0)
    shape = ((1,) if fmt.batched else ()) + (9, 14, fmt.n_channels)
    if fmt.dtype == "uint8":
        frame = g.integers(0, 256, shape, dtype=np.uint8)
    else:
        frame = (g.random(shape, dtype=np.float32) * 1.4 - 0.2).astype(np.float32)
        frame.flat[5] = np.nan
        frame.flat[7] = np.inf
    rgb, alpha, _ = formats.decode(frame, spec, "cpu")
    out = formats.encode(rgb * 1.1 - 0.05, spec, alpha)  # out-of-range values: encode clamps
    monkeypatch.setattr(formats, "cv2", None)
    rgb_t, alpha_t, _ = formats.decode(frame, spec, "cpu")
    out_t = formats.encode(rgb_t * 1.1 - 0.05, spec, alpha_t)
    assert (rgb - rgb_t).abs().max() < 1e-6 and (alpha is None) == (alpha_t is None)  # 1 ulp: x/255 rounding
    if alpha is not None:
        assert (alpha - alpha_t).abs().max() < 1e-6
    assert out.shape == out_t.shape and out.dtype == out_t.dtype
    if fmt.dtype == "uint8":
        assert (out.int() - out_t.int()).abs().max() <= 1  # rounding of exact halves may differ by one
        assert (out != out_t).float().mean() < 0.01
    else:
        assert (out - out_t).abs().max() < 1e-6


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("shape,size", [((1, 3, 37, 53), (74, 106)), ((2, 3, 20, 31), (61, 47)), ((1, 1, 9, 8), (27, 24))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_enlarging_bilinear_bicubic_on_cpu_equal_torch(mode, shape, size, channels_last):
    """The CPU fast path (cv2.resize) computes torch's F.interpolate kernels; shrinking stays antialiased torch."""
    import torch.nn.functional as F

    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want = F.interpolate(x.contiguous(), size=size, mode=mode, align_corners=False)
    got = R.resize(x, size, mode)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5
    small = R.resize(x, (shape[2] // 2, shape[3] // 2), mode)  # shrinking: antialiased, as before
    ref = F.interpolate(x.contiguous(), size=(shape[2] // 2, shape[3] // 2), mode=mode, align_corners=False, antialias=True)
    assert (small - ref).abs().max().item() < 1e-5
