"""Stand-in for ``scope.server.pipeline_processor``: ``PipelineProcessor.process_chunk`` for one
pipeline with a ``video`` port, run synchronously by the tests (Scope runs it in a thread loop).

Kept: one queued parameter update merged per chunk; ``reset_cache`` clears the output queues and
makes the next call ``init_cache=True``; ``prepare(**params, video=True)`` every chunk; waiting
until ``input_size`` frames are queued; even sampling over the queued frames, which drops the
surplus; ``init_cache`` true on the first call, after a reset, and after any call that returned
``{}``; output converted to uint8 and queued frame by frame with its timestamps; exceptions logged
(out-of-memory re-raised). Left out: tempo sync, audio, ctrl input, queue resizing, FPS tracking.

``DRAIN_SINGLE_FRAME = True`` models Scope's open PR #532 ("drain queue for chunk_size=1"): for
``input_size = 1`` the whole queue is drained and only the newest frame handed over; larger sizes
keep the even sampling.
"""

from __future__ import annotations

import logging
import queue
import threading
from fractions import Fraction
from typing import Any

import torch

from .media_packets import MediaTimestamp, VideoPacket, ensure_video_packet

logger = logging.getLogger(__name__)

SLEEP_TIME = 0.01


class PipelineProcessor:
    DRAIN_SINGLE_FRAME = False  # True: PR #532's behaviour for input_size=1

    def __init__(self, pipeline: Any, pipeline_id: str, initial_parameters: dict | None = None, **kwargs: Any):
        self.pipeline = pipeline
        self.pipeline_id = pipeline_id
        self.node_id = kwargs.get("node_id") or pipeline_id
        self.input_queues: dict[str, queue.Queue] = {}
        self.output_queues: dict[str, list[queue.Queue]] = {}
        self.input_queue_lock = threading.Lock()
        self.parameters = initial_parameters or {}
        self.parameters_queue: queue.Queue = queue.Queue(maxsize=8)
        self.shutdown_event = threading.Event()
        self.is_prepared = False
        self._pending_cache_init = False
        self._video_mode = (initial_parameters or {}).get("input_mode") == "video"

    def update_parameters(self, parameters: dict[str, Any]):
        try:
            self.parameters_queue.put_nowait(parameters)
        except queue.Full:
            return False

    def prepare_chunk(self, input_queue_ref: queue.Queue, chunk_size: int) -> list[VideoPacket]:
        if chunk_size == 1 and type(self).DRAIN_SINGLE_FRAME:
            newest = None
            while not input_queue_ref.empty():
                try:
                    newest = input_queue_ref.get_nowait()
                except queue.Empty:
                    break
            return [ensure_video_packet(newest)] if newest is not None else []
        step = input_queue_ref.qsize() / chunk_size
        keep = {round(i * step) for i in range(chunk_size)}
        out = []
        for i in range(max(keep) + 1):
            packet = ensure_video_packet(input_queue_ref.get_nowait())
            if i in keep:
                out.append(packet)
        return out

    @staticmethod
    def _normalize_timestamps(raw: Any, n: int) -> list[MediaTimestamp]:
        if not isinstance(raw, list):
            return [MediaTimestamp() for _ in range(n)]
        out = []
        for ts in raw[:n]:
            if isinstance(ts, MediaTimestamp):
                out.append(ts)
            elif isinstance(ts, dict):
                tb = ts.get("time_base")
                out.append(MediaTimestamp(pts=ts.get("pts"), time_base=Fraction(tb) if tb is not None else None))
            else:
                out.append(MediaTimestamp())
        out.extend(MediaTimestamp() for _ in range(n - len(out)))
        return out

    def process_chunk(self):
        try:
            new_parameters = self.parameters_queue.get_nowait()
            if "input_mode" in new_parameters:
                self._video_mode = new_parameters.get("input_mode") == "video"
            self.parameters = {**self.parameters, **new_parameters}
        except queue.Empty:
            pass

        reset_cache = self.parameters.pop("reset_cache", None)
        if reset_cache:
            for queues in self.output_queues.values():
                for q in queues:
                    while not q.empty():
                        q.get_nowait()
            self._pending_cache_init = True

        requirements = None
        if hasattr(self.pipeline, "prepare"):
            prepare_params = dict(self.parameters)
            if self._video_mode:
                prepare_params["video"] = True
            requirements = self.pipeline.prepare(**prepare_params)

        chunks: dict[str, list[VideoPacket]] = {}
        if requirements is not None:
            size = requirements.input_size
            with self.input_queue_lock:
                queues = dict(self.input_queues)
            if not queues or not all(q.qsize() >= size for q in queues.values()):
                self.shutdown_event.wait(SLEEP_TIME)
                return
            for port, q in queues.items():
                chunks[port] = self.prepare_chunk(q, size)

        try:
            call_params = dict(self.parameters)
            call_params["init_cache"] = not self.is_prepared or self._pending_cache_init
            if reset_cache:
                call_params["init_cache"] = True
            for port, packets in chunks.items():
                call_params[port] = [p.tensor for p in packets]
                call_params["video_timestamps" if port == "video" else f"{port}_timestamps"] = [p.timestamp for p in packets]

            output_dict = self.pipeline(**call_params)
            if not output_dict:
                self.shutdown_event.wait(SLEEP_TIME)
                return
            if output_dict.get("video") is None:
                self.is_prepared = True
                self._pending_cache_init = False
                return

            for port, value in output_dict.items():
                if not isinstance(value, torch.Tensor):
                    continue
                queues = self.output_queues.get(port)
                if not queues:
                    continue
                if value.dtype != torch.uint8:
                    value = (value * 255.0).clamp(0, 255).to(dtype=torch.uint8).contiguous().detach()
                frames = [value[i].unsqueeze(0) for i in range(value.shape[0])]
                raw = output_dict.get(f"{port}_timestamps")
                if port == "video" and raw is None:
                    raw = output_dict.get("video_timestamps")
                stamps = self._normalize_timestamps(raw, len(frames))
                for frame, ts in zip(frames, stamps, strict=True):
                    for q in queues:
                        try:
                            q.put_nowait(VideoPacket(tensor=frame if q is queues[0] else frame.clone(), timestamp=ts))
                        except queue.Full:
                            logger.debug("output queue full, dropping frame")
        except Exception as e:
            if isinstance(e, torch.cuda.OutOfMemoryError):
                raise
            logger.error("Error processing chunk for %s: %s", self.pipeline_id, e, exc_info=True)

        self.is_prepared = True
        self._pending_cache_init = False
