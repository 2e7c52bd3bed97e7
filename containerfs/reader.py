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
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import shutil
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import trio

from containerfs.cache import CacheEntry, DiskCache
from containerfs.errors import ApiConnectionError, ApiError, ContainerFsError
from containerfs.models import ContainerId, FileId

log = logging.getLogger(__name__)

# Batch size of cache-file writes: large enough that the thread hop per write is noise.
FLUSH_BYTES = 1 << 20
# Backpressure: the stream pauses when this much content waits for the disk.
MAX_PENDING = 8 << 20
# pwritev takes at most IOV_MAX (1024 on Linux) buffers per call.
_MAX_IOV = 512
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0, 5.0)
# Sequential reads from the cache file fetch this much per thread hop (the kernel asks for
# 128 KiB at a time; one pread per request would make the thread hop the bottleneck).
READAHEAD_BYTES = 1 << 20
# A read this far beyond the download frontier tries its own ranged GET instead of waiting.
RANGE_AHEAD_BYTES = 8 << 20
# ... and fetches at least this much, so that the kernel's next few reads reuse it.
RANGE_WINDOW_BYTES = 1 << 20
# Content already written stays in memory this long behind the disk frontier, so that readers
# trailing the stream a little are served without a thread hop and a copy back from disk.
RECENT_BYTES = 4 << 20


class DownloadStream(Protocol):
    """One streaming GET of a file's content (``client.Download`` satisfies it)."""

    @property
    def start(self) -> int:
        """Offset of the first byte ``chunks()`` yields (0 when the server ignored Range)."""
        ...

    @property
    def size(self) -> int | None:
        """Total size of the file, when the server said."""
        ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class ContentSource(Protocol):
    """The part of ``ApiClient`` the read path uses."""

    def download(
        self, container_id: ContainerId, file_id: FileId, *, offset: int = 0
    ) -> AbstractAsyncContextManager[DownloadStream]: ...


class CacheError(ContainerFsError):
    """The local cache failed (disk full, files removed behind our back, download abandoned)."""

    def __init__(self, message: str, *, errno_: int = errno.EIO) -> None:
        super().__init__(message)
        self.errno = errno_


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
    active_downloads: int
    open_handles: int
    bytes_fetched: int  # received from the API (including bytes skipped after a restart)
    bytes_served: int  # returned by read()
    evictions: int
    cache_bytes_used: int
    cache_max_size: int
    entries: int


class _Entry:
    """Runtime state of one file version that is open, pinned or downloading."""

    def __init__(self, cache: CacheEntry, container_id: ContainerId, expected: int | None) -> None:
        self.cache = cache
        self.file_id = cache.file_id
        self.container_id = container_id
        self.expected_size = expected
        self.final_size: int | None = None  # known once the stream ended (or from the cache)
        self.stream_size: int | None = None  # total size the server announced
        self.fd: int | None = None
        self.fd_ready = trio.Event()
        self.needs_fd = False  # a complete cache entry whose fd the first opener opens
        # bytes [0, disk_end) are in the cache file; [disk_end, arrived) in `pending`, and
        # [disk_end - recent_bytes, disk_end) also in `recent` (written, kept for readers)
        self.disk_end = 0
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.recent: deque[bytes] = deque()
        self.recent_bytes = 0
        self.error: ContainerFsError | None = None
        self.downloading = False
        self.stream_done = False
        self.detached = False  # no longer indexed (failed, invalidated): files already deleted
        self.settled = trio.Event()  # download finished (content durable) or failed
        self.flush_wanted = trio.Event()
        self.drained = trio.Event()
        self.cancel_scope = trio.CancelScope()
        self.opens = 0
        self.pins = 0
        self.io = 0  # thread calls in flight on fd: it must not be closed under them
        self._waiters: list[tuple[int, int, trio.Event]] = []
        self._seq = itertools.count()
        # bytes fetched by a ranged GET far beyond the frontier: (offset, content)
        self.window: tuple[int, bytes] = (0, b"")
        self.window_lock = trio.Lock()

    @property
    def arrived(self) -> int:
        return self.disk_end + self.pending_bytes

    @property
    def size(self) -> int | None:
        return self.final_size if self.final_size is not None else self.expected_size

    @property
    def users(self) -> int:
        return self.opens + self.pins + self.io + (1 if self.downloading else 0)

    async def wait_for(self, end: int) -> None:
        """Wait until ``end`` has arrived, the stream ended, or the download failed."""
        if self.arrived >= end or self.final_size is not None or self.error is not None:
            return
        event = trio.Event()
        heapq.heappush(self._waiters, (end, next(self._seq), event))
        await event.wait()

    def wake(self) -> None:
        arrived = self.arrived
        waiters = self._waiters
        while waiters and waiters[0][0] <= arrived:
            heapq.heappop(waiters)[2].set()

    def wake_all(self) -> None:
        for _, _, event in self._waiters:
            event.set()
        self._waiters.clear()

    @property
    def mem_start(self) -> int:
        return self.disk_end - self.recent_bytes

    def copy_memory(self, start: int, end: int) -> bytes:
        """Bytes [start, end) from memory (mem_start <= start, end <= arrived)."""
        pos = self.mem_start
        # views, not slices: the bytes are copied once, by the join
        parts: list[bytes | memoryview] = []
        for seg in itertools.chain(self.recent, self.pending):
            seg_end = pos + len(seg)
            if seg_end > start:
                lo = start - pos if start > pos else 0
                hi = end - pos if end < seg_end else len(seg)
                parts.append(seg if lo == 0 and hi == len(seg) else memoryview(seg)[lo:hi])
                if seg_end >= end:
                    break
            pos = seg_end
        if len(parts) == 1:
            return bytes(parts[0])  # a whole segment is returned as is, not copied
        return b"".join(parts)


class ReadHandle:
    """An open file of the read path; ``size`` is updated when the download finishes."""

    __slots__ = ("_ahead", "_ahead_at", "_entry", "_next", "_released", "file_id")

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry
        self._released = False
        self.file_id = entry.file_id
        # read-ahead block from the cache file: bytes on disk never change for a file id
        self._ahead = b""
        self._ahead_at = 0
        self._next = 0  # where a sequential reader reads next

    @property
    def size(self) -> int | None:
        return self._entry.size

    def __repr__(self) -> str:
        return f"ReadHandle({self.file_id!r}, size={self.size})"


class Reader:
    """Streaming downloads into the bounded, persistent disk cache; reads wait for their range."""

    def __init__(
        self,
        client: ContentSource,
        cache: DiskCache,
        *,
        nursery: trio.Nursery,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        flush_bytes: int = FLUSH_BYTES,
        max_pending: int = MAX_PENDING,
        range_ahead: int | None = RANGE_AHEAD_BYTES,
        recent_bytes: int = RECENT_BYTES,
    ) -> None:
        self._client = client
        self._flush_bytes = flush_bytes
        self._max_pending = max(max_pending, flush_bytes)
        self._range_ahead = range_ahead
        self._recent_bytes = recent_bytes
        self._range_ok = range_ahead is not None  # until a server answers 200 to a Range
        self._cache = cache
        self._nursery = nursery
        self._retry_delays = tuple(retry_delays)
        self._live: dict[FileId, _Entry] = {}
        self._pins: dict[FileId, list[_Entry]] = {}
        self._deleting: dict[FileId, trio.Event] = {}
        self._known_sizes: dict[FileId, int] = {
            e.file_id: e.size for e in cache if e.complete and e.size is not None
        }
        self._hits = self._misses = self._joins = 0
        self._started = self._completed = self._failed = self._retries = 0
        self._bytes_fetched = self._bytes_served = 0
        self._range_reads = 0

    @classmethod
    async def create(
        cls,
        client: ContentSource,
        *,
        cache_dir: Path,
        max_size: int,
        nursery: trio.Nursery,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        flush_bytes: int = FLUSH_BYTES,
        max_pending: int = MAX_PENDING,
        range_ahead: int | None = RANGE_AHEAD_BYTES,
        recent_bytes: int = RECENT_BYTES,
    ) -> Reader:
        cache = await trio.to_thread.run_sync(partial(DiskCache.load, cache_dir, max_size=max_size))
        reader = cls(
            client,
            cache,
            nursery=nursery,
            retry_delays=retry_delays,
            flush_bytes=flush_bytes,
            max_pending=max_pending,
            range_ahead=range_ahead,
            recent_bytes=recent_bytes,
        )
        reader._evict()  # the limit may be lower than in the last run
        return reader

    # ---- public API ----

    async def open(
        self, container_id: ContainerId, file_id: FileId, size: int | None
    ) -> ReadHandle:
        entry = await self._acquire(container_id, file_id, size, pin=False)
        return ReadHandle(entry)

    async def read(self, handle: ReadHandle, offset: int, length: int) -> bytes:
        if handle._released:
            raise CacheError("read on a released handle", errno_=errno.EBADF)
        entry = handle._entry
        if offset < 0 or length <= 0:
            return b""
        end = offset + length
        if self._far_ahead(entry, offset):
            data = await self._read_ahead_of_stream(entry, offset, end)
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
        ahead_at = handle._ahead_at
        if ahead_at <= offset and end <= ahead_at + len(handle._ahead):
            data = handle._ahead[offset - ahead_at : end - ahead_at]
        else:
            data = await self._serve(entry, offset, end, handle)
        handle._next = end
        self._bytes_served += len(data)
        return data

    async def release(self, handle: ReadHandle) -> None:
        if handle._released:
            return
        handle._released = True
        entry = handle._entry
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
        self._maybe_drop(entry)
        self._evict()

    async def fetch(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Path:
        entry = await self._acquire(container_id, file_id, size, pin=True)
        try:
            await entry.settled.wait()
            if entry.error is not None:
                raise entry.error
        except BaseException:
            entry.pins -= 1
            self._maybe_drop(entry)
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
        self._maybe_drop(entry)
        self._evict()

    async def adopt(self, file_id: FileId, source: Path) -> bool:
        """Take ``source`` (a file the caller gives up) as the complete content of ``file_id``.

        The writer hands over a spool once its upload is confirmed, so reading back what was
        just written costs no download. Returns False (and leaves ``source`` alone) when the
        id is already known here or the file could not fit in the cache.
        """
        if file_id in self._live or self._cache.get(file_id) is not None:
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
        if size is None or file_id in self._live or self._cache.get(file_id) is not None:
            return size is not None
        self._cache.add_complete(file_id, size)
        self._known_sizes[file_id] = size
        self._evict()
        return True

    def known_size(self, file_id: FileId) -> int | None:
        entry = self._live.get(file_id)
        if entry is not None and entry.final_size is not None:
            return entry.final_size
        return self._known_sizes.get(file_id)

    def is_cached(self, file_id: FileId, size: int | None) -> bool:
        cached = self._cache.get(file_id)
        return cached is not None and cached.complete and (size is None or cached.size == size)

    def invalidate(self, file_id: FileId) -> None:
        """Forget a file version (deleted or replaced). Open handles keep what they have."""
        entry = self._live.get(file_id)
        if entry is not None:
            self._detach(entry)
            if entry.downloading and entry.opens == 0 and entry.pins == 0:
                entry.cancel_scope.cancel()
        cached = self._cache.get(file_id)
        if cached is not None:
            self._cache.remove(cached)
            self._schedule_delete(file_id, (cached.data_path, cached.meta_path))
        self._known_sizes.pop(file_id, None)

    def statistics(self) -> ReaderStats:
        return ReaderStats(
            hits=self._hits,
            misses=self._misses,
            joins=self._joins,
            downloads_started=self._started,
            downloads_completed=self._completed,
            downloads_failed=self._failed,
            retries=self._retries,
            range_reads=self._range_reads,
            active_downloads=sum(1 for e in self._live.values() if e.downloading),
            open_handles=sum(e.opens for e in self._live.values()),
            bytes_fetched=self._bytes_fetched,
            bytes_served=self._bytes_served,
            evictions=self._cache.evictions,
            cache_bytes_used=self._cache.used,
            cache_max_size=self._cache.max_size,
            entries=len(self._cache),
        )

    # ---- entries ----

    async def _acquire(
        self, container_id: ContainerId, file_id: FileId, size: int | None, *, pin: bool
    ) -> _Entry:
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
            self._detach(entry)
            if pin:
                entry.pins -= 1
            else:
                entry.opens -= 1
            self._maybe_drop(entry)
            return await self._acquire(container_id, file_id, size, pin=pin)
        finally:
            entry.fd_ready.set()
        return entry

    def _lookup(self, container_id: ContainerId, file_id: FileId, size: int | None) -> _Entry:
        entry = self._live.get(file_id)
        if (
            entry is not None
            and entry.final_size is not None
            and size is not None
            and entry.final_size != size
        ):
            # same id, different size: the listing knows better than our copy
            log.info("cache: %s changed size (%d != %d)", file_id, entry.final_size, size)
            self._detach(entry)
            entry = None
        if entry is not None:
            self._joins += 1
            self._cache.touch(entry.cache)
            return entry
        cached = self._cache.get(file_id)
        if cached is not None and cached.complete and (size is None or cached.size == size):
            self._hits += 1
            self._cache.touch(cached)
            entry = _Entry(cached, container_id, cached.size)
            entry.final_size = entry.disk_end = cached.stored
            entry.needs_fd = True
            entry.settled.set()
            self._live[file_id] = entry
            return entry
        if cached is not None:
            self._cache.remove(cached)
            self._schedule_delete(file_id, (cached.data_path, cached.meta_path))
        self._misses += 1
        entry = _Entry(self._cache.add(file_id, size), container_id, size)
        self._live[file_id] = entry
        entry.downloading = True
        self._started += 1
        self._evict()  # make room for the expected size now, not after the bytes arrived
        self._nursery.start_soon(self._download, entry)
        return entry

    def _detach(self, entry: _Entry) -> None:
        """Unindex an entry and delete its files; open handles keep reading through the fd."""
        if entry.detached:
            return
        entry.detached = True
        if self._live.get(entry.file_id) is entry:
            del self._live[entry.file_id]
        if self._cache.remove(entry.cache) or not entry.cache.complete:
            # unlinking now (not at the last close) lets a new download of the same id
            # create a fresh file without truncating the one still open here
            self._schedule_delete(entry.file_id, (entry.cache.data_path, entry.cache.meta_path))

    def _maybe_drop(self, entry: _Entry) -> None:
        if entry.users:
            return
        if entry.fd is not None:
            # close(2) of a regular file does no I/O worth a thread hop
            os.close(entry.fd)
            entry.fd = None
        if self._live.get(entry.file_id) is entry:
            del self._live[entry.file_id]

    def _busy(self, cached: CacheEntry) -> bool:
        entry = self._live.get(cached.file_id)
        return entry is not None and entry.cache is cached

    def _evict(self) -> None:
        for victim in self._cache.evict(self._busy):
            self._schedule_delete(victim.file_id, (victim.data_path, victim.meta_path))

    def _schedule_delete(self, file_id: FileId, paths: tuple[Path, ...]) -> None:
        previous = self._deleting.get(file_id)
        done = trio.Event()
        self._deleting[file_id] = done
        self._nursery.start_soon(self._delete, file_id, paths, previous, done)

    async def _delete(
        self,
        file_id: FileId,
        paths: tuple[Path, ...],
        previous: trio.Event | None,
        done: trio.Event,
    ) -> None:
        try:
            if previous is not None:
                await previous.wait()
            await trio.to_thread.run_sync(DiskCache.delete_files, paths)
        except OSError as exc:
            log.warning("cache: could not delete %s: %s", file_id, exc)
        finally:
            done.set()
            if self._deleting.get(file_id) is done:
                del self._deleting[file_id]

    # ---- reads ----

    async def _serve(self, entry: _Entry, offset: int, end: int, handle: ReadHandle) -> bytes:
        disk_end = entry.disk_end
        mem_start = entry.mem_start
        # take the in-memory part first: the flusher may drop it from memory while we pread
        tail = entry.copy_memory(max(offset, mem_start), end) if end > mem_start else b""
        if offset >= mem_start:
            return tail
        head_end = min(end, mem_start)
        # a sequential reader gets a whole read-ahead block per thread hop
        sequential = offset == handle._next and head_end - offset < READAHEAD_BYTES
        fetch_end = min(offset + READAHEAD_BYTES, disk_end) if sequential else head_end
        await entry.fd_ready.wait()
        if entry.fd is None:
            raise entry.error or CacheError("cache file closed")
        entry.io += 1
        try:
            block = await trio.to_thread.run_sync(_pread_all, entry.fd, fetch_end - offset, offset)
        finally:
            entry.io -= 1
            self._maybe_drop(entry)
        if fetch_end > head_end:
            handle._ahead, handle._ahead_at = block, offset
            head = block[: head_end - offset]
        else:
            head = block
        return head + tail if tail else head

    def _far_ahead(self, entry: _Entry, offset: int) -> bool:
        size = entry.size
        return (
            self._range_ok
            and self._range_ahead is not None
            and entry.downloading
            and entry.error is None
            # only with a known size: a Range past the end would be an error, not EOF
            and size is not None
            and offset < size
            and offset > entry.arrived + self._range_ahead
        )

    async def _read_ahead_of_stream(self, entry: _Entry, offset: int, end: int) -> bytes | None:
        """Serve a read far beyond the frontier with its own ranged GET (None: wait instead)."""
        async with entry.window_lock:  # concurrent far reads share one request
            at, window = entry.window
            if at <= offset and end <= at + len(window):
                return window[offset - at : end - at]
            if not self._far_ahead(entry, offset):
                return None
            want = max(end - offset, RANGE_WINDOW_BYTES)
            buf = bytearray()
            try:
                async with self._client.download(
                    entry.container_id, entry.file_id, offset=offset
                ) as download:
                    if download.start != offset:
                        # the server ignores Range: don't ask again on this mount
                        log.info("server ignores Range; reads ahead will wait for the stream")
                        self._range_ok = False
                        return None
                    self._range_reads += 1
                    chunks = download.chunks()
                    try:
                        async for chunk in chunks:
                            self._bytes_fetched += len(chunk)
                            buf += chunk
                            if len(buf) >= want:
                                break
                    finally:
                        aclose = getattr(chunks, "aclose", None)
                        if aclose is not None:
                            await aclose()
            except ApiError as exc:
                log.info(
                    "ranged read of %s at %d failed (%s); waiting for the stream",
                    entry.file_id,
                    offset,
                    exc,
                )
                return None
            # the stream's end is the file's end, so a short window is a short read at EOF
            entry.window = (offset, bytes(buf[:want]))
            return entry.window[1][: end - offset]

    # ---- downloads ----

    async def _download(self, entry: _Entry) -> None:
        try:
            with entry.cancel_scope:
                try:
                    await self._run_download(entry)
                except ContainerFsError as exc:
                    self._fail(entry, exc)
                except OSError as exc:
                    code = exc.errno or errno.EIO
                    self._fail(entry, CacheError(f"cache write failed: {exc}", errno_=code))
                except Exception as exc:
                    # a bug or an unmapped error must not take the whole mount down with it
                    log.exception("download of %s crashed", entry.file_id)
                    self._fail(entry, CacheError(f"download failed: {exc!r}"))
        finally:
            entry.downloading = False
            if entry.error is None and not entry.settled.is_set():
                # cancelled: invalidated, abandoned, or the mount is shutting down (this task
                # runs in self._nursery, so it is still open for the deletion task)
                entry.error = CacheError("download cancelled")
                self._detach(entry)
            entry.settled.set()
            entry.fd_ready.set()
            entry.wake_all()
            self._maybe_drop(entry)
            # the entry may have become evictable just now (released while downloading)
            self._evict()

    def _fail(self, entry: _Entry, exc: ContainerFsError) -> None:
        log.warning("download of %s failed: %s", entry.file_id, exc)
        self._failed += 1
        entry.error = exc
        entry.wake_all()
        self._detach(entry)

    async def _run_download(self, entry: _Entry) -> None:
        failure: ContainerFsError | None = None

        async def stream(cancel: trio.CancelScope) -> None:
            nonlocal failure
            try:
                await self._stream(entry)
            except ContainerFsError as exc:
                failure = exc
                cancel.cancel()
            finally:
                entry.stream_done = True
                entry.flush_wanted.set()

        async def flush(cancel: trio.CancelScope) -> None:
            nonlocal failure
            try:
                # the GET is already on its way: the first bytes don't wait for this thread hop
                pending_delete = self._deleting.get(entry.file_id)
                if pending_delete is not None:
                    await pending_delete.wait()
                entry.fd = await trio.to_thread.run_sync(_create_data_file, entry.cache.data_path)
                entry.fd_ready.set()
                await self._flusher(entry)
            except OSError as exc:
                failure = CacheError(f"cache write failed: {exc}", errno_=exc.errno or errno.EIO)
                cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream, nursery.cancel_scope)
            nursery.start_soon(flush, nursery.cancel_scope)
        if failure is not None:
            raise failure
        size = entry.arrived
        entry.cache.size = entry.cache.stored = size
        entry.cache.complete = True
        self._known_sizes[entry.file_id] = size
        if not entry.detached:
            await trio.to_thread.run_sync(DiskCache.write_sidecar, entry.cache, entry.fd)
        self._completed += 1
        entry.settled.set()
        log.debug("downloaded %s (%d bytes)", entry.file_id, size)

    async def _stream(self, entry: _Entry) -> None:
        """Receive the whole content into ``entry``, resuming after retryable failures."""
        failures = 0
        while True:
            offset = entry.arrived
            progressed = False
            try:
                async with self._client.download(
                    entry.container_id, entry.file_id, offset=offset
                ) as download:
                    # the server may ignore Range (start 0): skip what we already have
                    skip = offset - download.start
                    if skip < 0:
                        raise ApiConnectionError(
                            f"content started at {download.start}, past the requested {offset}"
                        )
                    if download.size is not None:
                        entry.stream_size = download.size
                    chunks = download.chunks()
                    try:
                        async for chunk in chunks:
                            self._bytes_fetched += len(chunk)
                            if skip:
                                if len(chunk) <= skip:
                                    skip -= len(chunk)
                                    continue
                                chunk = chunk[skip:]
                                skip = 0
                            if chunk:
                                await self._append(entry, chunk)
                                progressed = True
                    finally:
                        # close an abandoned async generator now, inside the download's
                        # context, rather than whenever the garbage collector gets to it
                        aclose = getattr(chunks, "aclose", None)
                        if aclose is not None:
                            await aclose()
                if skip or (entry.stream_size is not None and entry.arrived < entry.stream_size):
                    raise ApiConnectionError("content stream ended early")
            except ApiError as exc:
                if progressed:
                    failures = 0
                if not exc.retryable or failures >= len(self._retry_delays):
                    raise
                delay = self._retry_delays[failures]
                failures += 1
                self._retries += 1
                log.info(
                    "download of %s broke at %d (%s); retry %d in %.1fs",
                    entry.file_id,
                    entry.arrived,
                    exc,
                    failures,
                    delay,
                )
                await trio.sleep(delay)
                continue
            entry.final_size = entry.arrived
            if entry.expected_size is not None and entry.expected_size != entry.final_size:
                log.info(
                    "%s: listed %d bytes, received %d",
                    entry.file_id,
                    entry.expected_size,
                    entry.final_size,
                )
            entry.wake_all()
            return

    async def _append(self, entry: _Entry, chunk: bytes) -> None:
        while entry.pending_bytes >= self._max_pending:
            entry.drained = trio.Event()
            await entry.drained.wait()
        entry.pending.append(chunk)
        entry.pending_bytes += len(chunk)
        if entry.pending_bytes >= self._flush_bytes:
            entry.flush_wanted.set()
        entry.wake()

    async def _flusher(self, entry: _Entry) -> None:
        """Move the in-memory tail to the cache file in large batches, until the stream ends."""
        assert entry.fd is not None
        fd = entry.fd
        while True:
            if entry.pending_bytes and (
                entry.pending_bytes >= self._flush_bytes or entry.stream_done
            ):
                batch = list(itertools.islice(entry.pending, _MAX_IOV))
                entry.io += 1
                try:
                    await trio.to_thread.run_sync(_pwritev_all, fd, batch, entry.disk_end)
                finally:
                    entry.io -= 1
                written = sum(len(seg) for seg in batch)
                for _ in batch:
                    entry.recent.append(entry.pending.popleft())
                # disk_end and pending move together, with no checkpoint in between, so
                # arrived (their sum) never goes backwards for a reader
                entry.disk_end += written
                entry.pending_bytes -= written
                entry.recent_bytes += written
                while (
                    entry.recent and entry.recent_bytes - len(entry.recent[0]) >= self._recent_bytes
                ):
                    entry.recent_bytes -= len(entry.recent.popleft())
                entry.cache.stored = entry.disk_end
                entry.drained.set()
            elif entry.stream_done:
                # complete: readers go to the cache file (and the page cache) from now on
                entry.recent.clear()
                entry.recent_bytes = 0
                return
            else:
                entry.flush_wanted = trio.Event()
                await entry.flush_wanted.wait()


# ---- blocking helpers, run in worker threads ----


def _open_cached(cached: CacheEntry) -> int:
    fd = os.open(cached.data_path, os.O_RDONLY | os.O_CLOEXEC)
    DiskCache.touch_sidecar(cached)
    return fd


def _create_data_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


def _pwritev_all(fd: int, buffers: list[bytes], offset: int) -> None:
    written = os.pwritev(fd, buffers, offset)
    total = sum(len(b) for b in buffers)
    if written < total:
        rest = memoryview(b"".join(buffers))[written:]
        while rest:
            n = os.pwrite(fd, rest, offset + written)
            written += n
            rest = rest[n:]


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
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
