"""Where a mount keeps its files (pid, log, status, control socket): light enough for the
command line to load without the daemon's layers. Layer: daemon.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def run_dir(state_dir: Path, mountpoint: Path) -> Path:
    """Where a mount keeps its pid, log and status: one directory per mountpoint."""
    real = os.path.realpath(mountpoint)
    slug = hashlib.sha256(real.encode()).hexdigest()[:16]
    return state_dir / "mounts" / slug


def _default_dir(env: str, fallback: str) -> Path:
    base = os.environ.get(env) or os.path.join(os.path.expanduser("~"), fallback)
    return Path(base) / "containerfs"


def default_state_dir() -> Path:
    return _default_dir("XDG_STATE_HOME", ".local/state")


def default_cache_dir() -> Path:
    return _default_dir("XDG_CACHE_HOME", ".cache")
