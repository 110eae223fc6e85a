"""Nothing lost on files (issue 15): the CLI never writes its input, never replaces an existing output
unless asked, leaves no partial output, and answers every bad file or value with one line.

Every test works on real files it creates (videos through PyAV, images through Pillow/PyAV) and runs
the real CLI, in-process (``main``) or, for signals, as a subprocess.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from live_upscale.plugin import media
from live_upscale.plugin.cli import main
from tests.conftest import REPO

CLASSIC = ["--backend", "classic"]


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(["upscale", *map(str, args), *CLASSIC])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    return rc, out, err


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("live-upscale: error:")]


def one_error(rc: int, err: str, *words: str) -> str:
    """The run failed with exit 1 and exactly one error line containing every word."""
    assert rc == 1, err
    lines = errors(err)
    assert len(lines) == 1, err
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    return lines[0]


def digest(path: Path) -> str:
    if path.is_dir():
        return "|".join(f"{p.name}:{digest(p)}" for p in sorted(path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    """Everything under a folder, hidden files included (a left-over temp file shows here)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def frames_of(path: Path) -> list:
    with av.open(str(path)) as c:
        return list(c.decode(c.streams.video[0]))


@pytest.fixture
def clip(tmp_path) -> Path:
    return media.write_test_clip(tmp_path / "clip.mp4", frames=6, size=(32, 24), fps=24, audio=True)


def png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def noise(h, w, c=3, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    hi = 256 if dtype == np.uint8 else 65536
    shape = (h, w, c) if c else (h, w)
    return rng.integers(0, hi, shape, dtype=np.int64).astype(dtype)


# --- 1. never the input ------------------------------------------------------------------------------


def test_output_equal_to_input_is_refused_and_the_input_kept(tmp_path, clip, capsys):
    before = digest(clip)
    for extra in ([], ["--overwrite"]):
        rc, _, err = cli(capsys, clip, "-o", clip, *extra)
        one_error(rc, err, "is the input file")
        assert digest(clip) == before
    assert listing(tmp_path) == ["clip.mp4"]


def test_output_through_a_hard_link_or_symlink_is_refused(tmp_path, clip, capsys):
    before = digest(clip)
    os.link(clip, tmp_path / "hard.mp4")
    os.symlink(clip, tmp_path / "soft.mp4")
    for name in ("hard.mp4", "soft.mp4"):
        rc, _, err = cli(capsys, clip, "-o", tmp_path / name, "-y")
        one_error(rc, err, "is the input file", "link")
    assert digest(clip) == before
    assert listing(tmp_path) == ["clip.mp4", "hard.mp4", "soft.mp4"]


def test_folder_output_that_is_in_or_around_the_input_is_refused(tmp_path, capsys):
    src = tmp_path / "frames"
    src.mkdir()
    for i in range(2):
        png(src / f"f{i}.png", noise(8, 8, seed=i))
    before = digest(src)
    for out, words in ((src, "is the input folder"), (src / "up", "inside the input folder"),
                       (tmp_path, "contains the input folder")):
        rc, _, err = cli(capsys, src, "-o", out, "-y")
        one_error(rc, err, words)
    # a single image written into the folder that holds it would overwrite it
    rc, _, err = cli(capsys, src / "f0.png", "-o", src, "-y")
    one_error(rc, err, "contains the input")
    assert digest(src) == before and listing(tmp_path) == ["frames", "frames/f0.png", "frames/f1.png"]


# --- 2. never replace what exists unless asked ---------------------------------------------------------


def test_existing_output_needs_overwrite_and_is_replaced_only_when_complete(tmp_path, clip, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old result")
    rc, _, err = cli(capsys, clip, "-o", out)
    one_error(rc, err, "exists", "--overwrite", "-y")
    assert out.read_bytes() == b"old result"
    # --overwrite, but the run fails (the input is corrupt from frame 3 on): the old file stays
    bad = tmp_path / "bad"
    bad.mkdir()
    png(bad / "a.png", noise(8, 8))
    (bad / "b.png").write_bytes((bad / "a.png").read_bytes()[:60])  # header intact, pixels cut off
    rc, _, err = cli(capsys, bad, "-o", out, "-y")
    one_error(rc, err, "b.png", "truncated or corrupt")
    assert out.read_bytes() == b"old result"
    rc, _, err = cli(capsys, clip, "-o", out, "-y")
    assert rc == 0, err
    assert len(frames_of(out)) == 6
    assert sorted(os.listdir(tmp_path)) == ["bad", "clip.mp4", "out.mp4"]


def test_non_empty_output_folder_needs_overwrite_empty_one_is_fine(tmp_path, clip, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert cli(capsys, clip, "-o", out)[0] == 0  # empty folder: used
    assert len(list(out.glob("*.png"))) == 6
    (out / "keep.txt").write_text("mine")
    rc, _, err = cli(capsys, clip, "-o", out)
    one_error(rc, err, "not empty", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert cli(capsys, clip, "-o", out, "--overwrite")[0] == 0
    assert sorted(os.listdir(out)) == [f"{i:06d}.png" for i in range(1, 7)]  # replaced as a whole
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "out"]


def test_kind_mismatch_and_unknown_output_type(tmp_path, clip, capsys):
    (tmp_path / "file").write_bytes(b"x")
    rc, _, err = cli(capsys, clip, "-o", tmp_path / "file", "-y")
    one_error(rc, err, "is a file, not a folder")
    rc, _, err = cli(capsys, clip, "-o", tmp_path / "out.gif")
    one_error(rc, err, "unknown file type")
    rc, _, err = cli(capsys, clip, "-o", tmp_path / "one.png")
    one_error(rc, err, "one image")
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "file"]


# --- 4. one clear line for every unreadable input --------------------------------------------------------


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        a = out.add_stream("aac", rate=48000)
        for k in range(0, 48000, 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, k
            for pkt in a.encode(af):
                out.mux(pkt)
        for pkt in a.encode(None):
            out.mux(pkt)
    return path


def _bomb_png(path: Path, w: int, h: int) -> Path:
    """A valid PNG header (correct CRCs) that promises w x h pixels, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_every_unreadable_input_is_one_line_and_nothing_is_written(tmp_path, clip, capsys):
    d = tmp_path / "in"
    d.mkdir()
    (d / "zero.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(os.urandom(4000))
    (d / "text.png").write_text("not an image")
    raw = clip.read_bytes()
    (d / "truncated.mp4").write_bytes(raw[: len(raw) // 2])  # moov is at the end: cut off
    _audio_only(d / "audio.m4a")
    empty = d / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    _bomb_png(d / "bomb.png", 60000, 60000)
    cases = [
        (d / "missing.mp4", "out.mp4", ["input not found", "missing.mp4"]),
        (d / "zero.mp4", "out.mp4", ["zero.mp4", "empty (0 bytes)"]),
        (d / "garbage.mp4", "out.mp4", ["garbage.mp4", "not a video or image file"]),
        (d / "text.png", "out.png", ["text.png", "not an image"]),
        (d / "truncated.mp4", "out.mp4", ["truncated.mp4"]),
        (d / "audio.m4a", "out.mp4", ["audio.m4a", "no video stream", "audio only"]),
        (empty, "out", ["no image frames", "empty"]),
        (d / "bomb.png", "out.png", ["bomb.png", "60000x60000", "decompression bomb"]),
    ]
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    before = digest(d)
    for src, out, words in cases:
        t0 = time.perf_counter()
        rc, _, err = cli(capsys, src, "-o", out_dir / out)
        one_error(rc, err, *words)
        assert time.perf_counter() - t0 < 20  # refused from the header, not after decoding 3.6 Gpx
        assert listing(out_dir) == [], src
    assert digest(d) == before


def test_bomb_header_is_refused_without_allocating(tmp_path):
    import resource
    import tracemalloc

    bomb = _bomb_png(tmp_path / "bomb.png", 40000, 40000)  # 1.6 Gpx: 4.8 GB as RGB
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux: the process's high-water mark
    tracemalloc.start()
    with pytest.raises(media.InputError, match="decompression bomb"):
        media.plan(bomb, tmp_path / "out.png")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 500_000  # decoding would add ~4.8 GB
    assert not (tmp_path / "out.png").exists()


def test_folder_with_one_corrupt_frame_names_it_and_leaves_nothing(tmp_path, capsys):
    src = tmp_path / "frames"
    src.mkdir()
    for i in range(5):
        png(src / f"f{i}.png", noise(12, 16, seed=i))
    good = (src / "f3.png").read_bytes()
    (src / "f3.png").write_bytes(good[: len(good) - 300])  # truncated inside the pixel data
    before = digest(src)
    for out in ("up", "up.mp4"):
        rc, _, err = cli(capsys, src, "-o", tmp_path / out)
        one_error(rc, err, "f3.png", "truncated or corrupt")
    assert digest(src) == before
    (src / "f3.png").write_bytes(b"not a png at all" + good[16:])  # found from the header, before any output
    rc, _, err = cli(capsys, src, "-o", tmp_path / "up")
    one_error(rc, err, "f3.png", "not an image")
    assert sorted(os.listdir(tmp_path)) == ["frames"]


def test_mixed_sizes_are_resized_to_the_first_for_video_and_kept_for_folders(tmp_path, capsys):
    src = tmp_path / "frames"
    src.mkdir()
    for i in range(4):
        png(src / f"f{i}.png", noise(12, 16, seed=i) if i != 2 else noise(10, 14, seed=i))
    rc, _, err = cli(capsys, src, "-o", tmp_path / "v.mp4")
    assert rc == 0, err
    assert "resized to 16x12 for the video" in err and "f2.png is 14x10" in err
    fr = frames_of(tmp_path / "v.mp4")
    assert len(fr) == 4 and all((f.width, f.height) == (32, 24) for f in fr)
    rc, _, err = cli(capsys, src, "-o", tmp_path / "f")
    assert rc == 0 and "each is upscaled at its own size" in err
    assert Image.open(tmp_path / "f" / "f2.png").size == (28, 20)
    assert Image.open(tmp_path / "f" / "f1.png").size == (32, 24)


# --- 5. destination problems ------------------------------------------------------------------------------


def test_missing_parent_is_created_and_removed_again_on_failure(tmp_path, clip, capsys):
    rc, _, err = cli(capsys, clip, "-o", tmp_path / "a" / "b" / "out.mp4")
    assert rc == 0 and "creating folder" in err
    assert len(frames_of(tmp_path / "a" / "b" / "out.mp4")) == 6
    bad = tmp_path / "bad"
    bad.mkdir()
    png(bad / "a.png", noise(8, 8))
    (bad / "b.png").write_bytes((bad / "a.png").read_bytes()[:60])
    rc, _, err = cli(capsys, bad, "-o", tmp_path / "x" / "y" / "out")
    one_error(rc, err, "b.png")
    assert not (tmp_path / "x").exists()
    (tmp_path / "afile").write_bytes(b"")
    rc, _, err = cli(capsys, clip, "-o", tmp_path / "afile" / "out.mp4")
    one_error(rc, err, "is a file, not a folder")


def _drop_root_file_powers():
    """In the child: clear CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER, so root obeys file modes."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # out of the bounding set too, or exec as root gives them back
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable}
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    mask = ~((1 << 1) | (1 << 2) | (1 << 3)) & 0xFFFFFFFF
    data[0] &= mask
    data[1] &= mask
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def test_no_permission_is_one_line(tmp_path, clip, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.geteuid() != 0:
            rc, _, err = cli(capsys, clip, "-o", locked / "out.mp4")
            one_error(rc, err, "permission denied")
        else:  # root writes anywhere: run the CLI as root without its file-permission capabilities
            if sys.platform != "linux":
                pytest.skip("dropping root's file capabilities needs Linux")
            r = subprocess.run([sys.executable, "-m", "live_upscale.plugin.cli", "upscale", str(clip), "-o",
                                str(locked / "out.mp4"), *CLASSIC], cwd=REPO, capture_output=True, text=True,
                               preexec_fn=_drop_root_file_powers, timeout=300,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
            assert "Traceback" not in r.stderr
            one_error(r.returncode, r.stderr, "permission denied", str(locked))
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


def _mount_tmpfs(where: Path, size: str, ro: bool = False) -> bool:
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    where.mkdir(exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    if not _mount_tmpfs(mnt, "200k"):
        pytest.skip("cannot mount a small tmpfs here (needs Linux, root and mount permission)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_is_one_line_with_sizes_and_leaves_nothing(tmp_path, small_disk, capsys):
    src = tmp_path / "noise"
    src.mkdir()
    for i in range(12):
        png(src / f"n{i}.png", noise(64, 64, seed=i))  # noise hardly compresses: ~12 x 40 kB upscaled
    clip = media.write_test_clip(tmp_path / "c.mkv", frames=12, size=(96, 64), audio=False)
    for s, out, extra in ((src, small_disk / "frames", ["--scale", "2"]),
                          (clip, small_disk / "v.mkv", ["--scale", "4", "--crf", "0"])):
        rc, _, err = cli(capsys, s, "-o", out, *extra)
        line = one_error(rc, err, "disk full", str(out))
        assert "free" in line and "written" in line, line
        assert os.listdir(small_disk) == []


def test_read_only_destination_is_one_line(tmp_path, clip, capsys):
    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "1m", ro=True):
        pytest.skip("cannot mount a read-only tmpfs here (needs Linux, root and mount permission)")
    try:
        rc, _, err = cli(capsys, clip, "-o", mnt / "out.mp4")
        one_error(rc, err, "read-only")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# --- 6. argument errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args,words", [
    (["--scale", "0"], ["--scale 0", "from 1 to 8"]),
    (["--scale", "-2"], ["--scale -2", "from 1 to 8"]),
    (["--scale", "9"], ["--scale 9", "from 1 to 8"]),
    (["--scale", "nan"], ["--scale", "finite"]),
    (["--scale", "inf"], ["--scale", "finite"]),
    (["--scale", "abc"], ["--scale abc", "not a number"]),
    (["--stabilize", "-0.5"], ["--stabilize -0.5", "from 0 to 1"]),
    (["--sharpen", "5"], ["--sharpen 5", "from 0 to 2"]),
    (["--batch", "0"], ["--batch 0", "from 1 to 4096"]),
    (["--batch", "1.5"], ["--batch 1.5", "whole number"]),
    (["--fps", "0"], ["--fps 0", "from 0.01 to 1000"]),
    (["--fps", "0.0001"], ["--fps 0.0001", "from 0.01 to 1000"]),  # once a ZeroDivisionError
    (["--fps", "x"], ["--fps x", "not a number"]),
    (["--fps", "nan"], ["--fps", "finite"]),
    (["--crf", "99"], ["--crf 99", "from 0 to 51"]),
    (["--crf", "-1"], ["--crf -1", "from 0 to 51"]),
    (["--quality", "best"], ["--quality best", "fast", "balanced", "high"]),
    (["--precision", "fp8"], ["--precision fp8", "fp16"]),
])
def test_bad_values_are_one_plain_line_each(tmp_path, clip, capsys, args, words):
    rc = main(["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "pydantic" not in err and "validation error" not in err
    one_error(rc, err, *words)
    assert not (tmp_path / "o.mp4").exists()


def test_several_bad_values_give_one_line_each(tmp_path, clip, capsys):
    rc = main(["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), "--scale", "0", "--batch", "0", "--crf", "x"])
    err = capsys.readouterr().err
    assert rc == 1 and len(errors(err)) == 3 and "--scale 0" in err and "--batch 0" in err and "--crf x" in err


def test_unknown_backend_model_and_usage_errors(tmp_path, clip, capsys):
    rc = main(["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), "--backend", "nope"])
    one_error(rc, capsys.readouterr().err, "unknown backend", "nope", "classic")
    rc = main(["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), "--backend", "realesrgan", "--model", "nope"])
    err = capsys.readouterr().err
    one_error(rc, err, "nope")
    rc = main(["upscale", str(clip)])  # no -o: argparse, still one line and exit 1
    one_error(rc, capsys.readouterr().err, "-o/--output")
    rc = main(["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), "--bogus"])
    one_error(rc, capsys.readouterr().err, "--bogus")
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


# --- 7. formats ----------------------------------------------------------------------------------------


def _read16(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        name = f.format.name
        return f.to_ndarray(format="rgba64le" if "rgba" in name else "rgb48le" if "rgb" in name else "gray16le")


def test_16_bit_png_stays_16_bit(tmp_path, capsys):
    src = tmp_path / "deep"
    src.mkdir()
    ramp = (np.linspace(0, 65535, 16 * 12 * 3).reshape(12, 16, 3)).astype(np.uint16)
    media._write_deep_png(src / "rgb16.png", ramp)
    media._write_deep_png(src / "rgba16.png", np.dstack([ramp, ramp[..., :1]]))
    png(src / "grey16.png", ramp[..., 0].copy())  # Pillow writes I;16
    rc, _, err = cli(capsys, src, "-o", tmp_path / "out", "--scale", "2")
    assert rc == 0, err
    for name, ch in (("rgb16.png", 3), ("rgba16.png", 4), ("grey16.png", 1)):
        got = _read16(tmp_path / "out" / name)
        assert got.dtype == np.uint16 and got.shape[:2] == (24, 32), name
        assert (got.shape[2] if got.ndim == 3 else 1) == ch, name
        assert np.any(got % 257 != 0), f"{name}: values are 8-bit values stretched, not 16-bit"
    rc, _, err = cli(capsys, src, "-o", tmp_path / "v.mp4")
    assert rc == 0 and "16-bit frames are written as 8-bit video" in err


def test_grey_and_rgba_png_keep_their_nature_and_alpha_is_upscaled(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    png(src / "grey.png", noise(12, 16, c=None))
    rgba = noise(12, 16, c=4)
    rgba[..., 3] = 0
    rgba[:, 8:, 3] = 255  # left half transparent, right half opaque
    png(src / "rgba.png", rgba)
    png(src / "la.png", np.dstack([noise(12, 16, c=None), rgba[..., 3]]), mode="LA")
    rc, _, err = cli(capsys, src, "-o", tmp_path / "out")
    assert rc == 0, err
    grey = Image.open(tmp_path / "out" / "grey.png")
    assert grey.mode == "L" and grey.size == (32, 24)
    for name, mode in (("rgba.png", "RGBA"), ("la.png", "LA")):
        im = Image.open(tmp_path / "out" / name)
        assert im.mode == mode and im.size == (32, 24)
        a = np.asarray(im)[..., -1].astype(int)
        assert (a[:, :14] == 0).all() and (a[:, 18:] == 255).all()  # the edge is resampled, the rest exact
        assert 0 < a[:, 14:18].mean() < 255


def test_odd_output_size_into_h264_keeps_the_size_and_says_how(tmp_path, capsys):
    clip = media.write_test_clip(tmp_path / "odd.mkv", frames=4, size=(33, 21), audio=False)
    rc, _, err = cli(capsys, clip, "-o", tmp_path / "out.mp4", "--scale", "3")
    assert rc == 0, err
    assert "99x63 is odd" in err and "yuv444p" in err
    fr = frames_of(tmp_path / "out.mp4")
    assert len(fr) == 4 and (fr[0].width, fr[0].height) == (99, 63) and fr[0].format.name == "yuv444p"


def test_rotation_metadata_is_kept(tmp_path, capsys):
    clip = media.write_test_clip(tmp_path / "rot.mp4", frames=4, size=(32, 24), audio=False, rotation=90)
    assert frames_of(clip)[0].rotation == 90
    rc, _, err = cli(capsys, clip, "-o", tmp_path / "out.mp4")
    assert rc == 0, err
    fr = frames_of(tmp_path / "out.mp4")
    assert (fr[0].width, fr[0].height) == (64, 48) and fr[0].rotation == 90  # pixels as stored, turned on display


def test_variable_frame_rate_timestamps_are_kept(tmp_path, capsys):
    pts = [0, 1, 3, 4, 8, 9, 15, 16]
    clip = media.write_test_clip(tmp_path / "vfr.mkv", frames=len(pts), size=(32, 24), audio=False, pts=pts,
                                 time_base=Fraction(1, 24))
    def seconds(p):
        return [round(float(f.pts * f.time_base), 3) for f in frames_of(p)]

    want = seconds(clip)
    assert want == [round(t / 24, 3) for t in pts]
    for out in ("out.mp4", "out.mkv"):
        rc, _, err = cli(capsys, clip, "-o", tmp_path / out)
        assert rc == 0, err
        assert seconds(tmp_path / out) == want


def test_single_image_to_image(tmp_path, capsys):
    src = png(tmp_path / "a.png", noise(10, 12))
    rc, _, err = cli(capsys, src, "-o", tmp_path / "b.jpg")
    assert rc == 0, err
    assert Image.open(tmp_path / "b.jpg").size == (24, 20)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.jpg"]


# --- 3. interrupted: Ctrl-C and SIGTERM remove the temporary output ----------------------------------------


@pytest.mark.parametrize("sig,name", [(signal.SIGINT, "out.mp4"), (signal.SIGTERM, "frames")])
def test_signal_mid_run_removes_the_partial_output_and_keeps_the_old(tmp_path, sig, name):
    clip = media.write_test_clip(tmp_path / "long.mkv", frames=150, size=(64, 48), audio=False)
    out = tmp_path / name
    if name == "frames":  # an existing folder: the new frames are made in a hidden folder inside it
        out.mkdir()
        (out / "old.png").write_bytes(b"previous result")
    else:
        out.write_bytes(b"previous result")
        part = tmp_path / ".out.part.mp4"
    before, old = digest(clip), digest(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "live_upscale.plugin.cli", "upscale", str(clip), "-o", str(out), "-y",
         "--backend", "classic", "--scale", "4", "--stabilize", "0.5"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.time() + 120
    if name == "frames":
        part = out / f".live-upscale.part-{proc.pid}"
    while time.time() < deadline and proc.poll() is None and not part.exists():
        time.sleep(0.05)
    assert part.exists(), "the temporary output never appeared"
    time.sleep(1.0)  # the backend is loaded before the temporary output is made: now frames are in flight
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert ("interrupted" if sig == signal.SIGINT else "terminated") in err and "no output was written" in err
    assert digest(out) == old and listing(out if out.is_dir() else tmp_path) == (
        ["old.png"] if name == "frames" else ["long.mkv", "out.mp4"])
    assert sorted(os.listdir(tmp_path)) == sorted(["long.mkv", name])
    assert digest(clip) == before


def test_alpha_stays_with_its_frame_through_a_buffering_backend_and_batches(tmp_path, capsys):
    """Alpha travels beside each frame: a temporal engine that holds frames back must not shift it."""
    from tests.conftest import registered_engine
    from tests.test_node import ChunkEngine

    src = tmp_path / "src"
    src.mkdir()
    for i in range(7):
        f = noise(12, 16, c=4, seed=i)
        f[..., 3] = 30 * i  # each frame's own flat alpha
        png(src / f"f{i}.png", f)
    with registered_engine("test_chunk", ChunkEngine):
        rc = main(["upscale", str(src), "-o", str(tmp_path / "out"), "--backend", "test_chunk", "--batch", "3",
                   "--scene-cut", "0"])
    assert rc == 0, capsys.readouterr().err
    for i in range(7):
        a = np.asarray(Image.open(tmp_path / "out" / f"f{i}.png"))[..., 3]
        assert a.shape == (24, 32) and (a == 30 * i).all(), i


def test_image_metadata_kept_and_what_a_file_type_cannot_hold_is_said(tmp_path, capsys):
    """EXIF (orientation) and the ICC profile travel to the output; 16 bits or alpha into JPEG are named."""
    src = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 on display
    icc = b"\0" * 128  # Pillow copies the profile bytes as they are
    Image.fromarray(noise(10, 12)).save(src, exif=exif, icc_profile=icc)
    rc, _, err = cli(capsys, src, "-o", tmp_path / "big.jpg")
    assert rc == 0, err
    with Image.open(tmp_path / "big.jpg") as im:
        assert im.size == (24, 20) and im.getexif().get(0x0112) == 6 and im.info.get("icc_profile") == icc
    deep = tmp_path / "deep.png"
    media._write_deep_png(deep, noise(8, 8, dtype=np.uint16))
    rc, _, err = cli(capsys, deep, "-o", tmp_path / "deep.jpg")
    assert rc == 0 and "16-bit images are written with 8 bits as .jpg" in err
    assert Image.open(tmp_path / "deep.jpg").mode == "RGB"
    rgba = png(tmp_path / "a.png", noise(8, 8, c=4))
    rc, _, err = cli(capsys, rgba, "-o", tmp_path / "a.jpg")
    assert rc == 0 and "alpha is dropped: JPEG" in err


def test_an_output_that_appears_during_the_run_is_not_replaced(tmp_path, clip, monkeypatch):
    out = tmp_path / "out.mp4"
    real = media._to_video

    def slow_and_raced(node, p, tmp, *a):
        job = real(node, p, tmp, *a)
        out.write_bytes(b"someone else's")  # another program takes the name before we rename
        return job

    monkeypatch.setattr(media, "_to_video", slow_and_raced)
    node_args = ["upscale", str(clip), "-o", str(out), *CLASSIC]
    assert main(node_args) == 1
    assert out.read_bytes() == b"someone else's" and sorted(os.listdir(tmp_path)) == ["clip.mp4", "out.mp4"]


def test_the_working_directory_as_output_folder_stays_the_same_folder(tmp_path, clip, capsys, monkeypatch):
    """`-o .` fills the folder you are in; it is not swapped for another (your shell would be left in a
    deleted folder), and with --overwrite its old contents go only once the new frames are in."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    inode = here.stat().st_ino
    rc, _, err = cli(capsys, clip, "-o", ".")
    assert rc == 0, err
    assert os.getcwd() == str(here) and here.stat().st_ino == inode
    assert sorted(os.listdir(here)) == [f"{i:06d}.png" for i in range(1, 7)]
    (here / "mine.txt").write_text("x")
    rc, _, err = cli(capsys, clip, "-o", ".", "--scale", "3")
    one_error(rc, err, "not empty", "--overwrite")
    rc, _, err = cli(capsys, clip, "-o", ".", "--scale", "3", "-y")
    assert rc == 0, err
    assert here.stat().st_ino == inode and sorted(os.listdir(here)) == [f"{i:06d}.png" for i in range(1, 7)]
    assert Image.open(here / "000001.png").size == (96, 72)


def test_a_file_spliced_onto_itself_encodes_with_repaired_timestamps(tmp_path, capsys):
    """Two copies of a clip back to back: timestamps restart mid-file; the output still muxes."""
    one = media.write_test_clip(tmp_path / "one.mkv", frames=4, size=(22, 14), fps=12, audio=True)
    twice = tmp_path / "twice.mkv"
    twice.write_bytes(one.read_bytes() * 2)
    rc, _, err = cli(capsys, twice, "-o", tmp_path / "out.mp4")
    assert rc == 0, err
    assert "renumbered" in err
    fr = frames_of(tmp_path / "out.mp4")
    assert len(fr) >= 4 and all(b.pts > a.pts for a, b in zip(fr, fr[1:]))


# --- review 2: alpha and colour-key transparency ----------------------------------------------------


@pytest.mark.parametrize("mode,key", [("L", 10), ("RGB", (10, 20, 30))])
def test_colour_key_transparency_of_grey_and_rgb_png_becomes_alpha(tmp_path, capsys, mode, key):
    a = np.full((16, 16, 3), 200, np.uint8)
    a[4:12, 4:12] = (10, 20, 30)
    im = Image.fromarray(a[..., 0] if mode == "L" else a)  # the square is the key colour: transparent
    src = tmp_path / f"key_{mode}.png"
    im.save(src, transparency=key)
    rc, out, err = cli(capsys, src, "-o", tmp_path / "o.png")
    assert rc == 0, err
    with Image.open(tmp_path / "o.png") as o:
        assert o.mode == ("LA" if mode == "L" else "RGBA")
        alpha = np.asarray(o)[..., -1]
    assert alpha[16, 16] == 0 and alpha[20, 10] == 0 and alpha[0, 0] == 255 and alpha[31, 31] == 255


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_grey_alpha_to_jpeg_and_bmp_is_written(tmp_path, capsys, suffix):
    src = tmp_path / "la.png"
    Image.fromarray(np.dstack([np.full((8, 8), 90, np.uint8), np.full((8, 8), 128, np.uint8)]), "LA").save(src)
    rc, out, err = cli(capsys, src, "-o", tmp_path / f"o{suffix}")
    assert rc == 0, err
    with Image.open(tmp_path / f"o{suffix}") as o:
        assert o.size == (16, 16)
        assert o.mode == "L" if suffix == ".jpg" else o.mode in ("RGB", "RGBA")
    assert ("alpha is dropped" in err + out) == (suffix == ".jpg")


def test_palette_with_transparency_to_jpeg_says_alpha_is_dropped(tmp_path, capsys):
    src = tmp_path / "pal.png"
    im = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) % 4, "P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    im.save(src, transparency=0)
    rc, out, err = cli(capsys, src, "-o", tmp_path / "o.jpg")
    assert rc == 0, err
    assert "alpha is dropped" in err + out
    with Image.open(tmp_path / "o.jpg") as o:
        assert o.mode == "RGB"


def test_webm_output_re_encodes_aac_audio_as_opus(tmp_path, capsys):
    src = tmp_path / "a.mp4"
    media.write_test_clip(src, frames=6, size=(32, 24))
    rc, out, err = cli(capsys, src, "-o", tmp_path / "o.webm")
    assert rc == 0, err
    assert "re-encoded as opus" in err + out
    with av.open(str(tmp_path / "o.webm")) as c:
        assert [s.codec_context.name for s in c.streams] == ["vp9", "opus"]
        assert sum(1 for _ in c.decode(audio=0)) > 0


def test_slowest_fps_writes_a_video(tmp_path, capsys):
    src = tmp_path / "a.mp4"
    media.write_test_clip(src, frames=3, size=(32, 24), audio=False)
    rc, out, err = cli(capsys, src, "-o", tmp_path / "o.mp4", "--fps", "0.01")
    assert rc == 0, err
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.streams.video[0].average_rate == Fraction(1, 100)
    assert media._rate(1e-9) > 0


@pytest.mark.parametrize("name", ["x" * 300 + "/o.png", "x" * 300 + ".png", "x" * 300 + "/"])
def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys, name):
    src = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(src)
    rc, out, err = cli(capsys, src, "-o", f"{tmp_path}/{name}")
    one_error(rc, err, "bytes", "file system takes at most", "shorter name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_video_larger_than_h264_takes_is_refused_before_anything_is_written(tmp_path, capsys):
    src = tmp_path / "wide.png"
    Image.new("RGB", (8200, 2)).save(src)
    rc, out, err = cli(capsys, src, "-o", tmp_path / "o.mp4")  # x2: 16400 px wide
    one_error(rc, err, "16400x4", "16384", ".webm", "--scale")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.png"]


def _ffv1(path: Path, frames: list[np.ndarray], pix_fmt: str, fmt: str) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=24)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(a, format=fmt)
            f.pts = i
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


@pytest.mark.parametrize("pix_fmt,mode,dtype", [("gray16le", "I;16", np.uint16), ("gray", "L", np.uint8),
                                                ("rgb48le", "RGB", np.uint16)])
def test_video_to_frames_keeps_grey_and_16_bits(tmp_path, capsys, pix_fmt, mode, dtype):
    ramp = np.linspace(0, np.iinfo(dtype).max, 32, dtype=np.float64).astype(dtype)
    a = np.tile(ramp, (16, 1))
    if pix_fmt == "rgb48le":
        a = np.dstack([a, a[:, ::-1], a])
    src = _ffv1(tmp_path / "v.mkv", [a, a], pix_fmt, pix_fmt)
    rc, out, err = cli(capsys, src, "-o", tmp_path / "frames/")
    assert rc == 0, err
    png = tmp_path / "frames" / "000001.png"
    if pix_fmt == "rgb48le":
        got, _ = media.read_image(png)
        assert got.dtype == np.uint16 and got.shape == (32, 64, 3)
    else:
        with Image.open(png) as im:
            assert im.mode == mode and im.size == (64, 32)
            got = np.asarray(im)
    assert got.max() > (60000 if dtype == np.uint16 else 240)
    if dtype == np.uint16:  # 16 bits: not 8-bit values widened (v * 257)
        assert (got % 257 != 0).mean() > 0.5


def test_rotated_video_to_frames_is_turned_as_displayed(tmp_path, capsys):
    plain = media.write_test_clip(tmp_path / "p.mp4", frames=2, size=(48, 32), audio=False)
    turned = media.write_test_clip(tmp_path / "r.mp4", frames=2, size=(48, 32), audio=False, rotation=90)
    assert cli(capsys, plain, "-o", tmp_path / "pf/")[0] == 0
    rc, out, err = cli(capsys, turned, "-o", tmp_path / "rf/")
    assert rc == 0 and "turned 90 degrees" in err + out
    a = np.asarray(Image.open(tmp_path / "pf" / "000001.png")).astype(np.float32)
    b = np.asarray(Image.open(tmp_path / "rf" / "000001.png")).astype(np.float32)
    assert b.shape == (96, 64, 3)
    ccw, cw = np.abs(np.rot90(a, 1) - b).mean(), np.abs(np.rot90(a, 3) - b).mean()
    assert ccw < 3 and cw > 10 * ccw  # display rotation 90 = a quarter turn counterclockwise (ffmpeg's sense)
