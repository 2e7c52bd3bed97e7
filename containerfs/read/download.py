"""Downloads: one streaming GET per file version into its cache file.

A ``Download`` is the background task the reader starts for a file it does not have: it
streams the content into the entry's in-memory tail, resuming from the frontier after a
retryable failure (or fetching large files as parallel ranged pieces), while its ``Flusher``
(``flusher.py``) writes the tail to the cache file; readers wait on the entry for the range
they need. It sees the reader only
through the narrow ``DownloadHost`` interface and counts into a ``DownloadCounters`` the reader
reads for its statistics. Knows nothing about FUSE or HTTP. Layer: read path.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import trio

from containerfs.api.retrying import Patience
from containerfs.errors import (
    ApiConnectionError,
    ApiError,
    CacheError,
    CacheFull,
    ContainerFsError,
    ContentMismatch,
)
from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import CacheEntry, DiskCache
from containerfs.read.entries import Entry
from containerfs.read.flusher import Flusher
from containerfs.read.pieces import Pieces, RangeSupport
from containerfs.read.settings import DownloadSettings as DownloadSettings

log = logging.getLogger(__name__)


class DownloadStream(Protocol):
    """One streaming GET of a file's content (``client.Download`` satisfies it)."""

    @property
    def start(self) -> int:
        """Offset of the first byte ``chunks()`` yields (0 when the server ignored Range)."""
        ...

    @property
    def end(self) -> int | None:
        """Offset just past the body's last byte, when the server said."""
        ...

    @property
    def size(self) -> int | None:
        """Total size of the file, when the server said."""
        ...

    @property
    def suspect(self) -> str | None:
        """Why the body cannot vouch for itself (an error page's content type, no framing)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class ContentSource(Protocol):
    """The part of ``ApiClient`` the read path uses."""

    def download(
        self,
        container_id: ContainerId,
        file_id: FileId,
        *,
        offset: int = 0,
        end: int | None = None,
        patience: Patience | None = None,
    ) -> AbstractAsyncContextManager[DownloadStream]: ...


class DownloadHost(Protocol):
    """What a download needs from the reader that started it."""

    def deletion_of(self, file_id: FileId) -> trio.Event | None:
        """The pending deletion of an older cache file of the id, if any."""
        ...

    def detach(self, entry: Entry) -> None:
        """Unindex a failed or cancelled entry and delete its files."""
        ...

    def size_learned(self, file_id: FileId, size: int) -> None: ...

    def cache_completed(self, cached: CacheEntry, size: int) -> None:
        """The download into ``cached`` is whole, ``size`` bytes: the cache's charge."""

    async def make_room(self, entry: Entry) -> bool:
        """The cache disk is full: evict what is not in use to make room for the rest of
        ``entry``; whether anything was freed (False: read it past the cache)."""
        ...

    def download_ended(self, entry: Entry) -> None:
        """The download task is over (whatever its outcome): close and evict what is unused."""
        ...


@dataclass
class DownloadCounters:
    """Totals over all downloads of one reader (mutable: the downloads count into it)."""

    completed: int = 0
    failed: int = 0
    retries: int = 0
    bytes_fetched: int = 0


class Download:
    """One file version's download into its live entry: into its cache file, or, with
    ``to_disk=False``, into memory only, where the reader drops what it has read (``Entry.
    forget_before``) and the stream waits while ``max_pending`` bytes are unread."""

    def __init__(
        self,
        entry: Entry,
        *,
        source: ContentSource,
        host: DownloadHost,
        settings: DownloadSettings,
        counters: DownloadCounters,
        to_disk: bool = True,
        ranges: RangeSupport | None = None,
    ) -> None:
        self._entry = entry
        self._ranges = ranges
        self._single = ranges is None  # one stream only (no Range, or pieces failed once)
        self._source = source
        self._host = host
        self._settings = settings
        self._counters = counters
        self._to_disk = to_disk
        # one budget for all the resumes: a stalled server fails the download (and with it
        # every read waiting on it) two io-timeouts after its last progress, not per attempt
        self._patience = Patience(settings.progress, clock=trio.current_time)

    async def run(self) -> None:
        """Download the entry (in the reader's nursery); every failure ends here."""
        entry = self._entry
        try:
            with entry.cancel_scope:
                try:
                    await self._run()
                except ContainerFsError as exc:
                    self._fail(exc)
                except OSError as exc:
                    code = exc.errno or errno.EIO
                    self._fail(CacheError(f"cache write failed: {exc}", errno_=code))
                except Exception as exc:
                    # a bug or an unmapped error must not take the whole mount down with it
                    log.exception("download of %s crashed", entry.file_id)
                    self._fail(CacheError(f"download failed: {exc!r}"))
        finally:
            entry.downloading = False
            entry.sized.set()
            if entry.error is None and not entry.settled.is_set():
                # cancelled: invalidated, abandoned, or the mount is shutting down (this task
                # runs in the reader's nursery, so it is still open for the deletion task)
                entry.error = CacheError("download cancelled")
                self._host.detach(entry)
            entry.settled.set()
            entry.fd_ready.set()
            entry.wake_all()
            # the entry may have become evictable just now (released while downloading)
            self._host.download_ended(entry)

    def _fail(self, exc: ContainerFsError) -> None:
        entry = self._entry
        log.warning("download of %s failed: %s", entry.file_id, exc)
        self._counters.failed += 1
        entry.error = exc
        entry.wake_all()
        self._host.detach(entry)

    async def _run(self) -> None:
        began = time.monotonic()
        await self._transfer()
        size = await self._complete()
        log.info(
            "downloaded %s (%d bytes) in %.2f s",
            self._entry.file_id,
            size,
            time.monotonic() - began,
        )

    async def _transfer(self) -> None:
        """The stream and (into a cache file) its flusher, side by side: the first failure of
        either cancels the other and is raised."""
        entry = self._entry
        failure: ContainerFsError | None = None

        async def stream(cancel: trio.CancelScope) -> None:
            nonlocal failure
            try:
                await self._stream()
            except ContainerFsError as exc:
                failure = exc
                cancel.cancel()
            finally:
                entry.stream_done = True
                entry.flush_wanted.set()

        async def flush(cancel: trio.CancelScope) -> None:
            nonlocal failure
            flusher = Flusher(entry, settings=self._settings, make_room=self._host.make_room)
            try:
                # the GET is already on its way: the first bytes don't wait for this thread hop
                await flusher.run(after=self._host.deletion_of(entry.file_id))
            except CacheFull as exc:
                failure = exc
                cancel.cancel()
            except OSError as exc:
                failure = CacheError(f"cache write failed: {exc}", errno_=exc.errno or errno.EIO)
                cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream, nursery.cancel_scope)
            if self._to_disk:
                nursery.start_soon(flush, nursery.cancel_scope)
        if failure is not None:
            raise failure

    async def _complete(self) -> int:
        """The whole content arrived: record it (and, on disk, its sidecar); its size."""
        entry = self._entry
        size = entry.arrived
        if self._to_disk:
            self._host.cache_completed(entry.cache, size)
        self._host.size_learned(entry.file_id, size)
        if not self._to_disk:
            pass  # memory only: nothing to keep
        elif entry.suspect is not None and entry.expected_size is None:
            # nothing vouches for these bytes: serve them now, but a remount downloads again
            # (a data file without its sidecar is discarded when the cache is loaded)
            log.warning("%s: content %s, not kept across a remount", entry.file_id, entry.suspect)
        elif not entry.detached:
            await trio.to_thread.run_sync(DiskCache.write_sidecar, entry.cache, entry.fd)
        self._counters.completed += 1
        entry.settled.set()
        return size

    async def _stream(self) -> None:
        """Receive the whole content into the entry, resuming after retryable failures."""
        entry = self._entry
        failures = 0
        delay = 0.0
        while True:
            offset = entry.arrived
            try:
                await self._receive(offset)
            except ApiError as exc:
                if entry.arrived > offset:  # progress: the count of failures starts again
                    failures = 0
                if not exc.retryable or failures >= self._settings.retries:
                    raise
                delay = self._settings.backoff.next_delay(delay if failures else None)
                if delay >= self._patience.remaining():
                    raise
                failures += 1
                self._counters.retries += 1
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
            entry.sized.set()
            if entry.expected_size is not None and entry.expected_size != entry.final_size:
                # the content (whole by its own framing) wins over the listing: the size
                # shown is corrected from it (``Reader.content_size``)
                log.warning(
                    "%s: listed %d bytes, the content has %d",
                    entry.file_id,
                    entry.expected_size,
                    entry.final_size,
                )
            entry.wake_all()
            return

    async def _receive(self, offset: int) -> None:
        """The content from ``offset`` to its end, into the entry: as parallel pieces when the
        file is large and the server may honour Range, else as one GET."""
        entry = self._entry
        size = entry.expected_size
        if (
            not self._single
            and self._ranges is not None
            and size is not None
            and self._ranges.worth_trying(size - offset)
        ):
            await self._receive_pieces(self._ranges, size)
            return
        await self._receive_stream(offset)

    async def _receive_pieces(self, ranges: RangeSupport, size: int) -> None:
        entry = self._entry
        entry.stream_size = size
        entry.sized.set()

        def open_range(start: int, end: int) -> AbstractAsyncContextManager[DownloadStream]:
            return self._source.download(
                entry.container_id, entry.file_id, offset=start, end=end, patience=self._patience
            )

        def count(n: int) -> None:
            self._counters.bytes_fetched += n

        pieces = Pieces(
            entry, size, open_range=open_range, append=self._append, support=ranges, on_bytes=count
        )
        try:
            await pieces.run()
        except ApiError:
            self._single = True  # the resume (if the error allows one) takes one stream
            raise
        _check_content(entry)

    async def _receive_stream(self, offset: int) -> None:
        """One GET of the content from ``offset`` to its end, into the entry."""
        entry = self._entry
        async with self._source.download(
            entry.container_id, entry.file_id, offset=offset, patience=self._patience
        ) as download:
            # the server may ignore Range (start 0): skip what we already have
            skip = offset - download.start
            if skip < 0:
                raise ApiConnectionError(
                    f"content started at {download.start}, past the requested {offset}"
                )
            if download.size is not None:
                entry.stream_size = download.size
                entry.sized.set()  # a caller learning the size needs no more than this
            entry.suspect = entry.suspect or download.suspect  # a resumed body stays suspect
            chunks = download.chunks()
            try:
                async for chunk in chunks:
                    self._counters.bytes_fetched += len(chunk)
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk = chunk[skip:]
                        skip = 0
                    if chunk:
                        await self._append(chunk)
            finally:
                # close an abandoned async generator now, inside the download's context,
                # rather than whenever the garbage collector gets to it
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
        if skip or (entry.stream_size is not None and entry.arrived < entry.stream_size):
            raise ApiConnectionError("content stream ended early")
        _check_content(entry)

    async def _append(self, chunk: bytes) -> None:
        entry = self._entry
        if not self._to_disk:
            entry.forget_before(entry.keep_from)  # a reader far ahead needs none of this
        while entry.pending_bytes >= self._settings.pending_limit:
            entry.drained = trio.Event()
            await entry.drained.wait()
        entry.pending.append(chunk)
        entry.pending_bytes += len(chunk)
        if entry.pending_bytes >= self._settings.flush_bytes:
            entry.flush_wanted.set()
        entry.wake()


def _check_content(entry: Entry) -> None:
    """A body that ended by its own framing against the size listed for it.

    Shorter than listed: perhaps cut by a proxy that re-framed it, so worth another attempt
    (resumed from where it ended; ``ContentMismatch`` is retryable, and when attempts run
    out the read fails with EIO rather than ending early). Longer than listed: the content
    wins, unless it looks like an error page, whose bytes must not pass for the file's.
    """
    listed, arrived = entry.expected_size, entry.arrived
    if listed is None or arrived == listed:
        return
    if arrived < listed:
        raise ContentMismatch(f"content ended at {arrived} of the {listed} bytes listed")
    if entry.suspect is not None:
        err = ContentMismatch(f"{arrived} bytes {entry.suspect} for a file listed at {listed}")
        err.retryable = False  # its bytes already went to the entry: no resuming past them
        raise err
