"""Fuzz the CLI with broken real files (issue 15): truncated, bit-flipped and spliced .mp4/.mkv/.png bytes.

Whatever the bytes, ``live-upscale upscale`` exits 0 with a valid output or 1 with one error line;
it never shows a traceback, never changes its input and never leaves a partial output.

CI runs a small, fixed set of examples. For a long local run:

    LIVE_UPSCALE_FUZZ_EXAMPLES=2000 python -m pytest tests/test_cli_fuzz.py -q
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from live_upscale.plugin import media
from live_upscale.plugin.cli import main

EXAMPLES = int(os.environ.get("LIVE_UPSCALE_FUZZ_EXAMPLES", "40"))
NAMES = ["a.png", "b.png", "c.png", "a.mp4", "a.mkv"]  # RGBA, RGB, 16-bit RGB PNG; H.264+AAC in mp4 and mkv


_SEEDS: dict[str, bytes] = {}


def seeds() -> dict[str, bytes]:
    """Real files to break (made once per session)."""
    if _SEEDS:
        return _SEEDS
    d = Path(tempfile.mkdtemp(prefix="lu-seeds-"))
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (8, 12, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(d / "a.png")
    Image.fromarray(rgba[..., :3]).save(d / "b.png")
    media._write_deep_png(d / "c.png", rng.integers(0, 65536, (8, 10, 3), dtype=np.int64).astype(np.uint16))
    media.write_test_clip(d / "a.mp4", frames=4, size=(24, 16), fps=24, audio=True)
    media.write_test_clip(d / "a.mkv", frames=4, size=(22, 14), fps=12, audio=True)
    _SEEDS.update({name: (d / name).read_bytes() for name in NAMES})
    shutil.rmtree(d, ignore_errors=True)
    return _SEEDS


unit = st.floats(0.0, 1.0, allow_nan=False)
mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.02, 1.0)),  # (0 bytes has its own test)
    st.tuples(st.just("flip"), st.lists(st.tuples(unit, st.integers(0, 7)), min_size=1, max_size=12)),
    st.tuples(st.just("splice"), st.sampled_from(NAMES), unit, unit, unit, unit),
    st.tuples(st.just("bytes"), unit, st.binary(min_size=1, max_size=64)),
)


def mutate(data: bytes, muts) -> bytes:
    b = bytearray(data)
    for m in muts:
        if m[0] == "truncate":
            b = b[: int(m[1] * len(b))]
        elif m[0] == "flip" and b:
            for pos, bit in m[1]:
                b[min(len(b) - 1, int(pos * len(b)))] ^= 1 << bit
        elif m[0] == "splice":
            other = seeds()[m[1]]
            at, cut = int(m[2] * len(b)), int(m[3] * len(b) * 0.25)
            j = int(m[4] * len(other))
            k = j + int(m[5] * (len(other) - j))
            b = b[:at] + other[j:k] + b[at + cut :]
        elif m[0] == "bytes":
            at = int(m[1] * len(b))
            b = b[:at] + m[2] + b[at + len(m[2]) :]
    return bytes(b)


def _valid_output(path: Path) -> None:
    """A complete output: every frame decodes, all of one size."""
    if path.is_dir():
        files = sorted(path.iterdir())
        assert files and all(not f.name.startswith(".") for f in files)
        for f in files:
            with Image.open(f) as im:
                im.load()
        return
    if path.suffix == ".png":
        with Image.open(path) as im:
            im.load()
        return
    with av.open(str(path)) as c:
        sizes = {(f.width, f.height) for f in c.decode(c.streams.video[0])}
    assert len(sizes) == 1


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize="LIVE_UPSCALE_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(NAMES), muts=st.lists(mutation, min_size=1, max_size=3),
       out=st.sampled_from(["same", "video", "folder"]), scale=st.sampled_from(["2", "1.5"]))
def test_broken_files_never_crash_change_the_input_or_leave_partial_output(seed, muts, out, scale):
    data = mutate(seeds()[seed], muts)
    work = Path(tempfile.mkdtemp(prefix="lu-fuzz-"))
    try:
        src = work / ("in" + Path(seed).suffix)
        src.write_bytes(data)
        before = hashlib.sha256(data).hexdigest()
        if out == "same":
            dst = work / ("out" + (".png" if seed.endswith(".png") else ".mkv"))
        elif out == "video":
            dst = work / "out.mp4"
        else:
            dst = work / "frames"
        err, std = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            rc = main(["upscale", str(src), "-o", str(dst), "--backend", "classic", "--scale", scale])
        text = err.getvalue() + std.getvalue()
        assert "Traceback" not in text, text
        first = next((ln for ln in text.splitlines() if ln.startswith("live-upscale: error:")), "")
        kind = " ".join(first.split(": ", 2)[-1].replace(str(src), "IN").split()[:6]) if first else ""
        event(f"exit {rc} {kind}".strip())  # --hypothesis-show-statistics: how the runs ended
        assert hashlib.sha256(src.read_bytes()).hexdigest() == before
        left = sorted(os.listdir(work))
        if rc == 0:
            assert left == sorted([src.name, dst.name]), left
            _valid_output(dst)
        else:
            assert rc == 1, text
            errors = [ln for ln in err.getvalue().splitlines() if ln.startswith("live-upscale: error:")]
            assert len(errors) == 1, text
            assert "error: unexpected " not in errors[0], errors[0]  # every failure is one we foresaw and named
            assert left == [src.name], left
    finally:
        shutil.rmtree(work, ignore_errors=True)
