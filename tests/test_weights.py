"""Weights manager: verified downloads (file:// URLs stand in for the network), cache safety, messages."""

from __future__ import annotations

import hashlib

import pytest

from live_upscale import WeightsError, WeightsMissing, weights
from live_upscale.weights import ModelInfo


@pytest.fixture
def local_model(tmp_path, monkeypatch, compact_x4):
    data = compact_x4.read_bytes()
    info = ModelInfo("tiny-test", "tiny-test.pth", "Compact", 4, "test", url=compact_x4.as_uri(),
                     sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(weights.KNOWN_MODELS, info.name, info)
    monkeypatch.delenv("LIVE_UPSCALE_OFFLINE")
    return info


def test_fetch_verifies_and_caches(local_model, tmp_path):
    p = weights.fetch("tiny-test")
    assert p == weights.cached_path(local_model) and p.is_file()
    assert p.is_relative_to(tmp_path / "cache")
    assert weights.resolve("tiny-test") == p and weights.is_cached("tiny-test")
    assert not list(p.parent.glob("*.part"))


def test_checksum_mismatch_keeps_nothing(local_model, monkeypatch):
    bad = ModelInfo(**{**local_model.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(weights.KNOWN_MODELS, bad.name, bad)
    with pytest.raises(WeightsError, match="checksum mismatch") as e:
        weights.fetch("tiny-test")
    assert "\n" not in str(e.value)
    d = weights.cached_path(bad).parent
    assert not weights.cached_path(bad).exists() and not list(d.glob("*"))


def test_unreachable_source_is_one_clear_line(local_model, monkeypatch, tmp_path):
    gone = ModelInfo(**{**local_model.__dict__, "url": (tmp_path / "nope.pth").as_uri()})
    monkeypatch.setitem(weights.KNOWN_MODELS, gone.name, gone)
    with pytest.raises(WeightsMissing, match="could not download 'tiny-test'") as e:
        weights.fetch("tiny-test")
    assert "\n" not in str(e.value) and "models fetch tiny-test" in str(e.value)


def test_offline_missing_says_what_to_run():
    with pytest.raises(WeightsMissing) as e:
        weights.resolve("RealESRGAN_x4plus")
    msg = str(e.value)
    assert "live-upscale models fetch RealESRGAN_x4plus" in msg and "RealESRGAN_x4plus.pth" in msg
    assert "github.com/xinntao/Real-ESRGAN" in msg


def test_unknown_names_and_missing_paths(tmp_path):
    with pytest.raises(WeightsMissing, match="unknown model 'nope'.*realesr-animevideov3"):
        weights.resolve("nope")
    with pytest.raises(WeightsMissing, match="not found"):
        weights.resolve(str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsMissing, match="registered name 'RealESRGAN_x2plus'"):
        weights.resolve(str(tmp_path / "RealESRGAN_x2plus.pth"))


def test_names_never_leave_the_cache(tmp_path):
    for evil in ["../../etc/passwd", "..", "a/../../b", "C:\\\\win\\\\x.pth", ".hidden", ""]:
        name = weights.safe_filename(evil)
        assert "/" not in name and "\\" not in name and not name.startswith(".") and name
        info = ModelInfo(evil, evil, "x", 1, "x")
        assert weights.cached_path(info).resolve().is_relative_to((tmp_path / "cache").resolve())


def test_registry_has_the_issue_models():
    for name in ["RealESRGAN_x2plus", "RealESRGAN_x4plus", "realesr-general-x4v3", "realesr-animevideov3",
                 "RealESRGANv2-animevideo-xsx2"]:
        m = weights.lookup(name)
        assert m and m.sha256 and len(m.sha256) == 64 and m.license and m.scale in (2, 4)
    assert weights.lookup("realesrgan_x2plus.pth").name == "RealESRGAN_x2plus"


def test_safetensors_and_shared_weight_checksum(tmp_path, shared_weight):
    from safetensors.torch import save_file

    sd = weights.load_state_dict(shared_weight)
    st = tmp_path / "m.safetensors"
    save_file(sd["params"], str(st))
    assert set(weights.load_state_dict(st)) == set(sd["params"])
    assert weights.sha256_of(shared_weight) == weights.lookup("realesr-animevideov3").sha256
