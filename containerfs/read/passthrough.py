"""Reads past the cache: a file the disk cache cannot hold is served from its own stream,
with a bounded window of it in memory, and nothing is kept.

A handle reads past the cache when the file is larger than the cache, or when its download
found the cache disk full even after evicting everything not in use (``CacheFull``). Each
such handle has its own ``Download`` into memory only: the stream runs at most
``max_pending`` bytes ahead of the lowest offset its reader still needs (a read in flight,
or the last one), and what the reader has left behind is dropped. A read before the window
(a seek back) restarts the stream there. Knows nothing about FUSE or HTTP. Layer: read path.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import trio

from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import CacheEntry
from containerfs.read.download import ContentSource, Download, DownloadCounters
from containerfs.read.entries import Entry
from containerfs.read.settings import DownloadSettings

log = logging.getLogger(__name__)


class PassThrough:
    """One open file read past the cache. Implements ``DownloadHost`` for its downloads,
    which have no cache file to delete nor room to make."""

    def __init__(
        self,
        container_id: ContainerId,
        file_id: FileId,
        size: int | None,
        *,
        source: ContentSource,
        nursery: trio.Nursery,
        settings: DownloadSettings,
        counters: DownloadCounters,
        on_size: Callable[[FileId, int], None],
    ) -> None:
        self.file_id = file_id
        self._container_id = container_id
        self._listed = size
        self._source = source
        self._nursery = nursery
        self._settings = settings
        self._counters = counters
        self._on_size = on_size
        self._reading: Counter[int] = Counter()  # offsets of the reads in flight
        self._last = 0  # offset of the last read: a re-read of it is served from memory
        self.restarts = 0
        self._entry = self._start(0)

    @property
    def size(self) -> int | None:
        return self._entry.size

    def _start(self, offset: int) -> Entry:
        """A memory-only entry whose window starts at ``offset``, and its download."""
        # outside the cache index: a stand-in for the cache entry it will never have
        cached = CacheEntry(self.file_id, Path(), Path(), complete=False, size=self._listed)
        entry = Entry(cached, self._container_id, self._listed)
        entry.detached = True
        entry.disk_end = offset  # where the window starts: arrived counts from here
        entry.downloading = True
        download = Download(
            entry,
            source=self._source,
            host=self,
            settings=self._settings,
            counters=self._counters,
            to_disk=False,
        )
        self._nursery.start_soon(download.run)
        return entry

    async def read(self, offset: int, end: int) -> bytes:
        """Bytes [offset, end) of the file (fewer at its end)."""
        self._reading[offset] += 1
        try:
            while True:
                entry = self._entry
                if offset < entry.mem_start:
                    self._restart(offset)
                    continue
                if entry.final_size is not None:
                    end = min(end, entry.final_size)
                    if offset >= end:
                        return b""
                if entry.arrived >= end:
                    return entry.copy_memory(offset, end)
                if entry.error is not None:
                    if entry is not self._entry:
                        continue  # a restart replaced it meanwhile
                    raise entry.error
                # what no read needs any more goes first: the stream may be waiting for room
                entry.forget_before(min(self._reading))
                await entry.wait_for(end)
        finally:
            self._reading[offset] -= 1
            if not self._reading[offset]:
                del self._reading[offset]
            self._last = offset
            self._entry.forget_before(min(self._reading, default=self._last))

    def _restart(self, offset: int) -> None:
        """The reader went back before the window: a new stream from ``offset``."""
        log.debug(
            "%s: read at %d before the window; streaming again from there", self.file_id, offset
        )
        old = self._entry
        old.cancel_scope.cancel()
        old.wake_all()
        self.restarts += 1
        self._entry = self._start(offset)

    def close(self) -> None:
        """The handle is released: stop its stream."""
        self._entry.cancel_scope.cancel()

    # ---- the DownloadHost interface ----

    def deletion_of(self, file_id: FileId) -> trio.Event | None:
        return None

    def detach(self, entry: Entry) -> None:
        return None  # nothing indexed, nothing on disk

    def size_learned(self, file_id: FileId, size: int) -> None:
        self._on_size(file_id, size)

    def cache_completed(self, cached: CacheEntry, size: int) -> None:
        return None  # read past the cache: never written to it

    async def make_room(self, entry: Entry) -> bool:
        return False

    def download_ended(self, entry: Entry) -> None:
        return None
