"""Benchmark metrics (benchmarks/metrics.py) on synthetic data: no ../shared needed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import metrics  # noqa: E402


def textured(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth, well-textured RGB image in [0,1] (optical flow can lock onto it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        for _ in range(6):
            fx, fy = rng.uniform(0.03, 0.15, 2)
            ph = rng.uniform(0, 2 * np.pi)
            img[..., c] += np.sin(fx * x + fy * y + ph)
    img -= img.min()
    return (img / img.max()).astype(np.float32)


def moving(n: int = 5, shift: int = 2, h: int = 96, w: int = 128) -> list[np.ndarray]:
    """A texture panning right by ``shift`` px per frame (crops of one larger image)."""
    big = textured(h, w + shift * n)
    return [np.ascontiguousarray(big[:, shift * (n - 1 - i) : shift * (n - 1 - i) + w]) for i in range(n)]


def test_psnr_identical_is_inf():
    a = textured()
    assert math.isinf(metrics.psnr(a, a.copy()))


def test_psnr_known_value():
    a = np.full((40, 40, 3), 0.5, np.float32)
    b = a + 0.1  # MSE 0.01 -> 20 dB
    assert metrics.psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(a, b, border=0) == pytest.approx(20.0, abs=1e-4)


def test_ssim_identical_is_one():
    a = textured()
    assert metrics.ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-9)


def test_ssim_drops_with_noise():
    a = textured()
    rng = np.random.default_rng(1)
    b = np.clip(a + rng.normal(0, 0.1, a.shape).astype(np.float32), 0, 1)
    s = metrics.ssim(a, b)
    assert 0.0 < s < 0.9


def test_static_sequence_has_no_warping_error():
    seq = [textured()] * 4
    assert metrics.warping_error(seq, seq) == pytest.approx(0.0, abs=1e-3)


def test_moving_sequence_warps_onto_itself():
    seq = moving()
    assert metrics.warping_error(seq, seq) < 5.0


def test_noise_raises_warping_error():
    seq = moving()
    rng = np.random.default_rng(2)
    noisy = [np.clip(f + rng.normal(0, 0.03, f.shape).astype(np.float32), 0, 1) for f in seq]
    clean = metrics.warping_error(seq, seq)
    flicker = metrics.warping_error(noisy, seq)
    assert flicker > clean + 10.0  # 0.03 noise: |n1 - n2| ~ 0.034 -> ~34 x1000


def test_reference_flows_are_reusable():
    seq = moving()
    rf = metrics.reference_flows(seq)
    assert len(rf.masks) == len(seq) - 1 and 0.0 < rf.valid_fraction <= 1.0
    assert metrics.warping_error(seq, rf) == pytest.approx(metrics.warping_error(seq, seq))


def test_tof_identical_is_zero():
    seq = moving()
    assert metrics.tof(seq, [f.copy() for f in seq]) == 0.0
    assert metrics.tof(seq, metrics.sequence_flows(seq)) == 0.0


def test_tof_of_static_output_against_moving_gt_is_the_motion():
    seq = moving(shift=2)
    static = [seq[0]] * len(seq)
    assert metrics.tof(static, seq) == pytest.approx(2.0, abs=0.6)


def test_mismatched_lengths_raise():
    seq = moving()
    with pytest.raises(ValueError):
        metrics.warping_error(seq[:-1], seq)
    with pytest.raises(ValueError):
        metrics.tof(seq[:-1], seq)
