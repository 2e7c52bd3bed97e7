"""The flusher of a download: moves the entry's in-memory tail into its cache file.

It runs beside the download's stream (``download.py``): creates the cache file once an older
file of the id is deleted, then writes the tail in large ``pwritev`` batches in a worker
thread, through a direct fd (``directio``) where the file system allows, so the stream keeps
flowing while the disk works and thread hops stay rare. Written bytes stay in memory a while
(``recent_bytes``) for readers trailing the stream. A full disk first evicts what is not in
use (the download's host makes room); when nothing more can go it raises ``CacheFull``.
Knows nothing about FUSE or HTTP. Layer: read path.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from containerfs import directio
from containerfs.errors import CacheFull
from containerfs.read.entries import Entry
from containerfs.read.settings import DownloadSettings

log = logging.getLogger(__name__)

# pwritev takes at most IOV_MAX (1024 on Linux) buffers per call.
_MAX_IOV = 512
# A direct write's batch, in bytes (several staging buffers' worth).
_DIRECT_BATCH = 8 << 20
# What a full cache disk answers: evict, then read past the cache.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
T = TypeVar("T")

#: Frees cache space for the rest of an entry: whether anything was freed.
MakeRoom = Callable[[Entry], Awaitable[bool]]


class Flusher:
    """Writes one entry's arrived bytes to its cache file until its stream is done."""

    def __init__(self, entry: Entry, *, settings: DownloadSettings, make_room: MakeRoom) -> None:
        self._entry = entry
        self._settings = settings
        self._make_room = make_room

    async def run(self, *, after: trio.Event | None) -> None:
        """Create the cache file (once ``after``, an older file's deletion, is done), then
        flush until the stream ends. Raises ``CacheFull`` or the ``OSError`` of a write."""
        entry = self._entry
        if after is not None:
            await after.wait()
        entry.fd = await self._on_disk(_create_data_file, entry.cache.data_path)
        entry.fd_ready.set()
        await self._flush_all()

    async def _flush_all(self) -> None:
        """Move the in-memory tail to the cache file in large batches, until the stream ends.

        Writes go through a second, direct fd (``directio``) where the file system allows:
        whole blocks only, so the unaligned rest of a batch stays in memory until more
        arrives, and the last block is written padded, then cut to the content's size."""
        entry = self._entry
        assert entry.fd is not None
        direct = await self._on_disk(directio.open_direct, entry.cache.data_path, os.O_WRONLY)
        try:
            while True:
                if entry.pending_bytes and (
                    entry.pending_bytes >= self._settings.flush_bytes or entry.stream_done
                ):
                    try:
                        await self._flush_batch(entry.fd if direct is None else direct, direct)
                    except OSError as exc:
                        if direct is None or not directio.refused(exc):
                            raise
                        log.info("the cache refuses direct writes (%s): buffered", exc)
                        os.close(direct)
                        direct = None
                elif entry.stream_done:
                    # complete: readers go to the cache file from now on
                    entry.recent.clear()
                    entry.recent_bytes = 0
                    return
                else:
                    entry.flush_wanted = trio.Event()
                    await entry.flush_wanted.wait()
        finally:
            if direct is not None:
                os.close(direct)

    async def _flush_batch(self, fd: int, direct: int | None) -> None:
        """Write the first pending segments (whole blocks of them, on a direct fd)."""
        entry = self._entry
        batch = _first_segments(entry, count=_MAX_IOV if direct is None else None)
        length = sum(len(seg) for seg in batch)
        last = entry.stream_done and length == entry.pending_bytes
        if direct is not None and not last:
            length = directio.align_down(length)
            if not length:  # less than a block, and more to come
                entry.flush_wanted = trio.Event()
                await entry.flush_wanted.wait()
                return
        entry.io += 1
        try:
            if direct is None:
                await self._on_disk(_pwritev_all, fd, batch, entry.disk_end)
            else:
                await self._on_disk(_write_blocks, fd, batch, length, entry.disk_end, last)
        finally:
            entry.io -= 1
        entry.move_to_recent(length)
        # disk_end and pending move together, with no checkpoint in between, so arrived
        # (their sum) never goes backwards for a reader
        entry.disk_end += length
        entry.pending_bytes -= length
        entry.recent_bytes += length
        while (
            entry.recent
            and entry.recent_bytes - len(entry.recent[0]) >= self._settings.recent_bytes
        ):
            entry.recent_bytes -= len(entry.recent.popleft())
        entry.cache.stored = entry.disk_end
        entry.drained.set()

    async def _on_disk(self, write: Callable[..., T], *args: Any) -> T:
        """Run a cache-file write in a thread; a full disk first evicts what is not in use
        (``make_room``), and when nothing more can go, raises ``CacheFull``."""
        while True:
            try:
                return await trio.to_thread.run_sync(write, *args)
            except OSError as exc:
                if exc.errno not in _DISK_FULL:
                    raise
                if not await self._make_room(self._entry):
                    raise CacheFull(f"the cache disk is full ({exc.strerror})") from exc


def _first_segments(entry: Entry, *, count: int | None) -> list[bytes]:
    """The pending segments a batch writes: at most ``count`` of them for ``pwritev``; for a
    direct write (copied through a staging buffer, no limit on segments) as many as make
    ``_DIRECT_BATCH`` bytes, so that many tiny segments still add up to a whole block."""
    if count is not None:
        return list(itertools.islice(entry.pending, count))
    batch: list[bytes] = []
    total = 0
    for seg in entry.pending:
        if total >= _DIRECT_BATCH:
            break
        batch.append(seg)
        total += len(seg)
    return batch


# ---- blocking helpers, run in worker threads ----


def _create_data_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


def _write_blocks(fd: int, batch: list[bytes], length: int, offset: int, last: bool) -> None:
    """Whole blocks to a direct fd; the last batch padded, then the file cut to its size."""
    directio.write_blocks(fd, batch, length, offset, pad=last)
    if last and length % directio.ALIGN:
        os.ftruncate(fd, offset + length)


def _pwritev_all(fd: int, buffers: list[bytes], offset: int) -> None:
    written = os.pwritev(fd, buffers, offset)
    total = sum(len(b) for b in buffers)
    if written < total:
        directio.pwrite_all(fd, memoryview(b"".join(buffers))[written:], offset + written)
