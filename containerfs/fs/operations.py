"""The pyfuse3 adapter: inode <-> node, pyfuse3's records, errors -> errno.

Thin on purpose: the namespace, reader and writer do the work, asked through ``files`` (open
files) and ``tree`` (names, directories, renames), which know nothing about FUSE; the handle
numbers live in ``handles``, the records are made in ``attrs``. Every handler is guarded:
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
from containerfs.errors import ContainerFsError, SpoolError
from containerfs.fs.attrs import entry_attributes, node_xattrs, statfs_data
from containerfs.fs.files import Opened, OpenFiles, require_writable
from containerfs.fs.handles import HandleTable
from containerfs.fs.sizes import Sizes
from containerfs.fs.tree import Tree, decode_name
from containerfs.fs.walks import Walks
from containerfs.ns.inodes import Kind, Node
from containerfs.ns.namespace import Namespace
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


def _file_info(opened: Opened) -> pyfuse3.FileInfo:
    return pyfuse3.FileInfo(
        fh=opened.fh, direct_io=opened.direct_io, keep_cache=opened.keep_cache, nonseekable=False
    )


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
        self.tree = Tree(namespace, writer, container_defaults=container_defaults or {})
        self._open = HandleTable()  # files and directories: one numbering
        self.files = OpenFiles(
            namespace, reader, writer, sizes=self.sizes, walks=self.walks, handles=self._open
        )
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

    # ---- names -------------------------------------------------------------------------
    @guarded
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        text = decode_name(name)
        if text == ".":
            child: Node | None = parent
        elif text == "..":
            child = await self.tree.parent_of(parent)
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
            require_writable(self.ns, node)
        if fields.update_uid and attr.st_uid not in (self.ns.uid, -1, 0xFFFFFFFF):
            raise _fail(errno.EPERM)
        if fields.update_gid and attr.st_gid not in (self.ns.gid, -1, 0xFFFFFFFF):
            raise _fail(errno.EPERM)
        if fields.update_size:
            if node.is_dir:
                raise _fail(errno.EISDIR)
            await self.files.truncate(node, attr.st_size, fh)
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
        node = await self.tree.mkdir(self._node(parent_inode), name)
        self.ns.remember(node)
        return self._entry(node)

    @guarded
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.tree.rmdir(self._node(parent_inode), name)

    # ---- files -------------------------------------------------------------------------
    @guarded
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise _fail(errno.EISDIR)
        return _file_info(await self.files.open(node, flags))

    @guarded
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        text = decode_name(name)
        if parent.kind is Kind.ROOT:
            raise _fail(errno.EPERM)  # the root holds containers only: mkdir makes one
        require_writable(self.ns, parent)
        existing = await self.ns.lookup(parent, text)
        if existing is not None:
            if flags & os.O_EXCL:
                raise _fail(errno.EEXIST)
            info = await self.open(existing.inode, flags, ctx)
            self.ns.remember(existing)
            return info, self._entry(existing)
        node, opened = await self.files.create(parent, text, mode, flags)
        self.ns.remember(node)
        return _file_info(opened), self._entry(node)

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.files.handle(fh)
        data, resized = await self.files.read(handle, off, size)
        if resized:
            self._invalidate_attrs(handle.node.inode)
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
        handle = self.files.handle(fh)
        try:
            return await self.files.write(handle, off, buf)
        except SpoolError:
            # the file is back to its content before this open: the size the kernel saw grow
            # with the writes is wrong now
            self._invalidate_attrs(handle.node.inode)
            raise

    @guarded
    async def flush(self, fh: int) -> None:
        await self.files.flush(self.files.handle(fh))

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.files.fsync(self.files.handle(fh))

    @guarded
    async def release(self, fh: int) -> None:
        await self.files.release(fh)

    @guarded
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.tree.unlink(self._node(parent_inode), name)

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
        noreplace = bool(flags & pyfuse3.RENAME_NOREPLACE)
        await self.tree.rename(old_parent, name_old, new_parent, name_new, noreplace=noreplace)

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
        value = (await node_xattrs(self.ns, self._node(inode))).get(os.fsdecode(name))
        if value is None:
            raise _fail(pyfuse3.ENOATTR)
        return value.encode()

    @guarded
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [k.encode() for k in await node_xattrs(self.ns, self._node(inode))]

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
