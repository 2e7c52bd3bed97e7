"""Downloads: one streaming GET per file version into its cache file, and the live ``Entry``.

``download_task`` is the background task the reader starts for a file it does not have: it
streams the content into the entry's in-memory tail, resuming from the frontier after a
retryable failure, while a flusher writes the tail to the cache file in ``pwritev`` batches in
a worker thread; readers wait on the entry for the range they need. These are functions of the
``Reader``, whose settings and counters they use. Knows nothing about FUSE or HTTP.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from containerfs.errors import ApiConnectionError, ApiError, ContainerFsError
from containerfs.models import ContainerId
from containerfs.read.diskcache import CacheEntry, DiskCache

if TYPE_CHECKING:
    from containerfs.read.reader import Reader

log = logging.getLogger(__name__)

# pwritev takes at most IOV_MAX (1024 on Linux) buffers per call.
_MAX_IOV = 512


class CacheError(ContainerFsError):
    """The local cache failed (disk full, files removed behind our back, download abandoned)."""

    def __init__(self, message: str, *, errno_: int = errno.EIO) -> None:
        super().__init__(message)
        self.errno = errno_


class Entry:
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


async def download_task(r: Reader, entry: Entry) -> None:
    """Download ``entry`` (the reader started it in its nursery); every failure ends here."""
    try:
        with entry.cancel_scope:
            try:
                await _run_download(r, entry)
            except ContainerFsError as exc:
                _fail(r, entry, exc)
            except OSError as exc:
                code = exc.errno or errno.EIO
                _fail(r, entry, CacheError(f"cache write failed: {exc}", errno_=code))
            except Exception as exc:
                # a bug or an unmapped error must not take the whole mount down with it
                log.exception("download of %s crashed", entry.file_id)
                _fail(r, entry, CacheError(f"download failed: {exc!r}"))
    finally:
        entry.downloading = False
        if entry.error is None and not entry.settled.is_set():
            # cancelled: invalidated, abandoned, or the mount is shutting down (this task
            # runs in r._nursery, so it is still open for the deletion task)
            entry.error = CacheError("download cancelled")
            r._detach(entry)
        entry.settled.set()
        entry.fd_ready.set()
        entry.wake_all()
        r._maybe_drop(entry)
        # the entry may have become evictable just now (released while downloading)
        r._evict()


def _fail(r: Reader, entry: Entry, exc: ContainerFsError) -> None:
    log.warning("download of %s failed: %s", entry.file_id, exc)
    r._failed += 1
    entry.error = exc
    entry.wake_all()
    r._detach(entry)


async def _run_download(r: Reader, entry: Entry) -> None:
    failure: ContainerFsError | None = None

    async def stream(cancel: trio.CancelScope) -> None:
        nonlocal failure
        try:
            await _stream(r, entry)
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
            pending_delete = r._deleting.get(entry.file_id)
            if pending_delete is not None:
                await pending_delete.wait()
            entry.fd = await trio.to_thread.run_sync(_create_data_file, entry.cache.data_path)
            entry.fd_ready.set()
            await _flusher(r, entry)
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
    r._known_sizes[entry.file_id] = size
    if not entry.detached:
        await trio.to_thread.run_sync(DiskCache.write_sidecar, entry.cache, entry.fd)
    r._completed += 1
    entry.settled.set()
    log.debug("downloaded %s (%d bytes)", entry.file_id, size)


async def _stream(r: Reader, entry: Entry) -> None:
    """Receive the whole content into ``entry``, resuming after retryable failures."""
    failures = 0
    while True:
        offset = entry.arrived
        progressed = False
        try:
            async with r._client.download(
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
                        r._bytes_fetched += len(chunk)
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk = chunk[skip:]
                            skip = 0
                        if chunk:
                            await _append(r, entry, chunk)
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
            if not exc.retryable or failures >= len(r._retry_delays):
                raise
            delay = r._retry_delays[failures]
            failures += 1
            r._retries += 1
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


async def _append(r: Reader, entry: Entry, chunk: bytes) -> None:
    while entry.pending_bytes >= r._max_pending:
        entry.drained = trio.Event()
        await entry.drained.wait()
    entry.pending.append(chunk)
    entry.pending_bytes += len(chunk)
    if entry.pending_bytes >= r._flush_bytes:
        entry.flush_wanted.set()
    entry.wake()


async def _flusher(r: Reader, entry: Entry) -> None:
    """Move the in-memory tail to the cache file in large batches, until the stream ends."""
    assert entry.fd is not None
    fd = entry.fd
    while True:
        if entry.pending_bytes and (entry.pending_bytes >= r._flush_bytes or entry.stream_done):
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
            while entry.recent and entry.recent_bytes - len(entry.recent[0]) >= r._recent_bytes:
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
