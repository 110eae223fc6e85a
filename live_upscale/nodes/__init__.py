"""The host-free node: parameters, frame formats, temporal state, backend dispatch."""

from .formats import FrameFormat, decode, encode
from .node import UpscaleNode, resolve_device
from .params import UpscaleParams

__all__ = ["FrameFormat", "UpscaleNode", "UpscaleParams", "decode", "encode", "resolve_device"]
