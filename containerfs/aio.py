"""Trio helpers shared by the middle layers (no FUSE, no HTTP).

Handlers never block the trio loop: file and database I/O goes through ``in_thread``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run a quick blocking call (SQLite, fsync, a small copy) off the trio loop."""
    return await trio.to_thread.run_sync(fn, *args)
