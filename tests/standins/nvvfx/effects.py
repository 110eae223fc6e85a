"""``nvvfx.effects`` stand-in: the quality levels (values as in the VFX SDK's sample app modes)."""

from __future__ import annotations

import enum


class QualityLevel(enum.IntEnum):
    BICUBIC = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    ULTRA = 4
    DENOISE_LOW = 8
    DENOISE_MEDIUM = 9
    DENOISE_HIGH = 10
    DENOISE_ULTRA = 11
    DEBLUR_LOW = 12
    DEBLUR_MEDIUM = 13
    DEBLUR_HIGH = 14
    DEBLUR_ULTRA = 15
    HIGHBITRATE_LOW = 16
    HIGHBITRATE_MEDIUM = 17
    HIGHBITRATE_HIGH = 18
    HIGHBITRATE_ULTRA = 19
    STREAMING_MEDIUM = 21
    STREAMING_ULTRA = 23


SAME_SIZE = frozenset(q for q in QualityLevel if q.name.startswith(("DENOISE_", "DEBLUR_")))
