"""Spools and the write path's ports: a node's local content (``Spool``) and its files in the
state directory (``SpoolFiles``, all blocking I/O in worker threads), and the parts of the API
client and the reader that the write path uses (``Uploader``, ``ContentFetcher``). Layer:
write path.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import trio

from containerfs.aio import in_thread
from containerfs.errors import SpoolError
from containerfs.models import ContainerFile, ContainerId, FileId
from containerfs.ns.inodes import Node
from containerfs.state import PendingUpload, State
from containerfs.write.job import StreamSender, UploadJob
from containerfs.write.spoolio import SpoolIO

T = TypeVar("T")

# a server file: its container and id (a moved file may supersede ids of another container)
ServerId = tuple[ContainerId, FileId]


class Uploader(StreamSender, Protocol):
    async def upload_file(
        self, container_id: ContainerId, source: str | os.PathLike[str], *, filename: str
    ) -> ContainerFile: ...

    async def delete_file(self, container_id: ContainerId, file_id: FileId) -> None: ...

    async def find_upload(
        self, container_id: ContainerId, filename: str, *, size: int, since: float, old: str | None
    ) -> ContainerFile | None: ...


class ContentFetcher(Protocol):
    async def fetch(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Path: ...

    def unpin(self, file_id: FileId) -> None: ...

    def invalidate(self, file_id: FileId) -> None: ...

    async def adopt(
        self, file_id: FileId, source: Path, *, first: Callable[[], None] | None = None
    ) -> bool:
        """Take ``source`` as the cached content of ``file_id``; ``first`` (blocking) runs in
        the same trip to a thread, before the move, if the move is tried."""
        ...


@dataclass(eq=False)
class Spool:
    """A node's local content. ``version`` counts writes, so an upload knows if it is stale.
    Its file's I/O is ``io``; ``fd`` reads it as settled (``SpoolFiles.settle``)."""

    path: Path
    io: SpoolIO
    size: int = 0
    dirty: bool = False
    version: int = 0
    pending_id: str | None = None
    replaces: list[ServerId] = field(default_factory=list)  # server files it supersedes
    writers: int = 0  # open handles writing to it
    closed: bool = False  # its fd is closed (discarded, or handed to the cache)
    job: UploadJob | None = None  # the upload streaming from it while it is written
    durable: tuple[int, str, str] | None = None  # (version, cid, path) last fsync'd and queued

    @property
    def fd(self) -> int:
        return self.io.fd

    def abort_stream(self) -> None:
        """Its content is no longer one straight write from offset 0: stop streaming it."""
        if self.job is not None:
            self.job.abort()

    # a write to it failed (the state disk is full): its content is incomplete, never
    # uploaded, and it is no longer the node's content; the errno its writer gets
    failed: int | None = None

    def check(self) -> None:
        """Raise the error of a failed spool (``SpoolError``), so its handle gets it again."""
        if self.failed is not None:
            raise SpoolError(f"the spool {self.path.name} could not be written", errno_=self.failed)


def spool_of(node: Node) -> Spool | None:
    """``node``'s local content as the write path's ``Spool`` (the namespace types it only as
    ``LocalContent``, since it may not import this layer). Only the write path sets it, and
    only to a ``Spool``: anything else is a bug, raised here rather than misread later."""
    spool = node.spool
    if spool is None or isinstance(spool, Spool):
        return spool
    raise TypeError(f"inode {node.inode}: local content is a {type(spool).__name__}, not a Spool")


class SpoolFiles:
    """The spool files in the state directory: made, copied, reopened, written, discarded."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._open = 0
        self._nursery: trio.Nursery | None = None

    def run_in(self, nursery: trio.Nursery) -> None:
        """Spools write behind as tasks of ``nursery`` (before it, every write is buffered)."""
        self._nursery = nursery

    @property
    def open_count(self) -> int:
        """Spools whose fd is open."""
        return self._open

    async def create(self, source: Path | None) -> Spool:
        """A new spool file, empty or a copy of ``source`` (``SpoolError``: none is left). An
        empty one is made on disk by its first trip to a thread that writes or settles it:
        a new file's create costs no trip of its own (a failure to make it is then raised
        by that write or settle, as a full disk is)."""
        path = self._state.new_spool_path()
        if source is None:
            io = SpoolIO.later(path, os.O_RDWR | os.O_CREAT)
            io.run_in(self._nursery)
            self._open += 1
            return Spool(path, io, 0)

        def make() -> tuple[SpoolIO, int]:
            try:
                if source is not None:
                    shutil.copyfile(source, path)
                io = SpoolIO.open(path, os.O_RDWR | os.O_CREAT)
            except OSError as err:
                path.unlink(missing_ok=True)  # a partial copy on a full disk
                raise _spool_error("cannot make a spool file", err) from err
            return io, os.fstat(io.fd).st_size

        io, size = await in_thread(make)
        io.run_in(self._nursery)
        self._open += 1
        return Spool(path, io, size)

    def close(self, spool: Spool) -> SpoolIO | None:
        """Mark ``spool`` closed, once: the I/O to ``aclose``, or None if someone already did.

        Called before the first await, so that two tasks (a release and an unlink racing)
        never close the same fd twice: by then it may be another file's.
        """
        if spool.closed:
            return None
        spool.abort_stream()
        spool.closed = True
        self._open -= 1
        return spool.io

    async def discard(self, spool: Spool) -> None:
        """Delete a spool nobody needs any more (and its pending upload, if any)."""
        io = self.close(spool)
        if io is None:
            return
        pid, spool.pending_id = spool.pending_id, None
        closing = await io.release()

        def gone() -> None:  # one trip: the record first, so no record outlives its file
            try:
                if pid is not None:
                    self._state.drop_pending(pid)
            except BaseException:
                closing()  # the file stays for the record's resume
                raise
            try:
                closing()
            finally:
                spool.path.unlink(missing_ok=True)

        await in_thread(gone)

    async def reopen(self, item: PendingUpload, replaces: list[ServerId]) -> Spool:
        """The spool of an upload a previous mount queued: dirty, and recorded as ``item``."""
        io = await in_thread(SpoolIO.open, item.spool, os.O_RDWR)
        io.run_in(self._nursery)
        size = os.fstat(io.fd).st_size
        self._open += 1
        return Spool(item.spool, io, size, True, 1, item.id, replaces)

    async def settle(self, spool: Spool) -> None:
        """Everything written to ``spool`` is in its file (``fd``, ``path``), exactly: before
        it is read, copied, made durable or uploaded. ``SpoolError``: it could not be (a full
        state disk), and the spool is broken for good."""
        spool.check()
        try:
            await spool.io.settle()  # no trip to a thread when all is in the file already
        except OSError as err:
            raise self._failed(spool, err) from err

    async def settle_then(self, spool: Spool, then: Callable[[], T]) -> T:
        """``settle``, then the blocking ``then`` in the same trip to a worker thread (what it
        raises is raised as it is)."""
        spool.check()

        def guarded() -> tuple[T | None, Exception | None]:
            try:
                return then(), None
            except Exception as err:  # not a write of the spool's: it stays whole
                return None, err

        try:
            value, failure = await spool.io.settle_then(guarded)
        except OSError as err:
            raise self._failed(spool, err) from err
        if failure is not None:
            raise failure
        return value  # type: ignore[return-value]

    async def truncate(self, spool: Spool, size: int) -> None:
        spool.abort_stream()
        spool.check()
        try:
            await spool.io.truncate(size)
        except OSError as err:
            raise self._failed(spool, err) from err
        spool.size = size
        spool.dirty = True
        spool.version += 1

    async def write(self, spool: Spool, offset: int, data: bytes, *, append: bool = False) -> int:
        spool.check()
        if append:
            offset = spool.size  # O_APPEND: the end of this writer's content
        # grow before the await, so that concurrent appends get distinct offsets
        spool.size = max(spool.size, offset + len(data))
        try:
            # a write continuing a run is held and written behind: a full disk is then
            # raised by a later write, or by the flush's settle
            written = await spool.io.write(offset, data)
        except OSError as err:
            raise self._failed(spool, err) from err
        spool.dirty = True
        spool.version += 1
        return written

    async def read(self, spool: Spool, offset: int, size: int) -> bytes:
        await self.settle(spool)
        return await spool.io.read(offset, size)

    @staticmethod
    def _failed(spool: Spool, err: OSError) -> SpoolError:
        """A write to ``spool`` failed: it is broken for good (see ``Spool.failed``)."""
        error = _spool_error(f"cannot write the spool {spool.path.name}", err)
        spool.failed = error.errno
        return error


def _spool_error(what: str, err: OSError) -> SpoolError:
    return SpoolError(f"{what}: {err.strerror or err}", errno_=err.errno or errno.EIO)
