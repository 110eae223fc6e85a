"""FlashVSR's async worker: its lifetime follows the engine, whoever forgets to call close().

Hosts unload by dropping references (Daydream Scope: drop + ``gc.collect()``, never ``shutdown()``),
so a worker thread that held its owner strongly kept a whole model alive per reload.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import torch

from live_upscale.backends.flashvsr.backend import tiny_engine


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "flashvsr-worker" and t.is_alive()]


def _wait_gone(before: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while len(_workers()) > before and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(_workers())


def test_dropping_an_engine_without_close_frees_its_model_and_thread():
    torch.set_num_threads(1)
    before = len(_workers())
    eng = tiny_engine(scale=2.0, **{"async": 1})
    y = eng.process(torch.rand(3, 3, 16, 16))
    assert y.shape[0] <= 3 and len(_workers()) == before + 1
    model, runner = weakref.ref(eng.model), weakref.ref(eng.runner)
    del eng, y
    gc.collect()
    assert runner() is None and model() is None  # the thread held neither
    assert _wait_gone(before) == before  # and weakref.finalize stopped it


def test_close_joins_the_worker_and_is_idempotent():
    before = len(_workers())
    eng = tiny_engine(scale=2.0, **{"async": 1})
    runner = eng.runner
    eng.process(torch.rand(2, 3, 16, 16))
    runner.close()
    assert len(_workers()) == before
    runner.close()
