"""One upload of one version of a file, as an object with explicit states; and the growing
spool it may stream from while the file is still being written.

A file written from offset 0 straight on starts its upload at its first write: the request
body (``SpoolFeed.chunks``) reads the spool as the writes arrive and ends when the file is
flushed, so that ``close`` waits only for the tail. Anything else (a write elsewhere, a
truncate, a second writer, a rename) aborts the body: the request breaks off unfinished, the
server stores nothing, and the flush uploads the spool as a whole instead. Knows nothing about
FUSE or HTTP. Layer: write path.
"""

from __future__ import annotations

import collections
import enum
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Protocol

import trio

from containerfs.config import STREAM_CHUNK, STREAM_MEMORY
from containerfs.errors import ApiError, StreamAborted
from containerfs.models import ContainerFile, ContainerId

log = logging.getLogger(__name__)


class JobState(enum.Enum):
    """Where an upload is: its content still being written (``SPOOLING``), sent while being
    written (``STREAMING``), waiting for its turn (``QUEUED``), being sent (``UPLOADING``),
    on the server (``DONE``), or given up for now (``FAILED``: retried by the queue)."""

    SPOOLING = "spooling"
    STREAMING = "streaming"
    QUEUED = "queued"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"


class ContentSource(Protocol):
    """Where a stream reads what its memory no longer holds (``SpoolIO.read_run``): up to
    ``size`` bytes written at ``offset``; ``OSError`` once the spool is closed."""

    async def read_run(self, offset: int, size: int) -> bytes: ...


class SpoolFeed:
    """The bytes of a spool from offset 0 up to what has been written contiguously, read as
    they arrive; the stream ends at ``end`` and raises ``StreamAborted`` after ``abort``."""

    def __init__(self) -> None:
        self._source: ContentSource | None = None  # from ``attach`` until ``close``
        self._mark = 0  # bytes written contiguously from 0, and no write in flight below
        self._inflight = 0
        # the latest writes' bytes (offset, data), so that a body keeping up with the writer
        # sends them from memory, without reading them back; at most STREAM_MEMORY bytes
        self._recent: collections.deque[tuple[int, bytes]] = collections.deque()
        self._recent_bytes = 0
        self._final: int | None = None
        self._aborted = False
        self._changed = trio.Event()  # new bytes to send, or the end, or an abort
        self._attempts = 0
        self._sent = 0  # bytes handed to the request so far
        self._progress = trio.Event()  # ``_sent`` moved, or the body ended or was given up
        self._paced = True  # writers wait for the body (``keep_up``) until it stalls

    @property
    def ended(self) -> int | None:
        """The content's size once the body was ended, else None."""
        return self._final

    @property
    def aborted(self) -> bool:
        return self._aborted

    def writing(self, offset: int, end: int) -> bool:
        """A write of ``offset``..``end`` starts, the spool's end being ``end`` before it;
        False (and the feed aborted) unless it appends right at the end."""
        if self._aborted or self._final is not None or offset != end:
            self.abort()
            return False
        self._inflight += 1
        return True

    def written(self, size: int, offset: int, data: bytes) -> None:
        """A write ``writing`` accepted (``data`` at ``offset``) is on disk; the spool's size
        is now ``size``."""
        self._inflight -= 1
        if not self._aborted:
            self._remember(offset, data)
        if self._inflight == 0 and not self._aborted:
            # writes overlap only while appending: with none in flight, all below size are done
            self._mark = size
            self._poke()

    def _remember(self, offset: int, data: bytes) -> None:
        if self._recent and self._recent[-1][0] + len(self._recent[-1][1]) != offset:
            self._forget()  # writes finished out of order: read them back from the spool
        if not data or len(data) > STREAM_MEMORY:
            return
        self._recent.append((offset, data))
        self._recent_bytes += len(data)
        while self._recent_bytes > STREAM_MEMORY:
            self._recent_bytes -= len(self._recent.popleft()[1])

    def _forget(self) -> None:
        self._recent.clear()
        self._recent_bytes = 0

    def _from_memory(self, pos: int) -> bytes | None:
        """The bytes at ``pos`` if a recent write holds them (older ones are dropped)."""
        while self._recent and self._recent[0][0] + len(self._recent[0][1]) <= pos:
            self._recent_bytes -= len(self._recent.popleft()[1])
        if self._recent and self._recent[0][0] == pos:
            return self._recent[0][1]
        return None

    def end(self, size: int) -> bool:
        """The content is complete at ``size``: the body ends there. False (and the feed
        aborted) if that is not what was fed: a write still in flight, or a hole."""
        if self._aborted or self._inflight or size != self._mark:
            self.abort()
            return False
        self._final = size
        self._poke()
        return True

    def abort(self) -> None:
        self._aborted = True
        self._forget()
        self._poke()
        self._moved()

    async def keep_up(self, *, ahead: int, patience: float) -> None:
        """Wait while the body is more than ``ahead`` bytes behind what was written, so that
        it sends from memory what a writer outrunning the link would make it read back, and
        the CPU goes to the upload that ``close`` waits for anyway. A body that makes no
        progress for ``patience`` seconds (a stalled server) is not waited for again."""
        while self._paced and not self._aborted and self._mark - self._sent > ahead:
            with trio.move_on_after(patience) as waited:
                await self._progress.wait()
            if waited.cancelled_caught:
                self._paced = False
                log.info("a streamed upload stalled: its writer goes on without it")

    def _moved(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def chunks(self) -> AsyncIterator[bytes]:
        """The body of the one attempt, from offset 0. A second attempt is refused: a stream
        cut while it waited for writes (a writer pausing past the I/O timeout) or by the
        network would send everything again and wait again; the flush's whole upload, with
        its own retries, is the better second try."""
        self._attempts += 1  # counted when an attempt asks for its body, read or not
        if self._attempts > 1:
            self.abort()
            # raised while the retry builds its request: nothing of it is sent
            raise StreamAborted("a streamed upload is not sent twice")
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        pos = 0
        while True:
            if self._aborted:
                raise StreamAborted("the streamed upload was given up")
            if pos < self._mark:
                held = self._from_memory(pos)
                if held is not None and pos + len(held) <= self._mark:
                    pos += len(held)
                    self._sent = pos
                    self._moved()
                    yield held
                    continue
                data = await self._read_back(pos, min(STREAM_CHUNK, self._mark - pos))
                if not data:  # shrunk or closed under us: not the content being written
                    self.abort()
                    continue
                pos += len(data)
                self._sent = pos
                self._moved()
                yield data
            elif self._final is not None and pos >= self._final:
                return
            else:
                await self._changed.wait()

    async def _read_back(self, pos: int, want: int) -> bytes:
        if self._source is None:
            return b""
        try:
            return await self._source.read_run(pos, want)
        except OSError as err:
            log.info("a streamed upload cannot read its spool back: %s", err)
            return b""

    def attach(self, source: ContentSource) -> None:
        """Read what memory no longer holds from ``source`` from now on."""
        self._source = source

    def close(self) -> None:
        self._source = None
        self._paced = False  # the request is over: nobody is to wait for it
        self._moved()


class StreamSender(Protocol):
    """The API call a streaming upload makes (``ApiClient.upload_stream``)."""

    async def upload_stream(
        self,
        container_id: ContainerId,
        body: Callable[[], AsyncIterable[bytes]],
        *,
        filename: str,
        size: Callable[[], int | None],
    ) -> ContainerFile: ...


class UploadJob:
    """One upload of a file's content to ``path`` in ``cid``: its state, its result.

    A job made while the file is written (``spooling``) carries a ``SpoolFeed``; ``start``
    sends it while it grows (``streaming``), ``finish`` ends it (``uploading``) and waits for
    the answer (``done``), ``cancel`` gives it up (``failed``: the spool is uploaded whole).
    """

    def __init__(self, cid: ContainerId, path: str, *, feed: SpoolFeed | None = None) -> None:
        self.cid = cid
        self.path = path
        self.feed = feed
        self.state = JobState.SPOOLING if feed is not None else JobState.QUEUED
        self.result: ContainerFile | None = None
        self.error: Exception | None = None
        self._finished = trio.Event()

    def __repr__(self) -> str:
        return f"<UploadJob {self.cid}/{self.path} {self.state.value}>"

    @property
    def started(self) -> bool:
        return self.state is not JobState.SPOOLING and self.state is not JobState.QUEUED

    def start(self, nursery: trio.Nursery, sender: StreamSender, source: ContentSource) -> None:
        """Send the feed's content (read back from ``source``) while it is being written."""
        assert self.feed is not None and self.state is JobState.SPOOLING
        self.feed.attach(source)
        self.state = JobState.STREAMING
        nursery.start_soon(self._stream, sender, self.feed)

    async def _stream(self, sender: StreamSender, feed: SpoolFeed) -> None:
        try:
            self.result = await sender.upload_stream(
                self.cid, feed.chunks, filename=self.path, size=lambda: feed.ended
            )
            self.state = JobState.DONE
        except StreamAborted as err:
            self.error, self.state = err, JobState.FAILED
        except ApiError as err:
            log.info("streaming upload of %s/%s failed: %s", self.cid, self.path, err)
            self.error, self.state = err, JobState.FAILED
            feed.abort()  # the writes that follow have nobody to feed
        finally:
            feed.close()
            self._finished.set()

    def abort(self) -> None:
        """Give the stream up (its request breaks off); ``finish`` then answers None."""
        if self.feed is not None:
            self.feed.abort()

    async def finish(self, size: int) -> ContainerFile | None:
        """End the body at ``size`` and wait for the server's answer; None if the stream was
        given up or failed (the caller uploads the spool instead)."""
        if not self.started:
            return None
        assert self.feed is not None
        if self.feed.end(size) and self.state is JobState.STREAMING:
            self.state = JobState.UPLOADING
        await self._finished.wait()
        return self.result

    async def cancel(self) -> None:
        """Give the stream up and wait until its request is broken off."""
        self.abort()
        if self.started:
            await self._finished.wait()
