"""The lifecycle of live entries: acquired by an open or a pin (a cache hit, a join of a live
entry, or a new download), given back at release and unpin, dropped once unused, detached
when their file version is gone. It starts the ``Download`` tasks and is their
``DownloadHost``, the one place where downloads touch the index, the disk cache and the
deletions. Knows nothing about FUSE or HTTP. Layer: read path.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from containerfs.errors import CacheError
from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import CacheEntry, DiskCache
from containerfs.read.download import ContentSource, Download, DownloadCounters
from containerfs.read.entries import Deletions, Entry, LiveEntries
from containerfs.read.pieces import RangeSupport
from containerfs.read.settings import DownloadSettings
from containerfs.read.sizes import KnownSizes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LifecycleStats:
    hits: int  # opens served from a complete cache entry
    misses: int  # opens that started a download
    joins: int  # opens that joined a live entry (download in progress or already open)
    started: int  # downloads started


class EntryLifecycle:
    """Live entries from acquisition to drop, and the downloads that fill them."""

    def __init__(
        self,
        source: ContentSource,
        cache: DiskCache,
        live: LiveEntries,
        deletions: Deletions,
        sizes: KnownSizes,
        *,
        nursery: trio.Nursery,
        settings: DownloadSettings,
        counters: DownloadCounters,
        pieces: RangeSupport,
    ) -> None:
        self._source = source
        self._cache = cache
        self._live = live
        self._deletions = deletions
        self._sizes = sizes
        self._nursery = nursery
        self._settings = settings
        self._counters = counters
        self._pieces = pieces
        self._pins: dict[FileId, list[Entry]] = {}
        self._hits = self._misses = self._joins = self._started = 0

    def statistics(self) -> LifecycleStats:
        return LifecycleStats(self._hits, self._misses, self._joins, self._started)

    def has(self, file_id: FileId) -> bool:
        """Whether ``file_id`` is live or in the cache (complete or not)."""
        return self._live.get(file_id) is not None or self._cache.get(file_id) is not None

    def is_cached(self, file_id: FileId, size: int | None) -> bool:
        cached = self._cache.get(file_id)
        return cached is not None and cached.complete and (size is None or cached.size == size)

    # ---- acquire and give back ----

    async def acquire(
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
            self._live.maybe_drop(entry)
            return await self.acquire(container_id, file_id, size, pin=pin)
        finally:
            entry.fd_ready.set()
        return entry

    def _lookup(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Entry:
        entry = self._live.get(file_id)
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
            self._live.add(entry)
            return entry
        self._misses += 1
        return self.start(container_id, file_id, size)

    def release(self, entry: Entry) -> None:
        """One open of ``entry`` is over."""
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
        self._live.maybe_drop(entry)
        self._live.evict()

    async def fetch(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Path:
        """The complete cache file of a file version, pinned until ``unpin``."""
        entry = await self.acquire(container_id, file_id, size, pin=True)
        try:
            await entry.settled.wait()
            if entry.error is not None:
                raise entry.error
        except BaseException:
            entry.pins -= 1
            self._live.maybe_drop(entry)
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
        self._live.maybe_drop(entry)
        self._live.evict()

    # ---- start, adopt, forget ----

    def start(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Entry:
        """A new live entry for ``file_id`` and its download task (no live entry exists)."""
        cached = self._cache.get(file_id)
        if cached is not None:
            self._cache.remove(cached)
            self._deletions.schedule(file_id, (cached.data_path, cached.meta_path))
        entry = Entry(self._cache.add(file_id, size), container_id, size)
        self._live.add(entry)
        entry.downloading = True
        self._started += 1
        self._live.evict()  # make room for the expected size now, not after the bytes arrived
        download = Download(
            entry,
            source=self._source,
            host=self,
            settings=self._settings,
            counters=self._counters,
            ranges=self._pieces,
        )
        self._nursery.start_soon(download.run)
        return entry

    async def adopt(
        self, file_id: FileId, source: Path, first: Callable[[], None] | None = None
    ) -> bool:
        """Take ``source`` (a file the caller gives up) as the complete content of ``file_id``;
        False (``source`` left alone) when the id is already known here or cannot fit.
        ``first`` runs in the move's trip to a thread, before it, if the move is tried."""
        if self.has(file_id):
            return False
        data_path, meta_path = self._cache.paths_for(file_id)
        entry = CacheEntry(file_id, data_path, meta_path, complete=True, size=None)
        max_size = self._cache.max_size
        size = await trio.to_thread.run_sync(_move_in, source, entry, max_size, first)
        if (
            size is None
            or self._live.get(file_id) is not None
            or self._cache.get(file_id) is not None
        ):
            return size is not None
        self._cache.add_complete(file_id, size)
        self._sizes.proven(file_id, size)
        self._live.evict()
        return True

    def invalidate(self, file_id: FileId) -> None:
        """Forget a file version (deleted or replaced). Open handles keep what they have."""
        entry = self._live.get(file_id)
        if entry is not None:
            self.detach(entry)
            if entry.downloading and entry.opens == 0 and entry.pins == 0:
                entry.cancel_scope.cancel()
        cached = self._cache.get(file_id)
        if cached is not None:
            self._cache.remove(cached)
            self._deletions.schedule(file_id, (cached.data_path, cached.meta_path))
        self._sizes.forget(file_id)

    def detach(self, entry: Entry) -> None:
        """Unindex an entry and delete its files; open handles keep reading through the fd."""
        self._live.detach(entry)

    # ---- the DownloadHost interface ----

    def deletion_of(self, file_id: FileId) -> trio.Event | None:
        return self._deletions.of(file_id)

    def size_learned(self, file_id: FileId, size: int) -> None:
        self._sizes.proven(file_id, size)

    def cache_completed(self, cached: CacheEntry, size: int) -> None:
        self._cache.completed(cached, size)

    def deleting(self) -> bool:
        """Whether cache files are still being deleted in the background."""
        return self._deletions.pending()

    def download_ended(self, entry: Entry) -> None:
        self._live.maybe_drop(entry)
        self._live.evict()

    async def make_room(self, entry: Entry) -> bool:
        size = entry.size if entry.size is not None else entry.stream_size
        needed = None if size is None else max(size - entry.disk_end, 1)
        if not self._live.make_room(needed):
            return False
        await self._deletions.wait_all()
        return True


# ---- blocking helpers, run in worker threads ----


def _open_cached(cached: CacheEntry) -> int:
    fd = os.open(cached.data_path, os.O_RDONLY | os.O_CLOEXEC)
    DiskCache.touch_sidecar(cached)
    return fd


def _move_in(
    source: Path, entry: CacheEntry, max_size: int, first: Callable[[], None] | None
) -> int | None:
    """Move (or copy) ``source`` to ``entry``'s data file with its sidecar: its size, or None
    (``source`` left alone) when it is larger than the cache. ``first`` runs before."""
    if first is not None:
        first()
    try:
        size = os.stat(source).st_size
    except FileNotFoundError:
        return None  # a spool never made on disk: nothing to keep
    if size > max_size:
        return None
    try:
        os.rename(source, entry.data_path)
    except OSError:  # another file system: copy, then give the spool up
        shutil.copyfile(source, entry.data_path)
        os.unlink(source)
    entry.size = size
    DiskCache.write_sidecar(entry, None)
    return size
