"""Shared fixtures: tiny random-weight checkpoints in the official Real-ESRGAN key layouts,
a buffering temporal test engine, and paths to ../shared data when present."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_WEIGHT = SHARED / "weights" / "realesr-animevideov3.pth"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own weights cache and no network."""
    monkeypatch.setenv("LIVE_UPSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIVE_UPSCALE_OFFLINE", "1")
    torch.manual_seed(0)


def compact_state_dict(num_feat: int = 8, num_conv: int = 2, scale: int = 4) -> dict:
    """SRVGGNetCompact in Real-ESRGAN's layout: body.{0: conv_in, 1: PReLU, (2+2i: conv, 3+2i: PReLU)*, last: conv}."""
    g = torch.Generator().manual_seed(1)
    sd: dict[str, torch.Tensor] = {}

    def conv(i, cout, cin):
        sd[f"body.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (0.5 / (cin * 9) ** 0.5)
        sd[f"body.{i}.bias"] = torch.randn(cout, generator=g) * 0.01

    conv(0, num_feat, 3)
    sd["body.1.weight"] = torch.full((num_feat,), 0.25)
    for i in range(num_conv):
        conv(2 + 2 * i, num_feat, num_feat)
        sd[f"body.{3 + 2 * i}.weight"] = torch.full((num_feat,), 0.25)
    conv(2 + 2 * num_conv, 3 * scale * scale, num_feat)
    return sd


def rrdb_state_dict(scale: int = 2, nf: int = 8, nb: int = 1, gc: int = 32) -> dict:
    """RRDBNet in Real-ESRGAN's (basicsr) layout (growth 32 as released); scale 2 pixel-unshuffles the input (conv_first takes 12 ch)."""
    g = torch.Generator().manual_seed(2)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, cout, cin):
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (0.3 / (cin * 9) ** 0.5)
        sd[f"{name}.bias"] = torch.zeros(cout)

    in_ch = 3 * (16 if scale == 1 else 4 if scale == 2 else 1)
    conv("conv_first", nf, in_ch)
    for b in range(nb):
        for r in (1, 2, 3):
            for k in range(1, 6):
                cout = nf if k == 5 else gc
                conv(f"body.{b}.rdb{r}.conv{k}", cout, nf + (k - 1) * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", 3, nf)
    return sd


@pytest.fixture
def compact_x4(tmp_path) -> Path:
    p = tmp_path / "tiny-compact-x4.pth"
    torch.save({"params": compact_state_dict()}, p)
    return p


@pytest.fixture
def rrdb_x2(tmp_path) -> Path:
    p = tmp_path / "tiny-RealESRGAN_x2plus.pth"
    torch.save({"params_ema": rrdb_state_dict(scale=2)}, p)
    return p


@pytest.fixture
def shared_weight() -> Path:
    if not SHARED_WEIGHT.is_file():
        pytest.skip("../shared/weights/realesr-animevideov3.pth not present")
    return SHARED_WEIGHT


def has_cuda() -> bool:
    return torch.cuda.is_available() and os.environ.get("LIVE_UPSCALE_NO_CUDA") is None


@contextlib.contextmanager
def registered_engine(backend_id: str, engine_cls):
    """Register a test-only backend that loads ``engine_cls``; removed again afterwards."""
    from live_upscale.backends import registry
    from live_upscale.backends.base import Backend, Probe

    cls = type(f"Test_{backend_id}", (Backend,), {
        "id": backend_id, "label": "test", "priority": -1,
        "probe": classmethod(lambda c, device, model=None: Probe(True)),
        "load": classmethod(lambda c, config: engine_cls(config)),
    })
    registry.register(cls)
    try:
        yield cls
    finally:
        registry._BACKENDS.pop(backend_id, None)
