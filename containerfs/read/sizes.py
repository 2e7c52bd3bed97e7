"""Sizes of file versions for the read path: what is known without a request
(``KnownSizes``), and learning the size of a file listed without one (``SizeProbes``).

A listing may give a file no size (``bytes: null``). Its size is then known from its content:
a download that ended (the size the content proved) or one whose response announced it, a
complete cache entry, or our own upload. Otherwise ``SizeProbes`` starts the file's download
and waits only for its response headers; the stream then goes on into the cache for the read
that usually follows, unless that would download many large files nobody reads (see
``PROBE_KEEP_BYTES``). Knows nothing about FUSE or HTTP. Layer: read path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cachetools import LRUCache

from containerfs.errors import CacheError
from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import DiskCache
from containerfs.read.entries import Entry, LiveEntries
from containerfs.read.settings import PROBE_TAIL_BYTES

log = logging.getLogger(__name__)


class KnownSizes:
    """Sizes known without a request: proven by content, or announced by a response."""

    def __init__(self, live: LiveEntries, cache: DiskCache) -> None:
        self._live = live
        self._proven: dict[FileId, int] = {
            e.file_id: e.size for e in cache if e.complete and e.size is not None
        }
        # sizes announced by a response whose download did not complete here (dropped probes)
        self._announced: LRUCache[FileId, int] = LRUCache(maxsize=1 << 16)

    def proven(self, file_id: FileId, size: int) -> None:
        """The content of ``file_id`` is ``size`` bytes: a whole download, or our upload."""
        self._proven[file_id] = size

    def announced(self, file_id: FileId, size: int) -> None:
        """A response announced ``size`` for ``file_id``."""
        self._announced[file_id] = size

    def forget(self, file_id: FileId) -> None:
        self._proven.pop(file_id, None)
        self._announced.pop(file_id, None)

    def known(self, file_id: FileId) -> int | None:
        """The size of a file version, if known without a request: from its download (ended,
        or announced by the response), a complete cache entry, or an earlier announcement."""
        entry = self._live.get(file_id)
        if entry is not None:
            if entry.final_size is not None:
                return entry.final_size
            if entry.stream_size is not None:
                return entry.stream_size
        known = self._proven.get(file_id)
        return known if known is not None else self._announced.get(file_id)

    def content(self, file_id: FileId) -> int | None:
        """The size the content itself proved: a download that ended whole by its own
        framing, a complete cache entry, or our own upload; never a size only announced."""
        entry = self._live.get(file_id)
        if entry is not None and entry.final_size is not None:
            return entry.final_size
        return self._proven.get(file_id)


#: Starts the download of a file with no live entry: its new entry.
StartDownload = Callable[[ContainerId, FileId, int | None], Entry]


class SizeProbes:
    """Downloads started to learn a size, kept or dropped once their headers came."""

    def __init__(
        self,
        sizes: KnownSizes,
        live: LiveEntries,
        cache: DiskCache,
        *,
        start: StartDownload,
        detach: Callable[[Entry], None],
        keep_bytes: int,
        keep_downloads: int,
    ) -> None:
        self._sizes = sizes
        self._live = live
        self._cache = cache
        self._start = start
        self._detach = detach
        self._keep_bytes = keep_bytes
        self._keep_downloads = keep_downloads
        self._started = self._dropped = 0

    @property
    def started(self) -> int:
        """Downloads started to learn a size."""
        return self._started

    @property
    def dropped(self) -> int:
        """... and stopped once the headers gave it."""
        return self._dropped

    async def learn(self, container_id: ContainerId, file_id: FileId) -> int:
        """The exact size of a file version the listing gave none for.

        Known already (``KnownSizes.known``): no request. Otherwise the content download is
        started (or joined) and this waits only for its response headers: ``Content-Length``
        or ``Content-Range`` gives the size, and the stream goes on into the cache for the
        read that usually follows (see ``PROBE_KEEP_BYTES``). Only a response that announces
        no size is waited for to its end. Raises the download's error when it fails first.
        """
        known = self._sizes.known(file_id)
        if known is not None:
            return known
        entry = self._live.get(file_id)
        if entry is None:
            self._started += 1
            entry = self._start(container_id, file_id, None)
        await entry.sized.wait()
        size = entry.final_size if entry.final_size is not None else entry.stream_size
        if size is None:
            raise entry.error or CacheError(f"the size of {file_id} is unknown")
        self._sizes.announced(file_id, size)
        if (
            entry.downloading
            and not entry.detached
            and entry.opens == 0
            and entry.pins == 0
            and not self._keep(entry, size)
        ):
            log.debug("size of %s is %d; not downloading it now", file_id, size)
            self._dropped += 1
            self._detach(entry)
            entry.cancel_scope.cancel()
        return size

    def _keep(self, entry: Entry, size: int) -> bool:
        if size > min(self._keep_bytes, self._cache.max_size):
            return False
        if _remaining(entry) <= PROBE_TAIL_BYTES:
            return True
        long_unread = sum(
            1
            for e in self._live
            if e is not entry
            and e.downloading
            and e.opens == 0
            and e.pins == 0
            and e.stream_size is not None  # decided on (or will be) when its headers came
            and _remaining(e) > PROBE_TAIL_BYTES
        )
        return long_unread < self._keep_downloads


def _remaining(entry: Entry) -> int | float:
    """Bytes of the download still to come (infinite while no size was announced)."""
    total = entry.final_size if entry.final_size is not None else entry.stream_size
    return total - entry.arrived if total is not None else float("inf")
