"""Ranged reads ahead of a download: a read far beyond the stream's frontier fetches its own
window with a ranged GET instead of waiting for the stream to get there (a video seek, a
``tail`` of a large file). Concurrent far reads of one entry share one request; a server that
ignores ``Range`` is not asked again on this mount. Layer: read path.
"""

from __future__ import annotations

import logging

from containerfs.errors import ApiError
from containerfs.read.download import ContentSource, DownloadCounters
from containerfs.read.entries import Entry

log = logging.getLogger(__name__)

# ... and fetches at least this much, so that the kernel's next few reads reuse it.
RANGE_WINDOW_BYTES = 1 << 20


class RangeReads:
    """Ranged GETs for reads more than ``ahead`` bytes past a download's frontier."""

    def __init__(
        self, source: ContentSource, *, ahead: int | None, counters: DownloadCounters
    ) -> None:
        self._source = source
        self._ahead = ahead
        self._ok = ahead is not None  # until a server answers 200 to a Range
        self._counters = counters
        self._count = 0

    @property
    def count(self) -> int:
        """Ranged GETs made."""
        return self._count

    def far_ahead(self, entry: Entry, offset: int) -> bool:
        size = entry.size
        return (
            self._ok
            and self._ahead is not None
            and entry.downloading
            and entry.error is None
            # only with a known size: a Range past the end would be an error, not EOF
            and size is not None
            and offset < size
            and offset > entry.arrived + self._ahead
        )

    async def read(self, entry: Entry, offset: int, end: int) -> bytes | None:
        """Serve a read far beyond the frontier with its own ranged GET (None: wait instead)."""
        async with entry.window_lock:  # concurrent far reads share one request
            at, window = entry.window
            if at <= offset and end <= at + len(window):
                return window[offset - at : end - at]
            if not self.far_ahead(entry, offset):
                return None
            want = max(end - offset, RANGE_WINDOW_BYTES)
            buf = bytearray()
            try:
                async with self._source.download(
                    entry.container_id, entry.file_id, offset=offset
                ) as download:
                    if download.start != offset:
                        # the server ignores Range: don't ask again on this mount
                        log.info("server ignores Range; reads ahead will wait for the stream")
                        self._ok = False
                        return None
                    self._count += 1
                    chunks = download.chunks()
                    try:
                        async for chunk in chunks:
                            self._counters.bytes_fetched += len(chunk)
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
