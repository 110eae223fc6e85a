"""Run a :class:`FlashVSRStream` on a worker thread (and its own CUDA stream), so the host never
waits for a DiT call.

``push(frames)`` copies the frames, queues them and returns at once with the outputs that are
ready, at most as many as came in (the engine contract: M <= N; the rest wait for the next calls,
so a host that pushes one frame per tick gets one frame per tick once the pipeline is full).
``finish()`` waits for the queue and returns everything left. On CUDA the worker computes on its
own stream; inputs and outputs are handed over with events (no device-wide sync), and
``record_stream`` keeps the caching allocator from reusing their memory too early.

A failure on the worker is re-raised on the next call (one line), after which the stream is reset.

Lifetime follows the owner: the worker thread holds only a weak reference to its ``AsyncStream``
(a strong one just while a job runs), so a host that drops the engine without calling ``close()``
(Daydream Scope unloads a pipeline by dropping its reference and running ``gc``) frees the model;
``weakref.finalize`` then stops the thread. ``close()`` does the same at once.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections import deque

import torch

from .stream import FlashVSRStream


class AsyncStream:
    def __init__(self, stream: FlashVSRStream):
        self.stream = stream
        self.device = stream.device
        self.cuda = self.device.type == "cuda"
        self._side = torch.cuda.Stream(device=self.device) if self.cuda else None
        self._jobs: queue.Queue = queue.Queue()
        self._ready: deque = deque()  # (frame (1,3,H,W), event | None)
        self._cv = threading.Condition()
        self._pending = 0  # jobs queued or running
        self._error: BaseException | None = None
        self._closed = False
        # the thread gets the job queue and a weak reference, never ``self``: see the module docstring
        self._thread = threading.Thread(
            target=_worker_loop, args=(self._jobs, weakref.ref(self)), name="flashvsr-worker", daemon=True
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop_worker, self._jobs, self._thread)
        self._finalizer.atexit = False  # at interpreter exit the daemon thread just ends

    # --- worker side ------------------------------------------------------------------------------

    def _run_job(self, job) -> None:
        kind, frames, ev = job
        try:
            if self.cuda:
                with torch.cuda.stream(self._side):
                    out = self._do(kind, frames, ev)
            else:
                out = self._do(kind, frames, ev)
            with self._cv:
                for y in out:
                    self._ready.append(y)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self.stream.reset()
            with self._cv:
                self._error = e
        finally:
            with self._cv:
                self._pending -= 1
                self._cv.notify_all()

    def _do(self, kind: str, frames, ev) -> list:
        if kind == "reset":
            self.stream.reset()
            return []
        if kind == "push":
            if ev is not None:
                torch.cuda.current_stream().wait_event(ev)
                frames.record_stream(torch.cuda.current_stream())
            y = self.stream.push(frames)
        else:  # finish
            y = self.stream.finish()
        if y is None or y.shape[0] == 0:
            return []
        done = None
        if self.cuda:
            done = torch.cuda.Event()
            done.record()
        return [(y[i : i + 1], done) for i in range(y.shape[0])]

    # --- caller side ------------------------------------------------------------------------------

    def _submit(self, kind: str, frames=None) -> None:
        ev = None
        if frames is not None:
            frames = frames.detach().clone()  # the host may reuse its buffer as soon as we return
            if self.cuda:
                ev = torch.cuda.Event()
                ev.record()
        with self._cv:
            self._pending += 1
        self._jobs.put((kind, frames, ev))

    def _raise_pending_error(self) -> None:
        with self._cv:
            e, self._error = self._error, None
        if e is not None:
            raise e

    def _take(self, limit: int | None) -> torch.Tensor | None:
        with self._cv:
            n = len(self._ready) if limit is None else min(limit, len(self._ready))
            items = [self._ready.popleft() for _ in range(n)]
        if not items:
            return None
        size = items[-1][0].shape[-2:]
        items = [it for it in items if it[0].shape[-2:] == size]  # frames of an abandoned size are dropped
        if self.cuda:
            cur = torch.cuda.current_stream(self.device)
            for y, ev in items:
                if ev is not None:
                    cur.wait_event(ev)
                y.record_stream(cur)
        return torch.cat([y for y, _ in items])

    def wait(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._pending == 0)

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        self._raise_pending_error()
        self._submit("push", frames)
        y = self._take(frames.shape[0])
        if y is None:
            return torch.zeros((0, 3, *self._out_size(frames)), device=self.device)
        return y

    def _out_size(self, frames: torch.Tensor) -> tuple[int, int]:
        h, w = frames.shape[-2:]
        s = self.stream.opts.scale
        return max(1, int(round(h * s))), max(1, int(round(w * s)))

    def finish(self) -> torch.Tensor | None:
        self._raise_pending_error()
        self._submit("finish")
        self.wait()
        self._raise_pending_error()
        return self._take(None)

    def reset(self) -> None:
        self._submit("reset")
        self.wait()
        with self._cv:
            self._ready.clear()
            self._error = None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._finalizer()  # stops the worker (and joins it, unless called from the worker itself)


def _worker_loop(jobs: queue.Queue, ref: "weakref.ReferenceType[AsyncStream]") -> None:
    """The worker thread: waits for jobs holding no reference to the owner, runs each with a strong one."""
    with torch.inference_mode():
        while True:
            job = jobs.get()
            if job is None:
                return
            owner = ref()
            if owner is None:  # the owner was collected with jobs still queued
                return
            try:
                owner._run_job(job)
            finally:
                owner = job = None  # idle again: nothing of ours keeps the model (or a frame) alive


def _stop_worker(jobs: queue.Queue, thread: threading.Thread) -> None:
    """``weakref.finalize`` callback (and ``close``): end the worker; must not reference the owner."""
    jobs.put(None)
    if thread is not threading.current_thread():
        thread.join(timeout=60)
