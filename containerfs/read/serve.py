"""Reads of a live entry: an open file's ``ReadHandle``, and ``CachedReads``, which waits until
a read's range has arrived and serves it from memory (the download's tail) or the cache file.

The part of a range already on disk is read with ``os.pread`` in a worker thread, a whole
read-ahead block at a time for a sequential reader (kept on its handle); the part still in
memory is copied from the entry. A read far beyond the download's frontier takes its own
ranged GET (``RangeReads``) instead of waiting. Knows nothing about FUSE or HTTP.
Layer: read path.
"""

from __future__ import annotations

import errno
import os

import trio

from containerfs.errors import CacheError
from containerfs.read.entries import Entry, LiveEntries
from containerfs.read.passthrough import PassThrough
from containerfs.read.ranges import RangeReads

# Sequential reads from the cache file fetch this much per thread hop (the kernel asks for
# 128 KiB at a time; one pread per request would make the thread hop the bottleneck).
READAHEAD_BYTES = 1 << 20


class ReadHandle:
    """An open file of the read path; ``size`` is updated when the download finishes.

    It reads its live entry (the cache), or, once it reads past the cache, its own stream
    (``past``); a handle opened past the cache has no entry at all.
    """

    __slots__ = ("_ahead", "_ahead_at", "_entry", "_next", "_past", "_released", "file_id")

    def __init__(self, entry: Entry | None, *, past: PassThrough | None = None) -> None:
        self._entry = entry
        self._past = past
        self._released = False
        source = past if past is not None else entry
        assert source is not None, "a handle reads an entry or its own stream"
        self.file_id = source.file_id
        # read-ahead block from the cache file: bytes on disk never change for a file id
        self._ahead = b""
        self._ahead_at = 0
        self._next = 0  # where a sequential reader reads next

    @property
    def size(self) -> int | None:
        if self._past is not None:
            return self._past.size
        return self._entry.size if self._entry is not None else None

    def __repr__(self) -> str:
        return f"ReadHandle({self.file_id!r}, size={self.size})"

    def entry(self) -> Entry | None:
        """The live entry this handle reads, None past the cache (EBADF once released)."""
        if self._released:
            raise CacheError("read on a released handle", errno_=errno.EBADF)
        return self._entry if self._past is None else None

    @property
    def past(self) -> PassThrough | None:
        """The handle's own stream, once it reads past the cache."""
        return self._past

    def go_past(self, past: PassThrough) -> PassThrough:
        """Read past the cache from now on (the cache disk could not hold the file)."""
        self._past = past
        return past

    def close(self) -> tuple[Entry | None, PassThrough | None] | None:
        """Mark the handle released: its entry and stream, or None if it already was."""
        if self._released:
            return None
        self._released = True
        return self._entry, self._past

    def from_ahead(self, offset: int, end: int) -> bytes | None:
        """Bytes [offset, end) from the last read-ahead block, if it holds them all."""
        at = self._ahead_at
        if at <= offset and end <= at + len(self._ahead):
            return self._ahead[offset - at : end - at]
        return None

    def keep_ahead(self, block: bytes, at: int) -> None:
        self._ahead, self._ahead_at = block, at

    def is_sequential(self, offset: int) -> bool:
        """Whether a read at ``offset`` continues where the previous one ended."""
        return offset == self._next

    def advance(self, end: int) -> None:
        self._next = end


class CachedReads:
    """Serves reads of live entries, each once its range has arrived."""

    def __init__(self, live: LiveEntries, ranges: RangeReads) -> None:
        self._live = live
        self._ranges = ranges

    async def read(self, handle: ReadHandle, entry: Entry, offset: int, end: int) -> bytes:
        """Bytes [offset, end) of ``entry`` (fewer at its end); raises the download's error
        when it failed before the range arrived."""
        if self._ranges.far_ahead(entry, offset):
            data = await self._ranges.read(entry, offset, end)
            if data is not None:
                return data
        while True:
            if entry.final_size is not None:
                end = min(end, entry.final_size)
                if offset >= end:
                    return b""
            if entry.arrived >= end:
                break
            if entry.error is not None:
                raise entry.error
            await entry.wait_for(end)
        data = handle.from_ahead(offset, end)
        if data is None:
            data = await self._serve(entry, offset, end, handle)
        handle.advance(end)
        return data

    async def _serve(self, entry: Entry, offset: int, end: int, handle: ReadHandle) -> bytes:
        disk_end = entry.disk_end
        mem_start = entry.mem_start
        # take the in-memory part first: the flusher may drop it from memory while we pread
        tail = entry.copy_memory(max(offset, mem_start), end) if end > mem_start else b""
        if offset >= mem_start:
            return tail
        head_end = min(end, mem_start)
        # a sequential reader gets a whole read-ahead block per thread hop
        sequential = handle.is_sequential(offset) and head_end - offset < READAHEAD_BYTES
        fetch_end = min(offset + READAHEAD_BYTES, disk_end) if sequential else head_end
        await entry.fd_ready.wait()
        if entry.fd is None:
            raise entry.error or CacheError("cache file closed")
        entry.io += 1
        try:
            block = await trio.to_thread.run_sync(_pread_all, entry.fd, fetch_end - offset, offset)
        finally:
            entry.io -= 1
            self._live.maybe_drop(entry)
        if fetch_end > head_end:
            handle.keep_ahead(block, offset)
            head = block[: head_end - offset]
        else:
            head = block
        return head + tail if tail else head


# ---- blocking helper, run in worker threads ----


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    # the mounted file's pages now hold these bytes: drop the cache file's copy, whose pages
    # the next reads then reuse (``directio`` says why a second copy is dear)
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise CacheError("cache file shorter than expected")
        parts.append(more)
        got += len(more)
    return b"".join(parts)
