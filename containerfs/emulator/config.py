"""Emulator settings and its clock. Plain data: no I/O, no HTTP."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

UploadPaths = Literal["prefix", "keep"]
UPLOAD_PATH_POLICIES: tuple[UploadPaths, ...] = ("prefix", "keep")


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulator's answers; the run-time part is mutable.

    ``latency_ms``, ``fail_rate``, ``throttle_rate``, ``upload_paths`` and ``range_requests``
    may be changed while serving (``POST /_emulator/config``).
    """

    data_dir: Path
    api_key: str | None = None
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    throttle_rate: float = 0.0
    # Seconds sent in ``retry-after`` for random throttling (``throttle_rate``).
    throttle_retry_after: float = 1.0
    upload_paths: UploadPaths = "prefix"
    range_requests: bool = False
    # Upload bodies larger than this are refused with 413.
    max_upload_bytes: int = 1 << 40
    clock: Clock = field(default_factory=lambda: Clock())


class Clock:
    """Wall clock plus an offset that tests can advance (``POST /_emulator/clock``)."""

    def __init__(self, *, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
