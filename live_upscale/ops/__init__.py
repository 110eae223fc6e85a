"""Low-level image operations (resampling, warp, flow, luma) used by both ``nodes/`` and ``backends/``.

The lowest layer of the package: it imports nothing from the rest of ``live_upscale``."""
