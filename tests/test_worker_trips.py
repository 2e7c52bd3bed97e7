"""What a small file's save costs in trips to worker threads. Each trip hands the GIL to a
worker and back (about 120 µs of CPU here, and a hundred futex calls), and a `cp -r` of
small files is bound by the daemon's CPU: the blocking steps of one save go together.

Counted at the handlers over the in-process emulator: a new 16 KiB file written and closed
is its spool file made, its content written, fsync'd and queued durably (one trip: the
create makes no file); where the server put it kept with the drop of its queue record; the
spool's descriptors closed with its move into the cache. There were 7 trips. The emulator's
own trips (the app runs some of its work in threads) are not counted."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio
from fs_harness import Fs

SMALL = 16 << 10


def _count_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The callers of every trip to a worker thread made by containerfs, from here on."""
    trips: list[str] = []
    real = trio.to_thread.run_sync

    async def counted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__") == "containerfs.aio":
            caller = caller.f_back or caller  # in_thread: who called it
        module = str(caller.f_globals.get("__name__", ""))
        if module.startswith("containerfs."):
            trips.append(f"{module}.{caller.f_code.co_name}")
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    return trips


async def test_saving_a_small_new_file_costs_three_trips_to_worker_threads(
    fs: Fs, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.write_file(box, "warm-up", b"x")  # the container's listing and aliases loaded
    data = os.urandom(SMALL)
    trips = _count_trips(monkeypatch)
    await fs.write_file(box, "f.bin", data)
    assert len(trips) == 3, trips
    assert (await fs.server_files(c.id))["f.bin"] == data
    assert await fs.read_file(await fs.inode("box", "f.bin")) == data  # from the cache
    assert len(trips) <= 5, trips  # the read: the cache file's open and close, no download
