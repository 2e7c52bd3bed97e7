"""Trio helpers shared by the middle layers (no FUSE, no HTTP).

Handlers never block the trio loop: file and database I/O goes through ``in_thread``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from containerfs.errors import ContainerFsError

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run a quick blocking call (SQLite, fsync, a small copy) off the trio loop."""
    return await trio.to_thread.run_sync(fn, *args)


@asynccontextmanager
async def holding(lock: trio.Lock) -> AsyncIterator[None]:
    """``async with lock``, without a schedule point when the lock is free: a FUSE request
    taking a file's lock then does not wait behind the steps of every other ready task (an
    upload's step in the background takes up to a millisecond)."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()
    try:
        yield
    finally:
        lock.release()


class FetchGate:
    """One fetch at a time per key, and a failed fetch's error shared with the callers that
    waited for it: they fail at once instead of each fetching again in turn, so a burst of
    lookups in a stalled container waits for one request, not for one after another. A
    caller that arrives after the failure fetches afresh.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, trio.Lock] = {}
        self._failed: dict[Hashable, tuple[int, ContainerFsError]] = {}
        self._ticks = itertools.count()

    @asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        arrived = next(self._ticks)
        async with self._locks.setdefault(key, trio.Lock()):
            failed = self._failed.get(key)
            if failed is not None and failed[0] > arrived:
                raise copy.copy(failed[1])  # a copy: one exception object per raising task
            try:
                yield
            except ContainerFsError as err:
                self._failed[key] = (next(self._ticks), err)
                raise
