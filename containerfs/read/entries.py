"""Live entries of the read path: the runtime state of one file version that is open, pinned
or downloading (its cache file, the in-memory tail, waiters for a range). Plain state with the
methods that keep it consistent; no I/O of its own. Layer: read path.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import trio

from containerfs.errors import ContainerFsError
from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import CacheEntry, DiskCache

log = logging.getLogger(__name__)


class Entry:
    """Runtime state of one file version that is open, pinned or downloading."""

    def __init__(self, cache: CacheEntry, container_id: ContainerId, expected: int | None) -> None:
        self.cache = cache
        self.file_id = cache.file_id
        self.container_id = container_id
        self.expected_size = expected
        self.final_size: int | None = None  # known once the stream ended (or from the cache)
        self.stream_size: int | None = None  # total size the server announced
        # why the content cannot vouch for itself (an error page's type, no framing): such a
        # download serves this mount but is not kept in the disk cache across a remount
        self.suspect: str | None = None
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
        # the size is known (announced by the response, or the stream ended) or never will be
        self.sized = trio.Event()
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
        self.keep_from = 0  # memory only: what lies before it no reader needs

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

    def forget_before(self, offset: int) -> None:
        """Memory only (no cache file): drop the arrived segments that end before ``offset``,
        the lowest offset a reader still needs, now and as more arrive (the download calls
        ``forget_before(keep_from)``), letting a stream held back by ``max_pending`` go on.
        ``arrived`` does not move."""
        self.keep_from = offset
        dropped = False
        while self.pending and self.disk_end + len(self.pending[0]) <= offset:
            size = len(self.pending.popleft())
            # disk_end is where memory starts here: both move together, arrived stays
            self.disk_end += size
            self.pending_bytes -= size
            dropped = True
        if dropped:
            self.drained.set()

    def move_to_recent(self, length: int) -> None:
        """The first ``length`` pending bytes are in the cache file: keep them as recent (a
        segment cut at ``length`` is split; ``disk_end`` and the counts are the caller's)."""
        while length:
            seg = self.pending[0]
            if len(seg) <= length:
                self.recent.append(self.pending.popleft())
                length -= len(seg)
            else:
                self.recent.append(seg[:length])
                self.pending[0] = seg[length:]
                length = 0

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


class Deletions:
    """Cache files being deleted in worker threads, one after another per file id, so that a
    new download of an id never has its fresh file deleted by an older deletion."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._running: dict[FileId, trio.Event] = {}

    def of(self, file_id: FileId) -> trio.Event | None:
        """The pending deletion of ``file_id``'s files, if any."""
        return self._running.get(file_id)

    def pending(self) -> bool:
        return bool(self._running)

    async def wait_all(self) -> None:
        """Until the deletions running now have finished."""
        for done in list(self._running.values()):
            await done.wait()

    def schedule(self, file_id: FileId, paths: tuple[Path, ...]) -> None:
        """Delete ``paths`` in a worker thread, after any earlier deletion of the id."""
        previous = self._running.get(file_id)
        done = trio.Event()
        self._running[file_id] = done
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
            if self._running.get(file_id) is done:
                del self._running[file_id]


class LiveEntries:
    """The entries open, pinned or downloading, by file id. A live entry's cache file is never
    evicted; an entry leaves once nobody uses it (``maybe_drop``) or it is ``detach``-ed."""

    def __init__(self, cache: DiskCache, deletions: Deletions) -> None:
        self._cache = cache
        self._deletions = deletions
        self._live: dict[FileId, Entry] = {}

    def get(self, file_id: FileId) -> Entry | None:
        return self._live.get(file_id)

    def add(self, entry: Entry) -> None:
        self._live[entry.file_id] = entry

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._live.values()))

    def detach(self, entry: Entry) -> None:
        """Unindex ``entry`` and delete its files; open handles keep reading through the fd."""
        if entry.detached:
            return
        entry.detached = True
        if self._live.get(entry.file_id) is entry:
            del self._live[entry.file_id]
        if self._cache.remove(entry.cache) or not entry.cache.complete:
            # unlinking now (not at the last close) lets a new download of the same id
            # create a fresh file without truncating the one still open here
            self._deletions.schedule(entry.file_id, (entry.cache.data_path, entry.cache.meta_path))

    def maybe_drop(self, entry: Entry) -> None:
        """Close and unindex ``entry`` if nobody uses it any more."""
        if entry.users:
            return
        if entry.fd is not None:
            # close(2) of a regular file does no I/O worth a thread hop
            os.close(entry.fd)
            entry.fd = None
        if self._live.get(entry.file_id) is entry:
            del self._live[entry.file_id]

    def evict(self) -> None:
        """Evict complete cache files beyond the cache size, least recently used first."""
        for victim in self._cache.evict(self._busy):
            self._deletions.schedule(victim.file_id, (victim.data_path, victim.meta_path))

    def make_room(self, needed: int | None) -> bool:
        """The cache disk is full: evict unused complete entries, least recently used first,
        until ``needed`` bytes are freed (None: all of them). Nothing is evicted when that
        cannot free enough. Whether anything was (its deletion is under way)."""
        victims = self._cache.evict_bytes(self._busy, needed)
        for victim in victims:
            self._deletions.schedule(victim.file_id, (victim.data_path, victim.meta_path))
        return bool(victims)

    def _busy(self, cached: CacheEntry) -> bool:
        entry = self._live.get(cached.file_id)
        return entry is not None and entry.cache is cached
