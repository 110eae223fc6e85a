"""One upscale node per Script TOP, cooked on one CUDA stream shared with TouchDesigner.

Per cook (``UpscaleTOP.cook``):

1. read the custom pars; apply changes to the node (load-time ones re-create the engine);
2. under ``torch.cuda.stream(s)``: ``input.cudaMemory(stream=s)`` (TD queues its texture copy on
   ``s``), alias that buffer as a tensor, ``node.cook`` it in TD's own layout (HWC, flipped,
   BGRA for uint8 / RGBA otherwise, same dtype out as in);
3. ``scriptOp.copyCUDAMemory(out, ..., stream=s)``: TD waits for ``s`` on the GPU, the host never
   syncs. The output tensor and TD's input buffer are kept alive for two more cooks, so neither is
   freed or reused while the GPU may still read it.

Nothing escapes a cook: on any error the input is passed through, resized to the output size, the
TOP shows a warning with the one-line reason, and the error is kept in the Info page. A backend
that failed to load is not retried every frame: only after a parameter change or the Reset pulse.

States live in a dict keyed by the operator's id and are dropped when TD reports the operator as
no longer valid (deleted). The node itself resets its temporal state when the input size changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import deque
from typing import Any

import numpy as np
import torch

from ...errors import BackendUnavailable, LiveUpscaleError, one_line
from ...nodes import UpscaleNode, formats, resolve_device
from ...ops.resample import out_size, resize
from . import host_io, interop, parameters

log = logging.getLogger(__name__)

KEEP_COOKS = 2  # outputs / input buffers kept alive after their cook
INFO_EVERY_S = 0.5  # info pars refresh at most this often (each change re-cooks the TOP)

ALLOW_HOST_MEMORY = False  # tests with host-memory stand-ins turn this on; real TD memory is device memory


def _shape_factory():
    """TD's ``CUDAMemoryShape`` (a global inside TD; the ``td`` module elsewhere)."""
    try:
        import td  # type: ignore[import-not-found]

        return td.CUDAMemoryShape
    except (ImportError, AttributeError):
        import builtins

        cls = getattr(builtins, "CUDAMemoryShape", None)
        if cls is None:
            raise BackendUnavailable("CUDAMemoryShape is not available: this code runs inside TouchDesigner only") from None
        return cls


def _first_input(script_op):
    try:
        ins = script_op.inputs
    except Exception:  # noqa: BLE001
        return None
    return ins[0] if ins else None


def _err_text(e: BaseException) -> str:
    """Our own errors are already one actionable line; anything else gets its type name."""
    if isinstance(e, LiveUpscaleError):
        return " ".join(str(e).split())
    return one_line(e)


class UpscaleTOP:
    """The state one Script TOP keeps across cooks."""

    def __init__(self, script_op=None, device: str | torch.device = "auto"):
        self.op = script_op
        self.device = device if isinstance(device, torch.device) else resolve_device(str(device))
        if self.device.type == "cpu" and str(device).strip().lower() in ("auto", ""):
            self.device = host_io.device()  # no CUDA: MPS where torch has it (Apple Silicon), else the CPU
        self.node: UpscaleNode | None = None
        self.stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        self._keep: deque[tuple[Any, Any]] = deque(maxlen=KEEP_COOKS)
        self._applied: dict[str, Any] = {}
        self._failed: tuple[tuple, str] | None = None  # (load key, message) of a load that failed
        self.in_size: tuple[int, int] | None = None
        self.out_size: tuple[int, int] | None = None
        self.last_error = ""
        self.cook_ms: float | None = None
        self.cooks = 0
        self.pass_throughs = 0
        self._info_t = 0.0
        self._info_error = ""
        self.out_dtype = interop.OutputDtype()  # the Output data type choice, and what TD refused
        self.out_layout: interop.TexLayout | None = None
        self._mem_stream = True  # False: this TD's cudaMemory() takes no stream
        self._copy_stream = True  # False: this TD's copyCUDAMemory() takes no stream

    # --- parameters ------------------------------------------------------------------------------

    def configure(self, params: dict[str, Any]) -> None:
        """Create the node or apply changed parameters (validation errors raise InputError)."""
        if self.node is None:
            # download=False: a download would freeze TD's main thread; the status says what to fetch
            self.node = UpscaleNode(**params, device=str(self.device), download=False)
            self._applied = dict(params)
            return
        changes = {k: v for k, v in params.items() if self._applied.get(k) != v}
        if changes:
            self.node.update(**changes)
            self._applied.update(changes)

    def reset(self) -> None:
        """Reset pulse: drop temporal state and forget a failed load so it is tried again."""
        self._failed = None
        self.last_error = ""
        if self.node is not None:
            self.node.reset()

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
        self.node = None
        self._keep.clear()

    def _load(self) -> None:
        assert self.node is not None
        key = self.node.params.load_key()
        if self._failed is not None and self._failed[0] == key:
            raise BackendUnavailable(self._failed[1])
        try:  # cheap when the engine for these parameters is already loaded
            self.node.load()
        except Exception as e:  # noqa: BLE001 - remembered, shown, not retried every frame
            self._failed = (key, _err_text(e) + " (change a parameter or pulse Reset to retry)")
            raise
        self._failed = None

    # --- cooking ---------------------------------------------------------------------------------

    def _stream_ctx(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    @property
    def _stream_handle(self) -> int | None:
        return self.stream.cuda_stream if self.stream is not None else None

    @property
    def uses_numpy(self) -> bool:
        """Without CUDA, frames go through host memory: TOP.numpyArray() in, copyNumpyArray() out."""
        return self.device.type != "cuda" and not ALLOW_HOST_MEMORY

    @property
    def io_path(self) -> str:
        return f"{host_io.PATH_NAME} on {self.device}" if self.uses_numpy else f"CUDA memory on {self.device}"

    def _out_layout(self, script_op, lay: interop.TexLayout) -> interop.TexLayout:
        """What the TOP writes: the chosen output data type on the CUDA path; on the numpy path the
        input's layout (copyNumpyArray takes uint8, uint16 or float32), mono widened to RGBA."""
        if self.uses_numpy:
            fmt = host_io.out_format(lay)
            return dataclasses.replace(lay, fmt=fmt, comps=4 if fmt.channels == "RGBA" else lay.comps)
        return self.out_dtype.layout(lay, parameters.read_out_dtype(script_op))

    def _read_input(self, src):
        if self.uses_numpy:
            a, lay = host_io.read(src)
            return None, a, lay
        mem = None
        if self._mem_stream:
            try:
                mem = src.cudaMemory(stream=self._stream_handle)
            except TypeError:
                self._mem_stream = False  # a TD build without the stream argument: remembered
        if mem is None:
            mem = src.cudaMemory()  # TD copies on the default stream: ours waits for it on the GPU
            if self.stream is not None:
                self.stream.wait_stream(torch.cuda.default_stream(self.device))
        x, lay = interop.tensor_from_memory(mem, self.device, allow_host=ALLOW_HOST_MEMORY)
        return mem, x, lay

    def _emit(self, script_op, out: torch.Tensor, lay: interop.TexLayout) -> None:
        """Copy ``out`` (HWC, ``lay``'s dtype) into the Script TOP on our stream."""
        if self.uses_numpy:
            self.out_size = host_io.write(script_op, out)
            return
        encoded = out
        if out.dtype != torch.uint8 and lay.dtype == np.uint16:
            out = out.clamp(0, 65535).to(torch.uint16)  # formats encodes uint16 as int32
        out = out.contiguous()
        olay = lay.resized(int(out.shape[0]), int(out.shape[1]))
        ptr, nbytes = interop.buffer_of(out, olay)
        shape = _shape_factory()()
        shape.width, shape.height, shape.numComps, shape.dataType = olay.width, olay.height, olay.comps, olay.dtype.type
        try:
            self._copy(script_op, ptr, nbytes, shape)
        except Exception as e:  # noqa: BLE001 - a data type TD refuses: once more as float32, remembered
            if not self.out_dtype.can_fall_back(lay):
                raise
            flay = self.out_dtype.refuse(lay, e)
            rgb, alpha, _ = formats.decode(encoded, lay.fmt)
            try:
                self._emit(script_op, formats.encode(rgb, flay.fmt, alpha), flay)
            except Exception:
                self.out_dtype.forget(lay)  # float32 failed too: it was not the data type
                raise e from None
            log.warning("live-upscale: %s", self.out_dtype.notice)
            return
        self._keep[-1] = (self._keep[-1][0], out)
        self.out_size = (olay.height, olay.width)
        self.out_layout = olay

    def _copy(self, script_op, ptr: int, nbytes: int, shape) -> None:
        if self._copy_stream:
            try:
                script_op.copyCUDAMemory(ptr, nbytes, shape, stream=self._stream_handle)
                return
            except TypeError:
                pass  # perhaps a TD build whose copyCUDAMemory takes no stream: try that
        # no stream: finish our work first, then copy
        if self.stream is not None:
            self.stream.synchronize()
        script_op.copyCUDAMemory(ptr, nbytes, shape)
        self._copy_stream = False

    def _scale(self, params: dict[str, Any] | None) -> float:
        if self.node is not None:
            return float(self.node.params.scale)
        try:
            return min(8.0, max(1.0, float((params or {}).get("scale", 2.0))))
        except (TypeError, ValueError):
            return 2.0

    def cook(self, script_op) -> None:
        """One cook. Never raises: errors pass the input through and show on the TOP."""
        t0 = time.perf_counter()
        self.cooks += 1
        src = _first_input(script_op)
        if src is None:
            self._warn(script_op, "live-upscale: connect a TOP to the first input")
            return
        params = None
        mem = x = lay = None
        self._keep.append((None, None))
        try:
            params = parameters.read(script_op)
            self.configure(params)
            with self._stream_ctx():
                mem, x, lay = self._read_input(src)
                self._keep[-1] = (mem, None)
                self.in_size = (lay.height, lay.width)
                self._load()
                interop.tell_source_bits(self.node.engine, lay)
                olay = self._out_layout(script_op, lay)
                y = self.node.cook(x, in_format=lay.fmt, out_format=olay.fmt)
                self._emit(script_op, y, olay)
            self.last_error = ""
            status = getattr(self.node.engine, "status", "")  # remote: connecting / reconnecting, input passed through
            if status:
                self._warn(script_op, f"live-upscale: {status}")
        except Exception as e:  # noqa: BLE001 - TD must never see an exception from a cook
            self.last_error = _err_text(e)
            log.debug("live-upscale cook failed", exc_info=True)
            self._pass_through(script_op, src, mem, x, lay, params)
        finally:
            self.cook_ms = (time.perf_counter() - t0) * 1000.0
            self._info(script_op)

    def _pass_through(self, script_op, src, mem, x, lay, params) -> None:
        self.pass_throughs += 1
        try:
            with self._stream_ctx():
                if x is None:
                    mem, x, lay = self._read_input(src)
                    self._keep[-1] = (mem, None)
                rgb, alpha, _ = formats.decode(x, lay.fmt)
                size = out_size(lay.height, lay.width, self._scale(params))
                y = resize(rgb, size, "bicubic").clamp_(0.0, 1.0)
                olay = self._out_layout(script_op, lay)
                self._emit(script_op, formats.encode(y, olay.fmt, alpha), olay)
            self._warn(script_op, f"live-upscale: {self.last_error} (input passed through)")
        except Exception as e2:  # noqa: BLE001
            self._error(script_op, f"live-upscale: {self.last_error} (pass-through failed too: {_err_text(e2)})")

    @staticmethod
    def _warn(script_op, msg: str) -> None:
        with contextlib.suppress(Exception):
            script_op.addWarning(msg)

    @staticmethod
    def _error(script_op, msg: str) -> None:
        with contextlib.suppress(Exception):
            script_op.addError(msg)

    # --- info ------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        n = self.node
        engine = n.engine.describe() if n is not None and n.engine is not None else ""
        ms = n.ms_per_frame if n is not None else None
        return {
            "Backendinuse": (f"{n.backend_id}: {engine}" if n is not None and n.backend_id else "(not loaded)")
            + f" | frames via {self.io_path}",
            "Msperframe": round(float(ms), 2) if ms is not None else 0.0,
            "Cookms": round(float(self.cook_ms), 2) if self.cook_ms is not None else 0.0,
            "Lasterror": self.last_error,
            "Outputdtype": self.out_dtype.in_use(self.out_layout),
        }

    def _info(self, script_op, force: bool = False) -> None:
        now = time.monotonic()
        changed = self.last_error != self._info_error
        if not force and not changed and now - self._info_t < INFO_EVERY_S:
            return
        self._info_t, self._info_error = now, self.last_error
        parameters.write_info(script_op, self.info())


# --- one state per Script TOP ----------------------------------------------------------------------

_STATES: dict[Any, UpscaleTOP] = {}


def op_key(script_op) -> Any:
    key = getattr(script_op, "id", None)
    return key if key is not None else getattr(script_op, "path", id(script_op))


def _prune() -> None:
    for key, st in list(_STATES.items()):
        alive = True
        try:
            alive = bool(getattr(st.op, "valid", True))
        except Exception:  # noqa: BLE001 - a dangling reference counts as deleted
            alive = False
        if not alive:
            with contextlib.suppress(Exception):
                st.close()
            del _STATES[key]


def state_for(script_op, device: str | torch.device = "auto") -> UpscaleTOP:
    _prune()
    key = op_key(script_op)
    st = _STATES.get(key)
    if st is None:
        st = _STATES[key] = UpscaleTOP(script_op, device)
    st.op = script_op
    return st


def drop(script_op=None) -> None:
    """Forget one TOP's state (or all of them)."""
    keys = [op_key(script_op)] if script_op is not None else list(_STATES)
    for key in keys:
        st = _STATES.pop(key, None)
        if st is not None:
            with contextlib.suppress(Exception):
                st.close()


# --- the three Script TOP callbacks ----------------------------------------------------------------


def setup_parameters(script_op) -> None:
    """``onSetupParameters``: build the pages; never raises."""
    try:
        parameters.setup(script_op, resolve_device("auto"))
    except Exception as e:  # noqa: BLE001
        with contextlib.suppress(Exception):
            script_op.addError(f"live-upscale: parameter setup failed: {_err_text(e)}")


def pulse(par) -> None:
    """``onPulse``: the Reset pulse resets the TOP's node."""
    try:
        if getattr(par, "name", "") == "Reset":
            state_for(par.owner).reset()
    except Exception as e:  # noqa: BLE001
        log.warning("live-upscale: pulse failed: %s", e)


def cook(script_op) -> None:
    """``onCook``: never raises."""
    try:
        state_for(script_op).cook(script_op)
    except Exception as e:  # noqa: BLE001 - state creation itself failed (no torch CUDA, ...)
        with contextlib.suppress(Exception):
            script_op.addError(f"live-upscale: {_err_text(e)}")
