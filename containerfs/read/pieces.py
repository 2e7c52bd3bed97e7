"""Parallel ranged reads: a large file's download as several concurrent ranged GETs (pieces)
into the one entry, when the server honours ``Range``.

Whether it does is learned, never assumed: the first piece of a large file asks for
``bytes=0-N``; a ``206`` with ``Content-Range`` says yes (for the whole mount), a ``200`` says
no, and that answer is simply read to its end as the one stream it is (no request lost). Once
known, a download keeps a window of pieces in flight ahead of the one being appended: the
pieces grow from ``PIECE_MIN`` to ``PIECE_MAX`` and the window from one to ``WINDOW_MAX``
while the data path keeps up with them and waits for the network (as mountpoint-s3's
prefetcher grows its window), bounded in bytes so the
daemon's memory stays flat. The piece at the head streams straight into the entry as it
arrives (the first byte costs one request, as with one stream); the others buffer their own
bytes until their turn. Any failure ends the parallel attempt: the caller resumes with one
stream from the frontier. Layer: read path.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio

from containerfs.errors import ApiConnectionError
from containerfs.read.entries import Entry

log = logging.getLogger(__name__)

#: Files smaller than this are fetched by one stream: a second request would cost more than
#: it saves.
PARALLEL_MIN = 8 << 20
#: The first piece, and the smallest: the head of the file arrives as fast as one stream's.
PIECE_MIN = 1 << 20
#: Pieces double up to this size while the data path waits for the network ...
PIECE_MAX = 4 << 20
#: ... and so does the number in flight, the head included, up to this ...
WINDOW_MAX = 8
#: ... and this many bytes (they buffer in memory until their turn).
WINDOW_BYTES = 32 << 20


class RangeSupport:
    """What this mount learnt about ``Range``: None until a server answered a ranged GET."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.honoured: bool | None = None
        self.pieces = 0  # ranged GETs made for pieces

    def worth_trying(self, remaining: int) -> bool:
        return self.enabled and self.honoured is not False and remaining >= PARALLEL_MIN


class RangedStream(Protocol):
    """The part of a content answer a piece reads (``download.DownloadStream`` has it)."""

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int | None: ...
    @property
    def suspect(self) -> str | None: ...
    def chunks(self) -> AsyncIterator[bytes]: ...


OpenRange = Callable[[int, int], AbstractAsyncContextManager[RangedStream]]


class _Piece:
    """One ranged GET's bytes [start, end), as they arrive: at most ``PIECE_MAX`` of them wait
    in memory (a 200 answer makes the head piece the whole file: it must not outrun the disk)."""

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.changed = trio.Event()
        self.room = trio.Event()

    async def put(self, chunk: bytes) -> None:
        while self.buffered >= PIECE_MAX:
            self.room = trio.Event()
            await self.room.wait()
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        self.changed.set()

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        self.room.set()
        return chunk


Append = Callable[[bytes], Awaitable[None]]  # waits while the tail is full (backpressure)


class Pieces:
    """One download's remaining bytes as a growing window of concurrent ranged GETs."""

    def __init__(
        self,
        entry: Entry,
        size: int,
        *,
        open_range: OpenRange,
        append: Append,
        support: RangeSupport,
        on_bytes: Callable[[int], None],
    ) -> None:
        self._entry = entry
        self._size = size
        self._open = open_range
        self._append = append
        self._support = support
        self._on_bytes = on_bytes
        self._window = 1
        self._piece_len = PIECE_MIN

    async def run(self) -> None:
        """Fetch [entry.arrived, size) into the entry (ApiError when a piece failed: the
        caller resumes from the frontier with one stream)."""
        queue: deque[_Piece] = deque()
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            try:
                await self._assemble(nursery, queue)
            except Exception as exc:  # raised out of the nursery, not as an exception group
                failure = exc
            nursery.cancel_scope.cancel()  # the pieces still in flight are not needed any more
        if failure is not None:
            raise failure

    async def _assemble(self, nursery: trio.Nursery, queue: deque[_Piece]) -> None:
        next_start = self._entry.arrived
        while True:
            next_start = self._schedule(nursery, queue, next_start)
            if not queue:
                return
            starved = await self._drain(queue[0])
            next_start = max(next_start, queue.popleft().end)  # a 200 took it all
            if starved and self._support.honoured:
                # the data path waited for the network, not the other way round: larger
                # pieces, more of them in flight
                self._window = min(self._window * 2, WINDOW_MAX)
                self._piece_len = min(self._piece_len * 2, PIECE_MAX)

    def _schedule(self, nursery: trio.Nursery, queue: deque[_Piece], next_start: int) -> int:
        # until a 206 proved Range, only the one (first) piece is in flight
        window = self._window if self._support.honoured else 1
        in_flight = sum(p.end - p.start for p in queue)
        while next_start < self._size and len(queue) < window:
            length = min(self._piece_len, self._size - next_start)
            if queue and in_flight + length > WINDOW_BYTES:
                break
            piece = _Piece(next_start, next_start + length)
            queue.append(piece)
            in_flight += length
            nursery.start_soon(self._fetch, piece)
            next_start = piece.end
        return next_start

    async def _drain(self, piece: _Piece) -> bool:
        """Append the head piece's bytes to the entry as they come; whether it had to wait
        for the network (the appends waiting for the disk do not count)."""
        starved = False
        while True:
            while piece.chunks:
                await self._append(piece.take())
            if piece.error is not None:
                raise piece.error
            if piece.done:
                return starved
            starved = True
            piece.changed = trio.Event()
            await piece.changed.wait()

    async def _fetch(self, piece: _Piece) -> None:
        try:
            await self._receive(piece)
        except Exception as exc:  # handed to the drain, which raises it in the download task
            piece.error = exc
        piece.done = True
        piece.changed.set()

    async def _receive(self, piece: _Piece) -> None:
        self._support.pieces += 1
        async with self._open(piece.start, piece.end) as stream:
            entry = self._entry
            entry.suspect = entry.suspect or stream.suspect  # one suspect piece taints all
            ranged = stream.start == piece.start and stream.end == piece.end
            if not ranged:
                if self._support.honoured is not None or stream.start != 0 or piece.start:
                    raise ApiConnectionError(
                        f"asked for bytes {piece.start}-{piece.end - 1},"
                        f" got {stream.start}-{stream.end}"
                    )
                # the first piece, answered with the whole file (200): this answer is the
                # one stream of the download, read to its end (no request lost)
                self._support.honoured = False
                log.info("server ignores Range: one stream per download")
                piece.end = self._size
            elif self._support.honoured is None:
                log.info("server honours Range: large files download in parallel pieces")
                self._support.honoured = True
            got = 0
            async for chunk in stream.chunks():
                self._on_bytes(len(chunk))
                if got + len(chunk) > piece.end - piece.start:
                    raise ApiConnectionError("an answer longer than the range asked")
                got += len(chunk)
                await piece.put(chunk)
            if got != piece.end - piece.start:
                raise ApiConnectionError("a ranged answer ended early")
