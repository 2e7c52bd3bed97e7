"""The pyfuse3 adapter: inode <-> node, file handles, errors -> errno.

Thin on purpose: the namespace, reader and writer do the work. Every handler is guarded:
``ContainerFsError`` becomes ``FUSEError(err.errno)``; anything unexpected is logged and becomes
``EIO`` (an exception escaping a handler would end ``pyfuse3.main`` and kill the mount).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from containerfs.config import DEFAULT_PROGRESS
from containerfs.errors import (
    ApiError,
    ContainerExpired,
    ContainerFsError,
    PayloadTooLarge,
    SpoolError,
)
from containerfs.fs.attrs import entry_attributes, statfs_data, xattrs
from containerfs.fs.handles import Handle, HandleTable
from containerfs.fs.sizes import Sizes
from containerfs.fs.walks import Walks
from containerfs.ns.inodes import Kind, Node
from containerfs.ns.namespace import Namespace
from containerfs.paths import NAME_MAX, reserved_container_name
from containerfs.read.reader import Reader
from containerfs.write.writer import Writer

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def guarded(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Map errors to errno once, here; never let an exception end ``pyfuse3.main``."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except ContainerFsError as err:
            log.debug("%s: %s", fn.__name__, err)
            raise pyfuse3.FUSEError(err.errno) from err
        except trio.Cancelled:
            raise
        except Exception as err:
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from err

    return wrapper


def _fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        namespace: Namespace,
        reader: Reader,
        writer: Writer,
        *,
        entry_timeout: float = 1.0,
        attr_timeout: float = 1.0,
        negative_timeout: float = 1.0,
        sizes_wait: float = DEFAULT_PROGRESS.budget,
        container_defaults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.ns = namespace
        self.reader = reader
        self.writer = writer
        # a listing waits for its files' sizes no longer than one API call may stall
        self.sizes = Sizes(reader, give_up_after=sizes_wait)
        self.walks = Walks()
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout
        self.negative_timeout = negative_timeout
        self.container_defaults = container_defaults or {}
        self._open = HandleTable()
        self._kept_cache: dict[int, str] = {}  # inode -> file id whose pages the kernel may keep
        self._serving = False  # a kernel session exists (set by ``init``)

    def init(self) -> None:
        self._serving = True

    # ---- helpers -----------------------------------------------------------------------
    def _node(self, inode: int) -> Node:
        node = self.ns.node(inode)
        if node is None:
            raise _fail(errno.ENOENT)
        return node

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        if self.sizes.unknown(node) is not None:
            # never show a size that is not known: tools copy exactly st_size bytes
            log.error("attributes of inode %d asked before its size was learned", node.inode)
            raise _fail(errno.EIO)
        return self._to_entry(node)

    async def _sized_entry(self, node: Node) -> pyfuse3.EntryAttributes:
        await self.sizes.ensure(node)
        self.sizes.refresh(node)
        return self._entry(node)

    def _listed_entry(self, node: Node) -> pyfuse3.EntryAttributes:
        """Attributes for readdirplus. A file whose size could not be learned (opendir tried)
        is listed with timeouts of 0, so that any stat of it asks again and gets the error."""
        return self._to_entry(node, cache=self.sizes.unknown(node) is None)

    def _to_entry(self, node: Node, *, cache: bool = True) -> pyfuse3.EntryAttributes:
        return entry_attributes(
            self.ns.attrs(node),
            entry_timeout=self.entry_timeout if cache else 0,
            attr_timeout=self.attr_timeout if cache else 0,
        )

    @staticmethod
    def _name(raw: bytes) -> str:
        if len(raw) > NAME_MAX:
            raise _fail(errno.ENAMETOOLONG)
        return os.fsdecode(raw)

    def _check_writable(self, node: Node) -> None:
        if not self.ns.writable(node):
            raise _fail(errno.EROFS)

    async def _child(self, parent: Node, name: str) -> Node:
        child = await self.ns.lookup(parent, name)
        if child is None:
            raise _fail(errno.ENOENT)
        return child

    def _new_fh(self, handle: Handle) -> int:
        return self._open.add_file(handle)

    def _handle(self, fh: int) -> Handle:
        handle = self._open.file(fh)
        if handle is None:
            raise _fail(errno.EBADF)
        return handle

    # ---- names -------------------------------------------------------------------------
    @guarded
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        text = self._name(name)
        if text == ".":
            child: Node | None = parent
        elif text == "..":
            child = await self._parent_of(parent)
        else:
            child = await self.ns.lookup(parent, text)
        if child is None:
            # st_ino 0 with a positive timeout: the kernel caches the negative lookup
            e = pyfuse3.EntryAttributes()
            e.st_ino = 0
            e.entry_timeout = self.negative_timeout
            return e
        entry = await self._sized_entry(child)
        self.ns.remember(child)  # only once the entry is certain to reach the kernel
        return entry

    async def _parent_of(self, node: Node) -> Node:
        if node.kind in (Kind.ROOT, Kind.CONTAINER):
            return self.ns.root_node
        assert node.cid is not None
        container = await self.ns.container(node.cid)
        if container is None:
            raise _fail(errno.ENOENT)
        parent = await self._child(self.ns.root_node, container.id)
        for part in [p for p in os.path.dirname(node.path).split("/") if p]:
            parent = await self._child(parent, part)
        return parent

    @guarded
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.ns.forget(inode, count)

    @guarded
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return await self._sized_entry(self._node(inode))

    @guarded
    async def setattr(
        self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        changes = any(
            getattr(fields, f)
            for f in (
                "update_size",
                "update_mode",
                "update_uid",
                "update_gid",
                "update_atime",
                "update_mtime",
            )
        )
        if changes:
            self._check_writable(node)
        if fields.update_uid and attr.st_uid not in (self.ns.uid, -1, 0xFFFFFFFF):
            raise _fail(errno.EPERM)
        if fields.update_gid and attr.st_gid not in (self.ns.gid, -1, 0xFFFFFFFF):
            raise _fail(errno.EPERM)
        if fields.update_size:
            if node.is_dir:
                raise _fail(errno.EISDIR)
            handle = self._open.file(fh) if fh is not None else None
            if handle is not None and handle.spool is not None:
                await self.writer.truncate(node, attr.st_size, handle.spool)
                handle.changed = True
            else:
                await self.writer.truncate(node, attr.st_size)
        if fields.update_mode:
            node.mode = stat.S_IMODE(attr.st_mode)
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        return await self._sized_entry(node)

    @guarded
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        raise _fail(errno.EINVAL)

    @guarded
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        raise _fail(errno.EPERM)  # the API has no links

    @guarded
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        raise _fail(errno.EPERM)

    @guarded
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            raise _fail(errno.EPERM)  # only regular files and directories exist
        info, entry = await self.create(parent_inode, name, mode, os.O_WRONLY | os.O_EXCL, ctx)
        await self.release(info.fh)  # an empty file, uploaded like `touch`'s
        return entry

    # ---- directories -------------------------------------------------------------------
    @guarded
    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self._node(inode)
        if not node.is_dir:
            raise _fail(errno.ENOTDIR)
        entries = await self.ns.list_dir(node)
        # readdirplus hands the kernel every entry's attributes: learn the unknown sizes
        # first, all at once, rather than one round trip per file in the stat calls after
        await self.sizes.ensure_all(child for _, child in entries)
        self.walks.listed(inode, entries)
        fh = self._open.add_dir(entries, node)
        return fh

    @guarded
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._open.dir(fh)
        if entries is None:
            raise _fail(errno.EBADF)
        for index in range(start_id, len(entries)):
            name, node = entries[index]
            if node.gone and node.lookups == 0 and self.ns.node(node.inode) is None:
                continue
            attrs = self._listed_entry(node)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, index + 1):
                break
            self.ns.remember(node)  # readdirplus: the kernel took a reference

    @guarded
    async def releasedir(self, fh: int) -> None:
        self._open.pop_dir(fh)

    @guarded
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # every upload of the directory's files (write-back queues them) is on the server
        node = self._open.dir_node(fh)
        if node is None:
            raise _fail(errno.EBADF)
        # a temp file's upload stays deferred: a tool that syncs its directory renames it next
        failed = await self.writer.sync(node, deferred=False)
        if failed:
            log.warning("fsync of a directory: %d uploads failed", len(failed))
            raise _fail(errno.EIO)

    @guarded
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        text = self._name(name)
        self._check_writable(parent)
        if await self.ns.lookup(parent, text) is not None:
            raise _fail(errno.EEXIST)
        if parent.kind is Kind.ROOT:
            if reserved_container_name(text):
                # it would be shown as NAME~ID, never at the name just made: refused
                raise _fail(errno.EINVAL)
            node = await self.ns.create_container(text, **self.container_defaults)
        else:
            node = await self.ns.add_dir(parent, text)
        self.ns.remember(node)
        return self._entry(node)

    @guarded
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        parent = self._node(parent_inode)
        self._check_writable(parent)
        node = await self._child(parent, self._name(name))
        if not node.is_dir:
            raise _fail(errno.ENOTDIR)
        if node.kind is Kind.CONTAINER and node.cid is not None:
            # deleting a container deletes its files: decide on a fresh listing, not the cache
            self.ns.invalidate_listing(node.cid)
        if not await self.ns.is_empty(node):
            raise _fail(errno.ENOTEMPTY)
        if node.kind is Kind.CONTAINER:
            await self.ns.delete_container(node)
        else:
            await self.ns.drop_dir(node)

    # ---- files -------------------------------------------------------------------------
    @guarded
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise _fail(errno.EISDIR)
        while node.settling is not None:
            await node.settling.wait()
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if writable:
            self._check_writable(node)
        if not flags & os.O_TRUNC:  # the content is read: its size must be known first
            await self.sizes.ensure(node)
        handle = Handle(node, writable, append=bool(flags & os.O_APPEND))
        # counted before the first await: a release finishing meanwhile must not drop the
        # spool this open is about to share (it would then download what it just uploaded)
        node.opens += 1
        try:
            if writable:
                handle.spool = await self.writer.open(node, truncate=bool(flags & os.O_TRUNC))
            remote = node.remote
            if node.spool is None and remote is not None:
                # a listed size the content proved wrong: expect the proved one, or every
                # open would take the cached copy for stale and download it again
                size = remote.bytes if remote.bytes is None else self.ns.size(node)
                handle.read = await self.reader.open(remote.container_id, remote.id, size)
                if not writable:  # after its own download started: a prefetch never goes first
                    self._prefetch_after(node)
        except BaseException:
            node.opens -= 1
            raise
        fh = self._new_fh(handle)
        # keep the page cache only while the content is the server version seen last time
        current = remote.id if remote is not None and node.spool is None else ""
        keep = bool(current) and self._kept_cache.get(inode) == current
        self._kept_cache[inode] = current
        return pyfuse3.FileInfo(
            fh=fh, direct_io=not self.ns.size_known(node), keep_cache=keep, nonseekable=False
        )

    def _prefetch_after(self, node: Node) -> None:
        """The next files of a directory walk that ``node``'s open continues, downloaded now."""
        upcoming = self.walks.opened(node)
        if upcoming:
            self.reader.prefetch(
                (n.remote.container_id, n.remote.id, n.remote.bytes)
                for n in upcoming
                if n.remote is not None and n.spool is None and not n.gone
            )

    @guarded
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        text = self._name(name)
        if parent.kind is Kind.ROOT:
            raise _fail(errno.EPERM)  # the root holds containers only: mkdir makes one
        self._check_writable(parent)
        existing = await self.ns.lookup(parent, text)
        if existing is not None:
            if flags & os.O_EXCL:
                raise _fail(errno.EEXIST)
            info = await self.open(existing.inode, flags, ctx)
            self.ns.remember(existing)
            return info, self._entry(existing)
        node = self.ns.new_file(parent, text)
        node.mode = stat.S_IMODE(mode)
        self.writer.classify(node)
        spool = await self.writer.open(node, truncate=True)
        node.opens += 1
        self.ns.remember(node)
        fh = self._new_fh(Handle(node, True, spool=spool, append=bool(flags & os.O_APPEND)))
        self._kept_cache[node.inode] = ""
        return pyfuse3.FileInfo(fh=fh, keep_cache=False), self._entry(node)

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handle(fh)
        node = handle.node
        if handle.spool is not None:
            return await self.writer.read(handle.spool, off, size)
        if node.spool is not None and handle.read is None:
            return await self.writer.read(node.spool, off, size)
        if handle.read is None:
            return b""
        data = await self.reader.read(handle.read, off, size)
        if self.sizes.refresh(node):
            self._invalidate_attrs(node.inode)
        return data

    def _invalidate_attrs(self, inode: int) -> None:
        """Make the kernel ask for attributes again (a size it was shown proved wrong)."""
        if not self._serving:
            return
        # attributes only (no page locks taken), so safe from inside a handler; OSError: the
        # kernel has forgotten the inode, and there is nothing to invalidate
        with contextlib.suppress(OSError):
            pyfuse3.invalidate_inode(inode, attr_only=True)

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handle(fh)
        if handle.spool is None:
            raise _fail(errno.EBADF)
        handle.changed = True
        try:
            return await self.writer.write(
                handle.node, handle.spool, off, buf, append=handle.append
            )
        except SpoolError:
            # the file is back to its content before this open: the size the kernel saw grow
            # with the writes is wrong now
            self._invalidate_attrs(handle.node.inode)
            raise

    @guarded
    async def flush(self, fh: int) -> None:
        # upload here: close() waits for flush, while errors from release() are thrown away.
        # A handle that changed nothing yet leaves it to release(): a shell's dup2 flushes
        # before the first write, and `echo x > f` would upload an empty file first.
        handle = self._handle(fh)
        if handle.spool is not None and handle.changed:
            # with write-back, a close only makes the content durable and queues its upload
            await self._upload(handle, wait=False)

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handle(fh)
        if handle.spool is not None:
            await self._upload(handle)

    async def _upload(self, handle: Handle, *, wait: bool = True) -> None:
        """Flush a handle's spool. A failed upload is EIO at close() and fsync(): the data is
        kept and retried, and EINVAL or EAGAIN would tell the program something else. Only
        an expired container (EROFS) and a file over the size limit (EFBIG) say more."""
        assert handle.spool is not None
        try:
            await self.writer.flush(handle.node, handle.spool, wait=wait)
        except (ContainerExpired, PayloadTooLarge):
            raise
        except ApiError as err:
            log.debug("upload at flush: %s", err)
            raise _fail(errno.EIO) from err

    @guarded
    async def release(self, fh: int) -> None:
        handle = self._open.pop_file(fh)
        if handle is None:
            return
        node = handle.node
        node.opens -= 1
        if handle.read is not None:
            await self.reader.release(handle.read)
        if handle.spool is not None:
            await self.writer.release(node, handle.spool)
        else:
            await self.writer.close_if_idle(node)

    @guarded
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        parent = self._node(parent_inode)
        self._check_writable(parent)
        node = await self._child(parent, self._name(name))
        if node.is_dir:
            raise _fail(errno.EISDIR)
        await self.writer.unlink(node)

    @guarded
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise _fail(errno.EINVAL)  # no atomic exchange without a server move
        old_parent = self._node(parent_inode_old)
        new_parent = self._node(parent_inode_new)
        self._check_writable(old_parent)
        self._check_writable(new_parent)
        node = await self._child(old_parent, self._name(name_old))
        new_name = self._name(name_new)
        if node.kind is Kind.CONTAINER or new_parent.kind is Kind.ROOT:
            raise _fail(errno.EPERM)  # containers cannot be renamed through the API
        target = await self.ns.lookup(new_parent, new_name)
        if target is node:
            return
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise _fail(errno.EEXIST)
            if target.is_dir and not node.is_dir:
                raise _fail(errno.EISDIR)
            if node.is_dir and not target.is_dir:
                raise _fail(errno.ENOTDIR)
            if target.is_dir and not await self.ns.is_empty(target):
                raise _fail(errno.ENOTEMPTY)
        await self.writer.rename(node, new_parent, new_name, target)

    # ---- the rest ----------------------------------------------------------------------
    @guarded
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        return statfs_data()

    @guarded
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if not name.startswith(b"user."):
            # no security labels, no ACLs: "not supported" (not "no such attribute") lets ls
            # -l stop asking after the first file of the mount, rather than twice per file
            raise _fail(errno.EOPNOTSUPP)
        value = (await self._xattrs(inode)).get(os.fsdecode(name))
        if value is None:
            raise _fail(pyfuse3.ENOATTR)
        return value.encode()

    @guarded
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [k.encode() for k in await self._xattrs(inode)]

    async def _xattrs(self, inode: int) -> dict[str, str]:
        node = self._node(inode)
        created = None
        if node.kind is Kind.CONTAINER and node.cid is not None:
            created = await self.ns.created.get(node.cid)
        return xattrs(node, created=created)

    def entry_added(self, parent_inode: int, name: str) -> None:
        """A name was added to a directory outside any FUSE request (``containerfs new`` or
        ``import``): drop a negative entry the kernel may have cached for it. Asynchronous:
        the synchronous call can deadlock against a request in flight in that directory."""
        if self._serving:
            pyfuse3.invalidate_entry_async(parent_inode, os.fsencode(name), ignore_enoent=True)

    @guarded
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise _fail(errno.ENOTSUP)

    @guarded
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        raise _fail(errno.ENOTSUP)
