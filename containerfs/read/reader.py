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

The ``Download`` task is in ``download.py``, the live ``Entry`` it fills in ``entries.py``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
from cachetools import LRUCache

from containerfs.api.retrying import Backoff, ProgressPolicy
from containerfs.config import DEFAULT_PROGRESS, DOWNLOAD_BACKOFF, DOWNLOAD_RETRIES
from containerfs.errors import CacheError, CacheFull
from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import CacheEntry, DiskCache
from containerfs.read.download import ContentSource as ContentSource
from containerfs.read.download import Download, DownloadCounters, DownloadSettings
from containerfs.read.download import DownloadStream as DownloadStream
from containerfs.read.entries import Deletions, Entry, LiveEntries
from containerfs.read.passthrough import PassThrough
from containerfs.read.pieces import RangeSupport
from containerfs.read.prefetch import Prefetcher, PrefetchSettings
from containerfs.read.ranges import RangeReads

log = logging.getLogger(__name__)

# Batch size of cache-file writes: large enough that the thread hop per write is noise.
FLUSH_BYTES = 1 << 20
# Backpressure: the stream pauses when this much content waits for the disk.
MAX_PENDING = 8 << 20
# Sequential reads from the cache file fetch this much per thread hop (the kernel asks for
# 128 KiB at a time; one pread per request would make the thread hop the bottleneck).
READAHEAD_BYTES = 1 << 20
# A read this far beyond the download frontier tries its own ranged GET instead of waiting.
RANGE_AHEAD_BYTES = 8 << 20
# Content already written stays in memory this long behind the disk frontier, so that readers
# trailing the stream a little are served without a thread hop and a copy back from disk.
RECENT_BYTES = 4 << 20
# A download started only to learn a file's size (``learn_size``) keeps streaming into the
# cache, so that the read which usually follows costs no second GET: always when less than
# PROBE_TAIL_BYTES remain (finishing costs about nothing), else while the file is at most
# PROBE_KEEP_BYTES and fewer than PROBE_KEEP_DOWNLOADS such long downloads run with nobody
# reading them. Otherwise it is dropped once the headers gave the size: `ls -l` of many large
# outputs must not download them all, nor hold every connection of the pool.
PROBE_TAIL_BYTES = 1 << 20
PROBE_KEEP_BYTES = 64 << 20
PROBE_KEEP_DOWNLOADS = 16


@dataclass(frozen=True)
class ReaderStats:
    hits: int  # opens served from a complete cache entry
    misses: int  # opens that started a download
    joins: int  # opens that joined a live entry (download in progress or already open)
    downloads_started: int
    downloads_completed: int
    downloads_failed: int
    retries: int  # resumed or restarted streams after a failure
    range_reads: int  # extra ranged GETs for reads far beyond the frontier
    pieces: int  # ranged GETs of large files downloaded in parallel pieces
    past_cache: int  # opens read past the cache (too large for it, or its disk full)
    size_probes: int  # downloads started to learn the size of a file listed without one
    size_probes_dropped: int  # ... and stopped once the headers gave the size
    prefetches: int  # downloads started ahead of a directory walk's opens
    prefetches_used: int  # ... whose file was then opened
    prefetches_failed: int
    prefetches_deferred: int  # files not prefetched: the rate limit had nothing to spare
    active_downloads: int
    open_handles: int
    bytes_fetched: int  # received from the API (including bytes skipped after a restart)
    bytes_served: int  # returned by read()
    evictions: int
    cache_bytes_used: int
    cache_max_size: int
    entries: int


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


class Reader:
    """Streaming downloads into the bounded, persistent disk cache; reads wait for their range."""

    def __init__(
        self,
        client: ContentSource,
        cache: DiskCache,
        *,
        nursery: trio.Nursery,
        retry: Backoff = DOWNLOAD_BACKOFF,
        retries: int = DOWNLOAD_RETRIES,
        progress: ProgressPolicy = DEFAULT_PROGRESS,
        flush_bytes: int = FLUSH_BYTES,
        max_pending: int = MAX_PENDING,
        range_ahead: int | None = RANGE_AHEAD_BYTES,
        recent_bytes: int = RECENT_BYTES,
        probe_keep_bytes: int = PROBE_KEEP_BYTES,
        probe_keep_downloads: int = PROBE_KEEP_DOWNLOADS,
        prefetch: PrefetchSettings | None = None,
        spare_requests: Callable[[], bool] = lambda: True,
        parallel: bool = True,
    ) -> None:
        self._client = client
        self._probe_keep_bytes = probe_keep_bytes
        self._probe_keep_downloads = probe_keep_downloads
        self._download_settings = DownloadSettings(
            backoff=retry,
            retries=retries,
            progress=progress,
            flush_bytes=flush_bytes,
            max_pending=max(max_pending, flush_bytes),
            recent_bytes=recent_bytes,
        )
        self._downloads = DownloadCounters()
        self._ranges = RangeReads(client, ahead=range_ahead, counters=self._downloads)
        # whether large files download as parallel ranged GETs (learnt from the server)
        self._pieces = RangeSupport(enabled=parallel)
        self._cache = cache
        self._nursery = nursery
        self._pins: dict[FileId, list[Entry]] = {}
        self._deletions = Deletions(nursery)
        self._entries = LiveEntries(cache, self._deletions)
        self._known_sizes: dict[FileId, int] = {
            e.file_id: e.size for e in cache if e.complete and e.size is not None
        }
        # sizes announced by a response whose download did not complete here (dropped probes)
        self._announced: LRUCache[FileId, int] = LRUCache(maxsize=1 << 16)
        self._hits = self._misses = self._joins = 0
        self._started = 0
        self._bytes_served = 0
        self._probes = self._probes_dropped = 0
        self._prefetcher = Prefetcher(
            self._prefetch_start, nursery=nursery, settings=prefetch, spare=spare_requests
        )
        # files whose download found the cache disk full: read past the cache from then on
        self._too_big: LRUCache[FileId, bool] = LRUCache(maxsize=1 << 12)
        self._past_count = 0

    @classmethod
    async def create(
        cls,
        client: ContentSource,
        *,
        cache_dir: Path,
        max_size: int,
        nursery: trio.Nursery,
        retry: Backoff = DOWNLOAD_BACKOFF,
        retries: int = DOWNLOAD_RETRIES,
        progress: ProgressPolicy = DEFAULT_PROGRESS,
        flush_bytes: int = FLUSH_BYTES,
        max_pending: int = MAX_PENDING,
        range_ahead: int | None = RANGE_AHEAD_BYTES,
        recent_bytes: int = RECENT_BYTES,
        probe_keep_bytes: int = PROBE_KEEP_BYTES,
        probe_keep_downloads: int = PROBE_KEEP_DOWNLOADS,
        prefetch: PrefetchSettings | None = None,
        spare_requests: Callable[[], bool] = lambda: True,
        parallel: bool = True,
    ) -> Reader:
        cache = await trio.to_thread.run_sync(partial(DiskCache.load, cache_dir, max_size=max_size))
        reader = cls(
            client,
            cache,
            nursery=nursery,
            retry=retry,
            retries=retries,
            progress=progress,
            flush_bytes=flush_bytes,
            max_pending=max_pending,
            range_ahead=range_ahead,
            recent_bytes=recent_bytes,
            probe_keep_bytes=probe_keep_bytes,
            probe_keep_downloads=probe_keep_downloads,
            prefetch=prefetch,
            spare_requests=spare_requests,
            parallel=parallel,
        )
        reader._entries.evict()  # the limit may be lower than in the last run
        return reader

    # ---- public API ----

    async def open(
        self, container_id: ContainerId, file_id: FileId, size: int | None
    ) -> ReadHandle:
        too_big = size is not None and size > self._cache.max_size
        if (too_big or file_id in self._too_big) and not self.is_cached(file_id, size):
            # it could not stay in the cache: don't push everything else out for it
            return ReadHandle(None, past=self._pass_through(container_id, file_id, size))
        entry = await self._acquire(container_id, file_id, size, pin=False)
        self._prefetcher.opened(file_id)
        return ReadHandle(entry)

    def prefetch(self, files: Iterable[tuple[ContainerId, FileId, int | None]]) -> None:
        """Download ``files`` ahead of their opens (the next files of a directory walk), as
        the prefetch bounds allow; nothing when prefetch is off. Never waits."""
        self._prefetcher.want(files)

    def _prefetch_start(
        self, container_id: ContainerId, file_id: FileId, size: int
    ) -> Entry | None:
        if self._has(file_id) or file_id in self._too_big:
            return None
        return self._start(container_id, file_id, size)

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
            on_size=self.size_learned,
        )

    async def read(self, handle: ReadHandle, offset: int, length: int) -> bytes:
        entry = handle.entry()
        if offset < 0 or length <= 0:
            return b""
        end = offset + length
        past = handle.past
        if entry is not None:
            try:
                return await self._read_cached(handle, entry, offset, end)
            except CacheFull:
                # the cache disk is full even after evicting: this file is read past it
                self._too_big[entry.file_id] = True
                past = handle.past  # a concurrent read of the handle may have switched it
                if past is None:
                    log.info("cache disk full: reading %s past the cache", entry.file_id)
                    past = handle.go_past(
                        self._pass_through(entry.container_id, entry.file_id, entry.size)
                    )
        assert past is not None
        data = await past.read(offset, end)
        self._bytes_served += len(data)
        return data

    async def _read_cached(self, handle: ReadHandle, entry: Entry, offset: int, end: int) -> bytes:
        if self._ranges.far_ahead(entry, offset):
            data = await self._ranges.read(entry, offset, end)
            if data is not None:
                self._bytes_served += len(data)
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
        self._bytes_served += len(data)
        return data

    async def release(self, handle: ReadHandle) -> None:
        closed = handle.close()
        if closed is None:
            return
        entry, past = closed
        if past is not None:
            past.close()
        if entry is None:
            return
        entry.opens -= 1
        self._cache.touch(entry.cache)
        expected = entry.size
        if (
            entry.downloading
            and entry.opens == 0
            and entry.pins == 0
            and expected is not None
            and expected > self._cache.max_size
        ):
            # nobody reads it and it could not stay in the cache anyway
            log.debug("abandoning download of %s (%d bytes > cache size)", entry.file_id, expected)
            entry.cancel_scope.cancel()
        self._entries.maybe_drop(entry)
        self._entries.evict()

    async def fetch(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Path:
        entry = await self._acquire(container_id, file_id, size, pin=True)
        try:
            await entry.settled.wait()
            if entry.error is not None:
                raise entry.error
        except BaseException:
            entry.pins -= 1
            self._entries.maybe_drop(entry)
            raise
        self._pins.setdefault(file_id, []).append(entry)
        return entry.cache.data_path

    def unpin(self, file_id: FileId) -> None:
        pinned = self._pins.get(file_id)
        if not pinned:
            log.warning("unpin of %s, which is not pinned", file_id)
            return
        entry = pinned.pop()
        if not pinned:
            del self._pins[file_id]
        entry.pins -= 1
        self._cache.touch(entry.cache)
        self._entries.maybe_drop(entry)
        self._entries.evict()

    async def adopt(self, file_id: FileId, source: Path) -> bool:
        """Take ``source`` (a file the caller gives up) as the complete content of ``file_id``.

        The writer hands over a spool once its upload is confirmed, so reading back what was
        just written costs no download. Returns False (and leaves ``source`` alone) when the
        id is already known here or the file could not fit in the cache.
        """
        if self._has(file_id):
            return False
        data_path, meta_path = self._cache.paths_for(file_id)
        entry = CacheEntry(file_id, data_path, meta_path, complete=True, size=None)

        def move_in() -> int | None:
            size = os.stat(source).st_size
            if size > self._cache.max_size:
                return None
            try:
                os.rename(source, data_path)
            except OSError:  # another file system: copy, then give the spool up
                shutil.copyfile(source, data_path)
                os.unlink(source)
            entry.size = size
            DiskCache.write_sidecar(entry, None)
            return size

        size = await trio.to_thread.run_sync(move_in)
        if (
            size is None
            or self._entries.get(file_id) is not None
            or self._cache.get(file_id) is not None
        ):
            return size is not None
        self._cache.add_complete(file_id, size)
        self._known_sizes[file_id] = size
        self._entries.evict()
        return True

    def known_size(self, file_id: FileId) -> int | None:
        """The size of a file version, if known without a request: from its download (ended,
        or announced by the response), a complete cache entry, or an earlier announcement."""
        entry = self._entries.get(file_id)
        if entry is not None:
            if entry.final_size is not None:
                return entry.final_size
            if entry.stream_size is not None:
                return entry.stream_size
        known = self._known_sizes.get(file_id)
        return known if known is not None else self._announced.get(file_id)

    def content_size(self, file_id: FileId) -> int | None:
        """The size the content itself proved: a download that ended whole by its own
        framing, a complete cache entry, or our own upload; never a size only announced."""
        entry = self._entries.get(file_id)
        if entry is not None and entry.final_size is not None:
            return entry.final_size
        return self._known_sizes.get(file_id)

    async def learn_size(self, container_id: ContainerId, file_id: FileId) -> int:
        """The exact size of a file version the listing gave none for.

        Known already (``known_size``): no request. Otherwise the content download is started
        (or joined) and this waits only for its response headers: ``Content-Length`` or
        ``Content-Range`` gives the size, and the stream goes on into the cache for the read
        that usually follows (see ``PROBE_KEEP_BYTES``). Only a response that announces no
        size is waited for to its end. Raises the download's error when it fails first.
        """
        known = self.known_size(file_id)
        if known is not None:
            return known
        entry = self._entries.get(file_id)
        if entry is None:
            self._probes += 1
            entry = self._start(container_id, file_id, None)
        await entry.sized.wait()
        size = entry.final_size if entry.final_size is not None else entry.stream_size
        if size is None:
            raise entry.error or CacheError(f"the size of {file_id} is unknown")
        self._announced[file_id] = size
        if (
            entry.downloading
            and not entry.detached
            and entry.opens == 0
            and entry.pins == 0
            and not self._keep_probe(entry, size)
        ):
            log.debug("size of %s is %d; not downloading it now", file_id, size)
            self._probes_dropped += 1
            self.detach(entry)
            entry.cancel_scope.cancel()
        return size

    def _keep_probe(self, entry: Entry, size: int) -> bool:
        if size > min(self._probe_keep_bytes, self._cache.max_size):
            return False
        if _remaining(entry) <= PROBE_TAIL_BYTES:
            return True
        long_unread = sum(
            1
            for e in self._entries
            if e is not entry
            and e.downloading
            and e.opens == 0
            and e.pins == 0
            and e.stream_size is not None  # decided on (or will be) when its headers came
            and _remaining(e) > PROBE_TAIL_BYTES
        )
        return long_unread < self._probe_keep_downloads

    def _has(self, file_id: FileId) -> bool:
        """Whether ``file_id`` is live or in the cache (complete or not)."""
        return self._entries.get(file_id) is not None or self._cache.get(file_id) is not None

    def is_cached(self, file_id: FileId, size: int | None) -> bool:
        cached = self._cache.get(file_id)
        return cached is not None and cached.complete and (size is None or cached.size == size)

    def invalidate(self, file_id: FileId) -> None:
        """Forget a file version (deleted or replaced). Open handles keep what they have."""
        entry = self._entries.get(file_id)
        if entry is not None:
            self.detach(entry)
            if entry.downloading and entry.opens == 0 and entry.pins == 0:
                entry.cancel_scope.cancel()
        cached = self._cache.get(file_id)
        if cached is not None:
            self._cache.remove(cached)
            self._deletions.schedule(file_id, (cached.data_path, cached.meta_path))
        self._known_sizes.pop(file_id, None)
        self._announced.pop(file_id, None)
        self._too_big.pop(file_id, None)

    def statistics(self) -> ReaderStats:
        prefetched = self._prefetcher.statistics()
        return ReaderStats(
            hits=self._hits,
            misses=self._misses,
            joins=self._joins,
            downloads_started=self._started,
            downloads_completed=self._downloads.completed,
            downloads_failed=self._downloads.failed,
            retries=self._downloads.retries,
            range_reads=self._ranges.count,
            pieces=self._pieces.pieces,
            past_cache=self._past_count,
            size_probes=self._probes,
            size_probes_dropped=self._probes_dropped,
            prefetches=prefetched.started,
            prefetches_used=prefetched.used,
            prefetches_failed=prefetched.failed,
            prefetches_deferred=prefetched.deferred,
            active_downloads=sum(1 for e in self._entries if e.downloading),
            open_handles=sum(e.opens for e in self._entries),
            bytes_fetched=self._downloads.bytes_fetched,
            bytes_served=self._bytes_served,
            evictions=self._cache.evictions,
            cache_bytes_used=self._cache.used,
            cache_max_size=self._cache.max_size,
            entries=len(self._cache),
        )

    # ---- entries ----

    async def _acquire(
        self, container_id: ContainerId, file_id: FileId, size: int | None, *, pin: bool
    ) -> Entry:
        """The live entry for a file version, with one more open (or pin) counted on it."""
        entry = self._lookup(container_id, file_id, size)
        if pin:
            entry.pins += 1
        else:
            entry.opens += 1
        if not entry.needs_fd:
            return entry
        # the first opener of a complete cache entry opens its fd; later ones wait in read()
        entry.needs_fd = False
        try:
            entry.fd = await trio.to_thread.run_sync(_open_cached, entry.cache)
        except OSError as exc:
            log.warning("cache entry %s unreadable (%s); downloading again", file_id, exc)
            entry.error = CacheError(f"cache file unreadable: {exc}")
            entry.settled.set()
            entry.wake_all()
            self.detach(entry)
            if pin:
                entry.pins -= 1
            else:
                entry.opens -= 1
            self._entries.maybe_drop(entry)
            return await self._acquire(container_id, file_id, size, pin=pin)
        finally:
            entry.fd_ready.set()
        return entry

    def _lookup(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Entry:
        entry = self._entries.get(file_id)
        if (
            entry is not None
            and entry.final_size is not None
            and size is not None
            and entry.final_size != size
        ):
            # same id, different size: the listing knows better than our copy
            log.info("cache: %s changed size (%d != %d)", file_id, entry.final_size, size)
            self.detach(entry)
            entry = None
        if entry is not None:
            self._joins += 1
            self._cache.touch(entry.cache)
            return entry
        cached = self._cache.get(file_id)
        if cached is not None and cached.complete and (size is None or cached.size == size):
            self._hits += 1
            self._cache.touch(cached)
            entry = Entry(cached, container_id, cached.size)
            entry.final_size = entry.disk_end = cached.stored
            entry.needs_fd = True
            entry.settled.set()
            entry.sized.set()
            self._entries.add(entry)
            return entry
        self._misses += 1
        return self._start(container_id, file_id, size)

    def _start(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Entry:
        """A new live entry for ``file_id`` and its download task (no live entry exists)."""
        cached = self._cache.get(file_id)
        if cached is not None:
            self._cache.remove(cached)
            self._deletions.schedule(file_id, (cached.data_path, cached.meta_path))
        entry = Entry(self._cache.add(file_id, size), container_id, size)
        self._entries.add(entry)
        entry.downloading = True
        self._started += 1
        self._entries.evict()  # make room for the expected size now, not after the bytes arrived
        download = Download(
            entry,
            source=self._client,
            host=self,
            settings=self._download_settings,
            counters=self._downloads,
            ranges=self._pieces,
        )
        self._nursery.start_soon(download.run)
        return entry

    def detach(self, entry: Entry) -> None:
        """Unindex an entry and delete its files; open handles keep reading through the fd."""
        self._entries.detach(entry)

    # ---- the DownloadHost interface ----

    def deletion_of(self, file_id: FileId) -> trio.Event | None:
        return self._deletions.of(file_id)

    def size_learned(self, file_id: FileId, size: int) -> None:
        self._known_sizes[file_id] = size

    def deleting(self) -> bool:
        """Whether cache files are still being deleted in the background."""
        return self._deletions.pending()

    def download_ended(self, entry: Entry) -> None:
        self._entries.maybe_drop(entry)
        self._entries.evict()

    async def make_room(self, entry: Entry) -> bool:
        size = entry.size if entry.size is not None else entry.stream_size
        needed = None if size is None else max(size - entry.disk_end, 1)
        if not self._entries.make_room(needed):
            return False
        await self._deletions.wait_all()
        return True

    # ---- reads ----

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
            self._entries.maybe_drop(entry)
        if fetch_end > head_end:
            handle.keep_ahead(block, offset)
            head = block[: head_end - offset]
        else:
            head = block
        return head + tail if tail else head


def _remaining(entry: Entry) -> int | float:
    """Bytes of the download still to come (infinite while no size was announced)."""
    total = entry.final_size if entry.final_size is not None else entry.stream_size
    return total - entry.arrived if total is not None else float("inf")


# ---- blocking helpers, run in worker threads ----


def _open_cached(cached: CacheEntry) -> int:
    fd = os.open(cached.data_path, os.O_RDONLY | os.O_CLOEXEC)
    DiskCache.touch_sidecar(cached)
    return fd


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
