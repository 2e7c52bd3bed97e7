"""Read path: one streaming download per file version into the disk cache, reads served as
bytes arrive. Knows nothing about FUSE (``operations`` adapts it) nor HTTP (``client`` does).

How a file's bytes flow:

- ``open`` finds the file id in the cache (complete: a hit, no request) or starts (or joins)
  its one background download, in the nursery given to ``create``. It never waits for content.
- The download task appends chunks to an in-memory tail; a flusher task writes the tail to
  the cache file in ~1 MiB ``pwritev`` batches in a worker thread, so the stream keeps
  flowing while the disk write happens and thread hops stay rare.
- ``read`` waits (per-entry waiters keyed on the end offset they need) only until its range
  has arrived, then serves the part already on disk with ``os.pread`` in a thread and the
  part still in the tail from memory. ``head -c 100`` of a cold file returns after the
  first chunk.
- A broken stream is resumed from the frontier (``download(offset=...)``; if the server
  ignores ``Range`` the already-present bytes are skipped); after the last retry the error
  wakes every waiter and the entry is dropped, so the next ``open`` starts afresh.

The ``Reader`` is the facade the FUSE adapter and the writer use; it composes the parts:
``lifecycle.py`` (acquiring, starting and dropping live entries; the downloads' host),
``download.py`` and ``flusher.py`` (one file's stream and its cache-file writes),
``serve.py`` (handles and reads of live entries), ``sizes.py`` (sizes known or probed),
``passthrough.py`` (reads past the cache), ``prefetch.py``, ``ranges.py``, ``pieces.py``,
and ``settings.py`` (every option and its default). Layer: read path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import trio
from cachetools import LRUCache

from containerfs.errors import CacheFull
from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import DiskCache
from containerfs.read.download import ContentSource as ContentSource
from containerfs.read.download import DownloadCounters
from containerfs.read.download import DownloadStream as DownloadStream
from containerfs.read.entries import Deletions, Entry, LiveEntries
from containerfs.read.lifecycle import EntryLifecycle
from containerfs.read.passthrough import PassThrough
from containerfs.read.pieces import RangeSupport
from containerfs.read.prefetch import Prefetcher
from containerfs.read.ranges import RangeReads
from containerfs.read.serve import CachedReads
from containerfs.read.serve import ReadHandle as ReadHandle
from containerfs.read.settings import ReaderSettings as ReaderSettings
from containerfs.read.sizes import KnownSizes, SizeProbes
from containerfs.snapshots import ReaderStats

log = logging.getLogger(__name__)


class Reader:
    """Streaming downloads into the bounded, persistent disk cache; reads wait for their range."""

    def __init__(
        self,
        client: ContentSource,
        cache: DiskCache,
        *,
        nursery: trio.Nursery,
        settings: ReaderSettings | None = None,
        spare_requests: Callable[[], bool] = lambda: True,
    ) -> None:
        settings = settings if settings is not None else ReaderSettings()
        self._client = client
        self._cache = cache
        self._nursery = nursery
        self._download_settings = settings.download
        self._downloads = DownloadCounters()
        deletions = Deletions(nursery)
        self._live = LiveEntries(cache, deletions)
        self._sizes = KnownSizes(self._live, cache)
        # whether large files download as parallel ranged GETs (learnt from the server)
        self._pieces = RangeSupport(enabled=settings.parallel)
        self._lifecycle = EntryLifecycle(
            client,
            cache,
            self._live,
            deletions,
            self._sizes,
            nursery=nursery,
            settings=settings.download,
            counters=self._downloads,
            pieces=self._pieces,
        )
        self._ranges = RangeReads(client, ahead=settings.range_ahead, counters=self._downloads)
        self._cached = CachedReads(self._live, self._ranges)
        self._probes = SizeProbes(
            self._sizes,
            self._live,
            cache,
            start=self._lifecycle.start,
            detach=self._lifecycle.detach,
            keep_bytes=settings.probe_keep_bytes,
            keep_downloads=settings.probe_keep_downloads,
        )
        self._prefetcher = Prefetcher(
            self._prefetch_start, nursery=nursery, settings=settings.prefetch, spare=spare_requests
        )
        # files whose download found the cache disk full: read past the cache from then on
        self._too_big: LRUCache[FileId, bool] = LRUCache(maxsize=1 << 12)
        self._past_count = 0
        self._bytes_served = 0

    @classmethod
    async def create(
        cls,
        client: ContentSource,
        *,
        cache_dir: Path,
        max_size: int,
        nursery: trio.Nursery,
        settings: ReaderSettings | None = None,
        spare_requests: Callable[[], bool] = lambda: True,
    ) -> Reader:
        cache = await trio.to_thread.run_sync(partial(DiskCache.load, cache_dir, max_size=max_size))
        reader = cls(
            client, cache, nursery=nursery, settings=settings, spare_requests=spare_requests
        )
        reader._live.evict()  # the limit may be lower than in the last run
        return reader

    # ---- public API ----

    async def open(
        self, container_id: ContainerId, file_id: FileId, size: int | None
    ) -> ReadHandle:
        too_big = size is not None and size > self._cache.max_size
        if (too_big or file_id in self._too_big) and not self.is_cached(file_id, size):
            # it could not stay in the cache: don't push everything else out for it
            return ReadHandle(None, past=self._pass_through(container_id, file_id, size))
        entry = await self._lifecycle.acquire(container_id, file_id, size, pin=False)
        self._prefetcher.opened(file_id)
        return ReadHandle(entry)

    def prefetch(self, files: Iterable[tuple[ContainerId, FileId, int | None]]) -> None:
        """Download ``files`` ahead of their opens (the next files of a directory walk), as
        the prefetch bounds allow; nothing when prefetch is off. Never waits."""
        self._prefetcher.want(files)

    def _prefetch_start(
        self, container_id: ContainerId, file_id: FileId, size: int
    ) -> Entry | None:
        if self._lifecycle.has(file_id) or file_id in self._too_big:
            return None
        return self._lifecycle.start(container_id, file_id, size)

    def _pass_through(
        self, container_id: ContainerId, file_id: FileId, size: int | None
    ) -> PassThrough:
        self._past_count += 1
        return PassThrough(
            container_id,
            file_id,
            size,
            source=self._client,
            nursery=self._nursery,
            settings=self._download_settings,
            counters=self._downloads,
            on_size=self._sizes.proven,
        )

    async def read(self, handle: ReadHandle, offset: int, length: int) -> bytes:
        entry = handle.entry()
        if offset < 0 or length <= 0:
            return b""
        end = offset + length
        past = handle.past
        if entry is not None:
            try:
                data = await self._cached.read(handle, entry, offset, end)
            except CacheFull:
                # the cache disk is full even after evicting: this file is read past it
                self._too_big[entry.file_id] = True
                past = handle.past  # a concurrent read of the handle may have switched it
                if past is None:
                    log.info("cache disk full: reading %s past the cache", entry.file_id)
                    past = handle.go_past(
                        self._pass_through(entry.container_id, entry.file_id, entry.size)
                    )
            else:
                self._bytes_served += len(data)
                return data
        assert past is not None
        data = await past.read(offset, end)
        self._bytes_served += len(data)
        return data

    async def release(self, handle: ReadHandle) -> None:
        closed = handle.close()
        if closed is None:
            return
        entry, past = closed
        if past is not None:
            past.close()
        if entry is not None:
            self._lifecycle.release(entry)

    async def fetch(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Path:
        """The complete cache file of a file version, pinned until ``unpin``."""
        return await self._lifecycle.fetch(container_id, file_id, size)

    def unpin(self, file_id: FileId) -> None:
        self._lifecycle.unpin(file_id)

    async def adopt(
        self, file_id: FileId, source: Path, *, first: Callable[[], None] | None = None
    ) -> bool:
        """Take ``source`` (a file the caller gives up) as the complete content of ``file_id``.

        The writer hands over a spool once its upload is confirmed, so reading back what was
        just written costs no download. Returns False (and leaves ``source`` alone) when the
        id is already known here or the file could not fit in the cache. ``first``, a
        blocking call (the close of the spool's descriptors), runs before the move in the
        same trip to a worker thread, if the move is tried.
        """
        return await self._lifecycle.adopt(file_id, source, first)

    def known_size(self, file_id: FileId) -> int | None:
        """The size of a file version, if known without a request: from its download (ended,
        or announced by the response), a complete cache entry, or an earlier announcement."""
        return self._sizes.known(file_id)

    def content_size(self, file_id: FileId) -> int | None:
        """The size the content itself proved: a download that ended whole by its own
        framing, a complete cache entry, or our own upload; never a size only announced."""
        return self._sizes.content(file_id)

    async def learn_size(self, container_id: ContainerId, file_id: FileId) -> int:
        """The exact size of a file version the listing gave none for: known already, or
        from the response headers of its download (``SizeProbes.learn``)."""
        return await self._probes.learn(container_id, file_id)

    def is_cached(self, file_id: FileId, size: int | None) -> bool:
        return self._lifecycle.is_cached(file_id, size)

    def deleting(self) -> bool:
        """Whether cache files are still being deleted in the background."""
        return self._lifecycle.deleting()

    def invalidate(self, file_id: FileId) -> None:
        """Forget a file version (deleted or replaced). Open handles keep what they have."""
        self._lifecycle.invalidate(file_id)
        self._too_big.pop(file_id, None)

    def statistics(self) -> ReaderStats:
        prefetched = self._prefetcher.statistics()
        lifecycle = self._lifecycle.statistics()
        return ReaderStats(
            hits=lifecycle.hits,
            misses=lifecycle.misses,
            joins=lifecycle.joins,
            downloads_started=lifecycle.started,
            downloads_completed=self._downloads.completed,
            downloads_failed=self._downloads.failed,
            retries=self._downloads.retries,
            range_reads=self._ranges.count,
            pieces=self._pieces.pieces,
            past_cache=self._past_count,
            size_probes=self._probes.started,
            size_probes_dropped=self._probes.dropped,
            prefetches=prefetched.started,
            prefetches_used=prefetched.used,
            prefetches_failed=prefetched.failed,
            prefetches_deferred=prefetched.deferred,
            active_downloads=sum(1 for e in self._live if e.downloading),
            open_handles=sum(e.opens for e in self._live),
            bytes_fetched=self._downloads.bytes_fetched,
            bytes_served=self._bytes_served,
            evictions=self._cache.evictions,
            cache_bytes_used=self._cache.used,
            cache_max_size=self._cache.max_size,
            entries=len(self._cache),
        )
