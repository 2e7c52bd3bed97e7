"""Open files, without FUSE: what ``open``, ``create``, ``read``, ``write``, ``flush``,
``fsync``, ``release`` and a truncating ``setattr`` do with a node's handle, the reader and
the writer, and whether the kernel may keep a file's pages from one open to the next.

Part of the FUSE adapter's package (no pyfuse3 import): ``operations`` resolves inodes and
names, asks here, and turns the answer into pyfuse3's records. A refusal is a
``ContainerFsError`` carrying its errno, which ``operations.guarded`` maps like any other.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass

from containerfs.errors import ApiError, ContainerExpired, ContainerFsError, PayloadTooLarge
from containerfs.fs.handles import Handle, HandleTable
from containerfs.fs.sizes import Sizes
from containerfs.fs.walks import Walks
from containerfs.ns.inodes import Node
from containerfs.ns.namespace import Namespace
from containerfs.read.reader import Reader
from containerfs.write.spool import spool_of
from containerfs.write.writer import Writer

log = logging.getLogger("containerfs.fs.operations")  # the adapter's log, as before the split


def refused(code: int) -> ContainerFsError:
    """The error that answers an operation with ``code`` (an errno)."""
    return ContainerFsError.with_errno(code)


def require_writable(ns: Namespace, node: Node) -> None:
    """EROFS unless ``node`` may be changed (a read-only mount, an expired container)."""
    if not ns.writable(node):
        raise refused(errno.EROFS)


@dataclass(frozen=True)
class Opened:
    """What the kernel is told of a file just opened."""

    fh: int
    keep_cache: bool = False  # its pages from the last open still hold this content
    direct_io: bool = False  # its size is not known: reads are not cut at st_size


class OpenFiles:
    """The open files of a mount: their handles (numbered in ``handles``, which the open
    directories share), and the content whose pages the kernel may keep, by inode."""

    def __init__(
        self,
        ns: Namespace,
        reader: Reader,
        writer: Writer,
        *,
        sizes: Sizes,
        walks: Walks,
        handles: HandleTable,
    ) -> None:
        self._ns = ns
        self._reader = reader
        self._writer = writer
        self._sizes = sizes
        self._walks = walks
        self._handles = handles
        self._kept_cache: dict[int, str] = {}  # inode -> file id whose pages the kernel may keep

    def handle(self, fh: int) -> Handle:
        handle = self._handles.file(fh)
        if handle is None:
            raise refused(errno.EBADF)
        return handle

    async def open(self, node: Node, flags: int) -> Opened:
        """Open the file ``node`` (not a directory) with ``flags``."""
        while node.settling is not None:
            await node.settling.wait()
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if writable:
            require_writable(self._ns, node)
        if not flags & os.O_TRUNC:  # the content is read: its size must be known first
            await self._sizes.ensure(node)
        handle = Handle(node, writable, append=bool(flags & os.O_APPEND))
        # counted before the first await: a release finishing meanwhile must not drop the
        # spool this open is about to share (it would then download what it just uploaded)
        node.opens += 1
        try:
            if writable:
                handle.spool = await self._writer.open(node, truncate=bool(flags & os.O_TRUNC))
            remote = node.remote
            if node.spool is None and remote is not None:
                # a listed size the content proved wrong: expect the proved one, or every
                # open would take the cached copy for stale and download it again
                size = remote.bytes if remote.bytes is None else self._ns.size(node)
                handle.read = await self._reader.open(remote.container_id, remote.id, size)
                if not writable:  # after its own download started: a prefetch never goes first
                    self._prefetch_after(node)
        except BaseException:
            node.opens -= 1
            raise
        fh = self._handles.add_file(handle)
        # keep the page cache only while the content is the server version seen last time
        current = remote.id if remote is not None and node.spool is None else ""
        keep = bool(current) and self._kept_cache.get(node.inode) == current
        self._kept_cache[node.inode] = current
        return Opened(fh, keep_cache=keep, direct_io=not self._ns.size_known(node))

    def _prefetch_after(self, node: Node) -> None:
        """The next files of a directory walk that ``node``'s open continues, downloaded now."""
        upcoming = self._walks.opened(node)
        if upcoming:
            self._reader.prefetch(
                (n.remote.container_id, n.remote.id, n.remote.bytes)
                for n in upcoming
                if n.remote is not None and n.spool is None and not n.gone
            )

    async def create(self, parent: Node, name: str, mode: int, flags: int) -> tuple[Node, Opened]:
        """A new file ``name`` in ``parent`` (where nothing has that name), open for writing."""
        node = self._ns.new_file(parent, name)
        node.mode = stat.S_IMODE(mode)
        self._writer.classify(node)
        spool = await self._writer.open(node, truncate=True)
        node.opens += 1
        fh = self._handles.add_file(
            Handle(node, True, spool=spool, append=bool(flags & os.O_APPEND))
        )
        self._kept_cache[node.inode] = ""
        return node, Opened(fh)

    async def read(self, handle: Handle, off: int, size: int) -> tuple[bytes, bool]:
        """Up to ``size`` bytes at ``off``, and whether the read proved the size shown wrong."""
        node = handle.node
        if handle.spool is not None:
            return await self._writer.read(handle.spool, off, size), False
        spool = spool_of(node)
        if spool is not None and handle.read is None:
            return await self._writer.read(spool, off, size), False
        if handle.read is None:
            return b"", False
        data = await self._reader.read(handle.read, off, size)
        return data, self._sizes.refresh(node)

    async def write(self, handle: Handle, off: int, buf: bytes) -> int:
        if handle.spool is None:
            raise refused(errno.EBADF)
        handle.changed = True
        return await self._writer.write(handle.node, handle.spool, off, buf, append=handle.append)

    async def truncate(self, node: Node, size: int, fh: int | None) -> None:
        """``node`` cut or grown to ``size``, through the open handle ``fh`` if it has one."""
        handle = self._handles.file(fh) if fh is not None else None
        if handle is not None and handle.spool is not None:
            await self._writer.truncate(node, size, handle.spool)
            handle.changed = True
        else:
            await self._writer.truncate(node, size)

    async def flush(self, handle: Handle) -> None:
        # upload here: close() waits for flush, while errors from release() are thrown away.
        # A handle that changed nothing yet leaves it to release(): a shell's dup2 flushes
        # before the first write, and `echo x > f` would upload an empty file first.
        if handle.spool is not None and handle.changed:
            # with write-back, a close only makes the content durable and queues its upload
            await self._upload(handle, wait=False)

    async def fsync(self, handle: Handle) -> None:
        if handle.spool is not None:
            await self._upload(handle)

    async def _upload(self, handle: Handle, *, wait: bool = True) -> None:
        """Flush a handle's spool. A failed upload is EIO at close() and fsync(): the data is
        kept and retried, and EINVAL or EAGAIN would tell the program something else. Only
        an expired container (EROFS) and a file over the size limit (EFBIG) say more."""
        assert handle.spool is not None
        try:
            await self._writer.flush(handle.node, handle.spool, wait=wait)
        except (ContainerExpired, PayloadTooLarge):
            raise
        except ApiError as err:
            log.debug("upload at flush: %s", err)
            raise refused(errno.EIO) from err

    async def release(self, fh: int) -> None:
        handle = self._handles.pop_file(fh)
        if handle is None:
            return
        node = handle.node
        node.opens -= 1
        if handle.read is not None:
            await self._reader.release(handle.read)
        if handle.spool is not None:
            await self._writer.release(node, handle.spool)
        else:
            await self._writer.close_if_idle(node)
