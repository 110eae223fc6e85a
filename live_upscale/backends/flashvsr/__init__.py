"""FlashVSR v1.1 as a live-upscale backend: our own streaming implementation of the official model.

Modules: ``config`` (dimensions), ``dit`` (Wan2.1 DiT with KV cache), ``attention`` (LCSA block
masks; FlexAttention / SDPA / dense kernels), ``lq_proj`` (Causal_LQ4x_Proj), ``tcdecoder`` (TC
decoder), ``color`` (wavelet / AdaIN fix), ``stream`` (the chunk schedule), ``loader`` (official
files), ``backend`` (registration). Only torch and safetensors are needed; importing this package
never fails for want of an optional dependency (FlexAttention is looked up when used).
"""

from __future__ import annotations

from .backend import FlashVSRBackend, FlashVSREngine, parse_spec, tiny_engine
from .config import TINY, WAN_1_3B, FlashVSRConfig
from .model import FlashVSRModel, random_model
from .stream import FlashVSRStream, StreamOptions

__all__ = [
    "TINY",
    "WAN_1_3B",
    "FlashVSRBackend",
    "FlashVSRConfig",
    "FlashVSREngine",
    "FlashVSRModel",
    "FlashVSRStream",
    "StreamOptions",
    "parse_spec",
    "random_model",
    "tiny_engine",
]
