"""A spool file's I/O: sequential writes held in memory and written behind, with ``O_DIRECT``.

Every byte written through the mount is already a page of the mounted file in the kernel's
page cache; a buffered spool would hold it a second time, and on a large copy most of the
daemon's CPU went into filling those fresh pages. So a writer appending straight on (``cp``,
an editor saving a file) has its writes kept in memory and answered at once, and written
behind it in whole aligned blocks through a pooled staging buffer with ``O_DIRECT``
(``directio``), several writes per trip to a worker thread. The unaligned tail of such a run
stays in memory until more arrives, or until the content is wanted on disk (``settle``: a
flush, an fsync, a read, a truncate, a copy): then it is written with a plain buffered
``pwrite`` on the same file, which Linux keeps coherent with direct I/O, so the file always
has its exact size and is never padded. Any other write (a seek back, a hole, a small write
off the run) settles first and is a buffered ``pwrite``, as is everything on a file system
that refuses ``O_DIRECT``. At most ``HOLD_MAX`` bytes wait in memory: a writer past it waits
for the disk. A failed write behind (a full disk) is raised by the next write or settle.

Every trip to a worker thread costs GIL hand-offs on a loop busy with other work, so a trip
does all it can: a new file's spool is made on disk by its first trip that writes or settles
it (``later``), a settle writes the run's blocks and tail and then runs the caller's blocking
follow-up (the fsync and queue record: ``settle_then``), and ``release`` hands back the close
of the descriptors for the caller's next trip (the move into the cache).

All blocking calls run in worker threads. Knows nothing about FUSE or HTTP. Layer: write path.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from containerfs import directio
from containerfs.aio import in_thread

log = logging.getLogger(__name__)

# a run's aligned bytes start going to the disk once there are this many
FLUSH_AT = 2 << 20
# a writer waits while more than this is held in memory (not on disk yet)
HOLD_MAX = 4 << 20

Chunk = bytes | memoryview
T = TypeVar("T")


@dataclass(frozen=True)
class SpoolIOStats:
    direct_bytes: int  # written behind with O_DIRECT
    buffered_bytes: int  # written with a buffered pwrite (tails, random writes, fallback)
    direct_writes: int  # trips to a worker thread writing behind
    held_peak: int  # the most bytes held in memory, not on disk yet


class SpoolIO:
    """The I/O of one spool file: ``fd`` is its buffered descriptor, which the rest of the
    write path uses once the content is settled; a second, direct one writes behind."""

    def __init__(self, fd: int, direct_fd: int | None) -> None:
        self.fd = fd
        self._direct = direct_fd
        # (path, flags) of a file not made yet: the first trip to a thread that needs it
        # makes it (a new file's create then costs no trip of its own)
        self._unmade: tuple[str | os.PathLike[str], int] | None = None
        self._direct_done = False  # a direct write went through: EINVAL later is an error
        # the run: bytes from ``_start`` on, contiguous, not all on disk yet (oldest first)
        self._mem: collections.deque[Chunk] = collections.deque()
        self._start: int | None = None  # offset of the first byte in ``_mem``; None: no run
        self._held = 0  # bytes in ``_mem``
        self._clean = 0  # bytes at the start of ``_mem`` already on disk (a settled tail)
        self._flushing = False  # the task writing behind is running
        self._readers = 0  # reads in worker threads using the descriptors
        self._error: OSError | None = None  # a write behind failed: the content is broken
        self._changed = trio.Event()
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._direct_bytes = 0
        self._buffered_bytes = 0
        self._direct_writes = 0
        self._held_peak = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], flags: int) -> SpoolIO:
        """Open ``path`` (blocking: call it in a thread); direct writes where allowed."""
        io = cls.later(path, flags)
        io._make()
        return io

    @classmethod
    def later(cls, path: str | os.PathLike[str], flags: int) -> SpoolIO:
        """The I/O of a new, empty file at ``path``, opened by the first trip to a worker
        thread that writes or settles it: until then, nothing is on disk."""
        io = cls(-1, None)
        io._unmade = (path, flags)
        return io

    def _make(self) -> None:
        """Open the file if it is not yet (blocking; only a trip holding ``_flushing``)."""
        if self._unmade is None:
            return
        path, flags = self._unmade
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        try:
            direct = directio.open_direct(path, os.O_RDWR)
        except OSError:
            os.close(fd)
            raise
        self.fd, self._direct = fd, direct
        self._unmade = None

    def run_in(self, nursery: trio.Nursery | None) -> None:
        """Write behind as a task of ``nursery``; without one, every write is buffered."""
        self._nursery = nursery

    @property
    def end(self) -> int | None:
        """Where the run held in memory ends (None: no run)."""
        return None if self._start is None else self._start + self._held

    def statistics(self) -> SpoolIOStats:
        return SpoolIOStats(
            direct_bytes=self._direct_bytes,
            buffered_bytes=self._buffered_bytes,
            direct_writes=self._direct_writes,
            held_peak=self._held_peak,
        )

    # ---- writing ---------------------------------------------------------------------------
    async def write(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``: held in memory if it continues the run, else settled
        and written through the page cache. Raises the ``OSError`` of a failed write."""
        self._raise_error()
        if self._continues(offset, len(data)):
            if self._start is None:
                self._start = offset
            self._mem.append(data)
            self._held += len(data)
            self._held_peak = max(self._held_peak, self._held - self._clean)
            self._kick()
            while self._held - self._clean > HOLD_MAX and self._error is None and self._flushing:
                await self._wait()
            self._raise_error()
            return len(data)
        await self._settle_run()
        written = await in_thread(os.pwrite, self.fd, data, offset)
        self._buffered_bytes += written
        return written

    def _continues(self, offset: int, size: int) -> bool:
        direct = self._direct is not None or self._unmade is not None  # unmade: not refused yet
        if not direct or self._nursery is None or self._closed or not size:
            return False
        if self._start is not None:
            return offset == self._start + self._held
        # a run starts at a block boundary with at least a block (not a small random write)
        return offset % directio.ALIGN == 0 and size >= directio.ALIGN

    def _kick(self) -> None:
        """Start writing behind once there is enough to write."""
        if self._flushing or self._aligned_dirty() < FLUSH_AT:
            return
        assert self._nursery is not None  # no run without one (``_continues``)
        self._flushing = True
        self._nursery.start_soon(self._write_behind)

    def _aligned_dirty(self) -> int:
        return directio.align_down(self._held) if self._held > self._clean else 0

    async def _write_behind(self) -> None:
        try:
            while not self._closed and self._error is None and self._aligned_dirty() >= FLUSH_AT:
                await self._write_aligned(min(self._aligned_dirty(), HOLD_MAX))
        except OSError:
            pass  # kept in ``_error``: the writer's next write or settle raises it
        finally:
            self._flushing = False
            self._poke()

    async def _write_aligned(self, length: int) -> None:
        """Write the first ``length`` (aligned) bytes of the run, and drop them from memory."""
        await self._write_run(length, tail=False, then=_nothing)

    def _drop(self, length: int) -> None:
        """The first ``length`` bytes of the run are on disk: out of memory."""
        assert self._start is not None
        left = length
        while left:
            first = self._mem[0]
            if len(first) <= left:
                self._mem.popleft()
                left -= len(first)
            else:
                self._mem[0] = memoryview(first)[left:]
                left = 0
        self._start += length
        self._held -= length
        self._clean = max(0, self._clean - length)
        self._poke()

    async def _wait(self) -> None:
        await self._changed.wait()

    async def settle(self) -> None:
        """Put everything written so far in the file (the tail through the page cache)."""
        while self._flushing:
            await self._wait()
        self._raise_error()
        if self._held > self._clean or self._unmade is not None:
            await self.settle_then(_nothing)  # the file is made too: it is read by its path

    async def settle_then(self, then: Callable[[], T]) -> T:
        """Settle, then run ``then`` (blocking: an fsync, a record of the settled file) in the
        same trip to a worker thread, whose result it returns. A failed write raises its
        ``OSError`` and breaks the spool; what ``then`` raises is raised as it is."""
        while self._flushing:
            await self._wait()
        self._raise_error()
        if self._held <= self._clean and self._unmade is None:
            return await in_thread(then)
        self._flushing = True  # one writer from memory at a time: no task starts meanwhile
        try:
            return await self._write_run(directio.align_down(self._held), tail=True, then=then)
        finally:
            self._flushing = False
            self._poke()
            self._kick()  # appends that came meanwhile

    async def _write_run(self, aligned: int, *, tail: bool, then: Callable[[], T]) -> T:
        """One trip to a thread, holding ``_flushing``: the file made if it is not yet, the
        run's first ``aligned`` bytes written directly (buffered where ``O_DIRECT`` is
        refused), with ``tail`` the rest of the run through the page cache (it stays in
        memory too: the next append rewrites the block whole, directly), then ``then``. A
        failed write breaks the spool; what ``then`` raises is raised as it is."""
        start, chunks, held = self._start or 0, list(self._mem), self._held
        try_direct = not self._direct_done

        def work() -> tuple[bool, T | None, BaseException | None]:
            self._make()
            direct = self._direct if aligned else None
            went_direct = direct is not None
            if direct is not None:
                try:
                    _write_direct(direct, chunks, aligned, start)
                except OSError as err:
                    if not (try_direct and directio.refused(err)):
                        raise
                    went_direct, self._direct = False, None
                    os.close(direct)
                    log.info("no O_DIRECT on the spool's file system: buffered writes (%s)", err)
            if aligned and not went_direct:
                _write_buffered(self.fd, chunks, aligned, start)
            if tail and held > aligned:
                directio.pwrite_all(self.fd, _after(chunks, aligned), start + aligned)
            try:
                return went_direct, then(), None
            except BaseException as err:  # raised on the loop's side, once the run is updated
                return went_direct, None, err

        try:
            went_direct, value, failure = await in_thread(work)
        except OSError as err:
            self._error = err
            raise
        if aligned:
            if went_direct:
                self._direct_done = True
                self._direct_bytes += aligned
                self._direct_writes += 1
            else:
                self._buffered_bytes += aligned
            self._drop(aligned)
        if tail:
            rest = held - aligned
            self._buffered_bytes += rest
            self._clean = max(self._clean, rest)  # appends may have come meanwhile
        if failure is not None:
            raise failure
        return value  # type: ignore[return-value]

    async def _settle_run(self) -> None:
        """Settle and end the run: a write off it (or a truncate) follows. Appends arriving
        meanwhile (writes racing on one file) are settled too before the run is let go."""
        await self.settle()
        while self._held > self._clean:
            await self.settle()
        self._forget_run()

    def _forget_run(self) -> None:
        self._mem.clear()
        self._start = None
        self._held = self._clean = 0

    async def truncate(self, size: int) -> None:
        await self._settle_run()
        await in_thread(os.ftruncate, self.fd, size)

    # ---- reading ---------------------------------------------------------------------------
    async def read(self, offset: int, size: int) -> bytes:
        """Bytes of the file as written so far (settled first)."""
        await self.settle()
        return await self._using(lambda: os.pread(self.fd, size, offset))

    async def read_run(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` of what was written (never past its end), from
        memory if held, else from the disk (directly where allowed), without settling: a
        stream sends a run while it is still being written. Fewer bytes than asked at the
        start of what memory holds; empty at the end of the file."""
        if self._start is not None and offset >= self._start:
            return self._from_memory(offset - self._start, size)
        if self._unmade is not None:
            return b""  # nothing on disk yet: the run in memory is all there is
        if self._start is not None:
            size = min(size, self._start - offset)
        direct = self._direct if self._direct_done else None
        if direct is not None:
            return await self._using(lambda: directio.read_blocks(direct, size, offset))
        return await self._using(lambda: os.pread(self.fd, size, offset))

    def _from_memory(self, skip: int, size: int) -> bytes:
        for chunk in self._mem:
            if skip < len(chunk):
                piece = chunk[skip : skip + size]
                return piece if isinstance(piece, bytes) else bytes(piece)
            skip -= len(chunk)
        return b""

    async def _using(self, read: Callable[[], bytes]) -> bytes:
        if self._closed:
            raise OSError(9, "the spool was closed")  # EBADF: its fds may be another file's
        self._readers += 1
        try:
            return await in_thread(read)
        finally:
            self._readers -= 1
            self._poke()

    # ---- the end ---------------------------------------------------------------------------
    def fsync(self) -> None:
        """Make the settled content durable (blocking: call it in a thread)."""
        os.fsync(self.fd)

    async def aclose(self) -> None:
        """Close both descriptors once nothing uses them; what memory held is dropped (settle
        first to keep it)."""
        closing = await self.release()
        if closing.pending:
            await in_thread(closing)

    async def release(self) -> Closing:
        """Stop using the descriptors once nothing does (what memory held is dropped: settle
        first to keep it); the blocking call that closes them, for a worker thread, alone or
        with the work that follows (a move of the file): it closes them once, however often
        it is called, and must be called."""
        self._closed = True
        with trio.CancelScope(shield=True):  # never leave the descriptors open
            while self._flushing or self._readers:
                await self._changed.wait()
        self._forget_run()
        self._unmade = None  # never made now: nothing of it was written
        fds = [fd for fd in (self.fd, self._direct) if fd is not None and fd >= 0]
        self.fd, self._direct = -1, None
        return Closing(fds)

    def _raise_error(self) -> None:
        err = self._error
        if err is not None:  # a fresh exception each time: one instance raised twice grows
            raise OSError(err.errno, err.strerror)

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _nothing() -> None:
    return None


def _after(chunks: list[Chunk], skip: int) -> bytes:
    """The bytes of ``chunks`` (concatenated) past the first ``skip``."""
    for i, chunk in enumerate(chunks):
        if skip < len(chunk):
            return b"".join([chunk[skip:], *chunks[i + 1 :]])
        skip -= len(chunk)
    return b""


class Closing:
    """The blocking close of a released spool's descriptors: each closed (whatever the others
    do; the first error raised after), once, whichever caller gets there first."""

    def __init__(self, fds: list[int]) -> None:
        self._fds = fds

    @property
    def pending(self) -> bool:
        return bool(self._fds)

    def __call__(self) -> None:
        fds, self._fds = self._fds, []
        errors: list[OSError] = []
        for fd in fds:
            try:
                os.close(fd)
            except OSError as err:
                errors.append(err)
        if errors:
            raise errors[0]


def _write_direct(fd: int, chunks: list[Chunk], length: int, offset: int) -> None:
    directio.write_blocks(fd, chunks, length, offset, pad=False)


def _write_buffered(fd: int, chunks: list[Chunk], length: int, offset: int) -> None:
    for chunk in chunks:
        if not length:
            return
        piece = chunk[:length]
        directio.pwrite_all(fd, piece, offset)
        offset += len(piece)
        length -= len(piece)
