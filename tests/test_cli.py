"""The CLI on real files: video (frame count, fps, audio kept), frame folders, doctor, models, demo."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from live_upscale.backends import backends
from live_upscale.plugin import media
from live_upscale.plugin.cli import main
from tests.conftest import SHARED


def _probe(path: Path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return n, v.average_rate, v.codec_context.width, v.codec_context.height, len(c.streams.audio)


def test_video_keeps_frames_fps_and_audio(tmp_path, capsys):
    clip = media.write_test_clip(tmp_path / "in.mp4", frames=18, size=(64, 48), fps=24, audio=True)
    out = tmp_path / "out.mp4"
    assert main(["upscale", str(clip), "-o", str(out), "--backend", "classic", "--batch", "4"]) == 0
    n, rate, w, h, n_audio = _probe(out)
    assert (n, w, h, n_audio) == (18, 128, 96, 1) and float(rate) == pytest.approx(24.0)
    assert "wrote 18 frames (128x96)" in capsys.readouterr().out
    with av.open(str(out)) as c:  # audio really remuxed: same duration of samples as the input
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(a))
    assert samples >= 48000 * 18 / 24 * 0.95


def test_video_to_folder_and_folder_to_video(tmp_path):
    clip = media.write_test_clip(tmp_path / "in.mkv", frames=5, size=(33, 21), fps=10, audio=False)
    frames = tmp_path / "frames"
    assert main(["upscale", str(clip), "-o", str(frames), "--backend", "classic", "--scale", "3"]) == 0
    files = sorted(frames.glob("*.png"))
    assert len(files) == 5 and Image.open(files[0]).size == (99, 63)
    vid = tmp_path / "again.mp4"
    assert main(["upscale", str(frames), "-o", str(vid), "--backend", "classic", "--fps", "12.5"]) == 0
    n, rate, w, h, _ = _probe(vid)
    assert (n, w, h) == (5, 198, 126) and float(rate) == pytest.approx(12.5)


def test_folder_of_pngs_keeps_names_with_a_spandrel_model(tmp_path, compact_x4):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a_01.png", "a_02.png", "a_03.png"):
        Image.fromarray(rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)).save(src / name)
    out = tmp_path / "out"
    rc = main(["upscale", str(src), "-o", str(out), "--backend", "realesrgan", "--model", str(compact_x4),
               "--scale", "2", "--batch", "2"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_01.png", "a_02.png", "a_03.png"]
    assert Image.open(out / "a_02.png").size == (34, 26)


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    assert main(["upscale", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4"), "--backend", "classic"]) == 1
    err = capsys.readouterr().err
    assert "error: input not found" in err and "Traceback" not in err
    src = tmp_path / "frames"
    src.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--backend", "realesrgan",
                 "--model", "RealESRGAN_x2plus"]) == 1
    assert not (tmp_path / "o").exists()
    assert "live-upscale models fetch RealESRGAN_x2plus" in capsys.readouterr().err


def test_doctor_lists_every_backend(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for b in backends():
        assert f"  {b.id}" in out
    assert "auto picks: classic" in out and "torch" in out


def test_models_list_and_path(capsys, tmp_path):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("RealESRGAN_x2plus", "RealESRGAN_x4plus", "realesr-general-x4v3", "realesr-animevideov3"):
        assert name in out
    assert main(["models", "path", "RealESRGAN_x4plus"]) == 1
    assert main(["models", "fetch", "RealESRGAN_x4plus"]) == 1  # offline in tests: clear refusal
    assert "downloads are off" in capsys.readouterr().err


def test_demo_runs_without_weights(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--frames", "6", "--size", "64x36"]) == 0
    assert (out / "demo_upscaled.mp4").is_file() and (out / "demo_side_by_side.png").is_file()
    n, _, w, h, n_audio = _probe(out / "demo_upscaled.mp4")
    assert (n, w, h, n_audio) == (6, 128, 72, 1)
    assert Image.open(out / "demo_side_by_side.png").size == (256, 72)


VID4 = SHARED / "data" / "vid4" / "calendar"


@pytest.mark.skipif(not VID4.is_dir(), reason="../shared/data/vid4 not present")
def test_real_weights_on_vid4_match_plain_pytorch(tmp_path, shared_weight):
    """The issue's acceptance check on 3 Vid4 frames: CLI output == a plain PyTorch run of the model."""
    from live_upscale.backends.realesrgan import load_descriptor
    from live_upscale.ops.resample import resize

    src = tmp_path / "calendar"
    src.mkdir()
    for p in sorted(VID4.glob("*.png"))[:3]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--backend", "realesrgan", "--model", str(shared_weight),
                 "--scale", "2"]) == 0
    model = load_descriptor(shared_weight).model
    for p in sorted(src.glob("*.png")):
        lr = torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        h, w = lr.shape[-2:]
        with torch.inference_mode():
            ref = model(resize(lr, (h // 2, w // 2), "bicubic").clamp(0, 1)).clamp(0, 1)
        ref8 = (ref[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        got = np.asarray(Image.open(out / p.name))
        assert got.shape == (2 * h, 2 * w, 3)
        assert np.abs(got.astype(int) - ref8.astype(int)).max() <= 1


def test_mixed_size_folder_keeps_every_frame_with_a_buffering_backend(tmp_path):
    """Frames of two sizes through a chunked temporal engine: the old size's tail is flushed, not lost."""
    from tests.conftest import registered_engine
    from tests.test_node import ChunkEngine

    with registered_engine("test_chunk", ChunkEngine):
        src = tmp_path / "src"
        src.mkdir()
        rng = np.random.default_rng(1)
        for i in range(7):
            size = (12, 16, 3) if i < 4 else (10, 14, 3)
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(src / f"f{i}.png")
        out = tmp_path / "out"
        assert main(["upscale", str(src), "-o", str(out), "--backend", "test_chunk", "--scene-cut", "0"]) == 0
        assert sorted(p.name for p in out.iterdir()) == [f"f{i}.png" for i in range(7)]
        assert Image.open(out / "f3.png").size == (32, 24) and Image.open(out / "f4.png").size == (28, 20)
