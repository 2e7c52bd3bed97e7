"""Prefetch across files: the next small files of a directory walk, downloaded before they
are opened.

The FUSE adapter notices a program opening a directory's files in listing order (``cp -r``,
``grep -r``, ``tar``, ``rsync``) and names the files that come next; the ``Prefetcher``
starts their downloads into the cache, so that a walk over many small files costs about
files / concurrency round trips instead of one per file. It is bounded in files and bytes
in flight, takes only the rate-limit allowance nobody is using, skips files already here and
files too large to be worth it, and its downloads are ordinary ones: an open of a file being
prefetched joins its download, and a prefetch that failed leaves nothing behind (the entry is
dropped, so the real open starts its own download). Layer: read path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio
from cachetools import LRUCache

from containerfs.models import ContainerId, FileId
from containerfs.read.entries import Entry

log = logging.getLogger(__name__)

#: Prefetch downloads in flight at most: the round trips a walk of small files overlaps.
PREFETCH_FILES = 8
#: ... and their sizes summed at most, so a walk cannot flood the cache or the link.
PREFETCH_BYTES = 16 << 20
#: Files larger than this are left to their own (streamed, read-ahead) open.
PREFETCH_MAX_FILE = 2 << 20


@dataclass(frozen=True)
class PrefetchSettings:
    files: int = PREFETCH_FILES
    bytes: int = PREFETCH_BYTES
    max_file: int = PREFETCH_MAX_FILE


@dataclass(frozen=True)
class PrefetchStats:
    started: int  # downloads started ahead of an open
    used: int  # ... whose file was then opened
    failed: int  # ... that failed (the real open, if any, downloads again)
    deferred: int  # files not prefetched because the rate limit had no allowance to spare


#: Starts the download of a file nobody opened yet: its live entry, or None when the file is
#: already here (cached, downloading or open).
StartDownload = Callable[[ContainerId, FileId, int], "Entry | None"]


class Prefetcher:
    """Downloads started ahead of the opens of a directory walk, within bounds."""

    def __init__(
        self,
        start: StartDownload,
        *,
        nursery: trio.Nursery,
        settings: PrefetchSettings | None,
        spare: Callable[[], bool] = lambda: True,
    ) -> None:
        self._start = start
        self._nursery = nursery
        self._settings = settings  # None: prefetch is off
        self._spare = spare
        self._flight: dict[FileId, int] = {}  # prefetch downloads running, with their sizes
        self._flight_bytes = 0
        # prefetched files not yet opened (bounded: most walks open every one)
        self._unopened: LRUCache[FileId, None] = LRUCache(maxsize=4096)
        self._started = self._used = self._failed = self._deferred = 0

    @property
    def enabled(self) -> bool:
        return self._settings is not None

    def want(self, files: Iterable[tuple[ContainerId, FileId, int | None]]) -> None:
        """Start downloads of ``files`` (in the order a walk will open them), as bounds allow."""
        settings = self._settings
        if settings is None:
            return
        for container_id, file_id, size in files:
            if file_id in self._flight or size is None or size > settings.max_file:
                # an unknown size is learned by its own request when the file is reached
                continue
            if len(self._flight) >= settings.files or self._flight_bytes + size > settings.bytes:
                return
            if not self._spare():
                self._deferred += 1
                return
            entry = self._start(container_id, file_id, size)
            if entry is None:
                continue
            self._started += 1
            self._flight[file_id] = size
            self._flight_bytes += size
            self._unopened[file_id] = None
            self._nursery.start_soon(self._watch, entry)

    def opened(self, file_id: FileId) -> None:
        """A real open of ``file_id``: counts a prefetch that served it."""
        if file_id in self._unopened:
            del self._unopened[file_id]
            self._used += 1

    async def _watch(self, entry: Entry) -> None:
        try:
            await entry.settled.wait()
        finally:
            if entry.error is not None:
                self._failed += 1
                log.info("prefetch of %s failed: %s", entry.file_id, entry.error)
            self._flight_bytes -= self._flight.pop(entry.file_id, 0)

    def statistics(self) -> PrefetchStats:
        return PrefetchStats(self._started, self._used, self._failed, self._deferred)
