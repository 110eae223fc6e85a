"""The node: engine lifetime, temporal state across cooks, resets, buffering engines."""

from __future__ import annotations

import pytest
import torch

from live_upscale import InputError, UpscaleNode
from live_upscale.backends.base import Capabilities, Engine, EngineConfig
from live_upscale.ops.resample import out_size, resize
from tests.conftest import registered_engine


class ChunkEngine(Engine):
    """A temporal engine that emits frames in chunks of 3 and blends each output with the last one."""

    caps = Capabilities(temporal=True, delay=2, chunk=3)
    loads = 0

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        type(self).loads += 1
        self.buf: list[torch.Tensor] = []
        self.prev: torch.Tensor | None = None
        self.resets = 0
        self.gain = 1.0

    def _emit(self, frames):
        outs = []
        for f in frames:
            y = resize(f[None], out_size(*f.shape[-2:], self.scale), "bilinear") * self.gain
            if self.prev is not None:
                y = 0.5 * y + 0.5 * self.prev  # real temporal state: depends on history
            self.prev = y
            outs.append(y)
        return torch.cat(outs)

    def process(self, frames):
        self.buf.extend(frames)
        if len(self.buf) < 3:
            return frames[:0, :, :1, :1].new_zeros((0, 3, *out_size(*frames.shape[-2:], self.scale)))
        out, self.buf = self._emit(self.buf), []
        return out

    def flush(self):
        if not self.buf:
            return None
        out, self.buf = self._emit(self.buf), []
        return out

    def reset(self):
        self.buf, self.prev = [], None
        self.resets += 1

    def set_options(self, **options):
        if "sharpen" in options:
            self.gain = 1.0 - 0.1 * options["sharpen"]


@pytest.fixture
def chunk_backend():
    ChunkEngine.loads = 0
    with registered_engine("test_chunk", ChunkEngine) as cls:
        yield cls


def test_process_and_flush_keep_every_frame(chunk_backend):
    node = UpscaleNode(backend="test_chunk", scale=2, scene_cut=0)  # random frames would all be "cuts"
    outs = [node.process(torch.rand(1, 3, 6, 8)) for _ in range(7)]
    assert [o.shape[0] for o in outs] == [0, 0, 3, 0, 0, 3, 0]
    tail = node.flush()
    assert tail.shape == (1, 3, 12, 16)
    assert node.frames_in == 7 and node.frames_out == 7


def test_cook_never_stalls_while_engine_buffers(chunk_backend):
    node = UpscaleNode(backend="test_chunk", scale=2)
    frames = [torch.full((6, 8, 3), v / 10, dtype=torch.float32) for v in range(6)]
    outs = [node.cook(f) for f in frames]
    assert all(o.shape == (12, 16, 3) for o in outs)
    # the first two cooks return the input resized (warm-up), then the engine's outputs arrive in order
    assert torch.allclose(outs[0], torch.full_like(outs[0], 0.0), atol=1e-6)
    assert torch.allclose(outs[1], torch.full_like(outs[1], 0.1), atol=1e-6)
    assert torch.allclose(outs[2], torch.full_like(outs[2], 0.0), atol=1e-6)  # engine output of frame 0


def test_size_change_resets_temporal_state(chunk_backend):
    node = UpscaleNode(backend="test_chunk", scale=2)
    for _ in range(3):
        node.process(torch.full((1, 3, 4, 4), 1.0))
    eng = node.engine
    assert eng.prev is not None and eng.resets == 0
    y = node.process(torch.zeros(1, 3, 5, 7))  # new size: history dropped before processing
    assert eng.resets == 1 and node.resets == 1 and eng.buf and y.shape[0] == 0
    for _ in range(2):
        y = node.process(torch.zeros(1, 3, 5, 7))
    assert y.shape == (3, 3, 10, 14)
    assert float(y.abs().max()) == 0.0  # no ghost of the old (all-ones) frames
    assert node.engine is eng and ChunkEngine.loads == 1  # reset, not re-created


def test_load_params_recreate_runtime_params_do_not(chunk_backend):
    node = UpscaleNode(backend="test_chunk", scale=2, scene_cut=0)
    node.process(torch.rand(1, 3, 4, 4))
    first = node.engine
    assert node.update(sharpen=1.0) is False
    assert node.engine is first and first.gain == pytest.approx(0.9)
    assert node.update(scale=3.0) is True
    node.process(torch.rand(3, 3, 4, 4))
    assert node.engine is not first and ChunkEngine.loads == 2
    assert node.update(backend="classic") is True
    y = node.process(torch.rand(1, 3, 4, 4))
    assert node.backend_id == "classic" and y.shape == (1, 3, 12, 12)


def test_explicit_reset(chunk_backend):
    node = UpscaleNode(backend="test_chunk", scale=2, scene_cut=0)
    node.process(torch.rand(2, 3, 4, 4))
    node.reset()
    assert node.engine.buf == [] and node.engine.resets == 1
    assert node.flush() is None


def test_process_rejects_wrong_shapes():
    node = UpscaleNode(backend="classic")
    with pytest.raises(InputError, match=r"\(N,3,H,W\)"):
        node.process(torch.rand(3, 4, 4))
    with pytest.raises(InputError):
        node.process(torch.rand(1, 4, 4, 4))
    with pytest.raises(InputError, match="float"):
        node.process(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


def test_process_never_writes_into_the_callers_frames():
    node = UpscaleNode(backend="classic", scale=1.0, quality="fast")
    x = torch.rand(1, 3, 8, 8) * 1.5
    before = x.clone()
    y = node.process(x)
    assert torch.equal(x, before) and float(y.max()) <= 1.0


def test_params_validate():
    with pytest.raises(Exception, match="scale"):
        UpscaleNode(scale=0.5)
    with pytest.raises(InputError, match="CUDA"):
        if torch.cuda.is_available():
            raise InputError("CUDA present: nothing to check")
        UpscaleNode(device="cuda")
    assert UpscaleNode(backend="Real-ESRGAN".lower()).params.backend == "real_esrgan"


def test_info_reports_backend_and_timing():
    node = UpscaleNode(backend="classic")
    node.cook(torch.zeros(8, 8, 3, dtype=torch.uint8))
    info = node.info()
    assert info["backend"] == "classic" and info["ms_per_frame"] is not None and info["frames_out"] == 1


def test_backend_options_reach_the_engine_and_are_load_time(chunk_backend):
    node = UpscaleNode(backend="test_chunk", scene_cut=0, backend_options={"seed": 3})
    node.process(torch.rand(1, 3, 4, 4))
    assert node.engine.config.options["seed"] == 3
    assert node.update(backend_options={"seed": 4}) is True
    node.process(torch.rand(1, 3, 4, 4))
    assert node.engine.config.options["seed"] == 4 and ChunkEngine.loads == 2
