"""TouchDesigner host: a Script TOP that upscales its input on the GPU, with state across cooks.

Use from a Script TOP's callbacks DAT (``windows/td_script_top_callbacks.py`` is a ready one)::

    from live_upscale.plugin import touchdesigner as lu
    def onSetupParameters(scriptOp): lu.setup_parameters(scriptOp)
    def onPulse(par): lu.pulse(par)
    def onCook(scriptOp): lu.cook(scriptOp)

- ``interop``: TD's ``CUDAMemory`` <-> torch without a host copy (``__cuda_array_interface__``).
- ``parameters``: the ``Upscale`` and ``Info`` pages.
- ``top``: one :class:`UpscaleTOP` per Script TOP (node, CUDA stream, buffers kept alive), the callbacks.
"""

from .interop import TexLayout, layout_of, tensor_from_memory
from .top import UpscaleTOP, cook, drop, pulse, setup_parameters, state_for

__all__ = [
    "TexLayout",
    "UpscaleTOP",
    "cook",
    "drop",
    "layout_of",
    "pulse",
    "setup_parameters",
    "state_for",
    "tensor_from_memory",
]
