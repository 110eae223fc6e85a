"""live-upscale: the upscale node for real-time AI video."""

from .errors import BackendUnavailable, InputError, LiveUpscaleError, WeightsError, WeightsMissing
from .nodes import FrameFormat, UpscaleNode, UpscaleParams

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "FrameFormat",
    "InputError",
    "LiveUpscaleError",
    "UpscaleNode",
    "UpscaleParams",
    "WeightsError",
    "WeightsMissing",
    "__version__",
]
