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
