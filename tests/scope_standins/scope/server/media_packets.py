"""Stand-in for ``scope.server.media_packets``."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch


@dataclass(frozen=True)
class MediaTimestamp:
    pts: int | None = None
    time_base: Fraction | None = None


@dataclass(frozen=True)
class VideoPacket:
    tensor: torch.Tensor
    timestamp: MediaTimestamp = MediaTimestamp()


def ensure_video_packet(item: Any) -> VideoPacket:
    return item if isinstance(item, VideoPacket) else VideoPacket(tensor=item)
