"""The tree as the kernel walks and changes it, without FUSE: a node's entry by name and its
parent (``..``), the one decoding of a name the kernel hands in, and ``mkdir``, ``rmdir``,
``unlink`` and ``rename``, each checked as POSIX asks (EEXIST, ENOTEMPTY, EISDIR, ENOTDIR,
EROFS, EPERM) before the namespace or the writer is asked to make it.

Part of the FUSE adapter's package (no pyfuse3 import): ``operations`` resolves the inodes
and asks here. A refusal is a ``ContainerFsError`` carrying its errno (``files.refused``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import Any

from containerfs.fs.files import refused, require_writable
from containerfs.ns.inodes import Kind, Node
from containerfs.ns.namespace import Namespace
from containerfs.paths import NAME_MAX, reserved_container_name
from containerfs.write.writer import Writer


def decode_name(raw: bytes) -> str:
    """A name as the kernel gave it, as text (ENAMETOOLONG past ``NAME_MAX`` bytes)."""
    if len(raw) > NAME_MAX:
        raise refused(errno.ENAMETOOLONG)
    return os.fsdecode(raw)


class Tree:
    """Entries looked up; directories made and removed, files unlinked, anything renamed;
    ``mkdir`` in the root
    creates a container with ``container_defaults`` (the mount's options)."""

    def __init__(
        self, ns: Namespace, writer: Writer, *, container_defaults: Mapping[str, Any]
    ) -> None:
        self._ns = ns
        self._writer = writer
        self._container_defaults = dict(container_defaults)

    async def child(self, parent: Node, name: str) -> Node:
        """The entry ``name`` of ``parent`` (ENOENT when there is none)."""
        child = await self._ns.lookup(parent, name)
        if child is None:
            raise refused(errno.ENOENT)
        return child

    async def parent_of(self, node: Node) -> Node:
        """The directory ``node`` is in (``..``), looked up from the root down."""
        if node.kind in (Kind.ROOT, Kind.CONTAINER):
            return self._ns.root_node
        assert node.cid is not None
        container = await self._ns.container(node.cid)
        if container is None:
            raise refused(errno.ENOENT)
        parent = await self.child(self._ns.root_node, container.id)
        for part in [p for p in os.path.dirname(node.path).split("/") if p]:
            parent = await self.child(parent, part)
        return parent

    async def mkdir(self, parent: Node, raw: bytes) -> Node:
        text = decode_name(raw)
        require_writable(self._ns, parent)
        if await self._ns.lookup(parent, text) is not None:
            raise refused(errno.EEXIST)
        if parent.kind is Kind.ROOT:
            if reserved_container_name(text):
                # it would be shown as NAME~ID, never at the name just made: refused
                raise refused(errno.EINVAL)
            return await self._ns.create_container(text, **self._container_defaults)
        return await self._ns.add_dir(parent, text)

    async def rmdir(self, parent: Node, raw: bytes) -> None:
        require_writable(self._ns, parent)
        node = await self.child(parent, decode_name(raw))
        if not node.is_dir:
            raise refused(errno.ENOTDIR)
        if node.kind is Kind.CONTAINER and node.cid is not None:
            # deleting a container deletes its files: decide on a fresh listing, not the cache
            self._ns.invalidate_listing(node.cid)
        if not await self._ns.is_empty(node):
            raise refused(errno.ENOTEMPTY)
        if node.kind is Kind.CONTAINER:
            await self._ns.delete_container(node)
        else:
            await self._ns.drop_dir(node)

    async def unlink(self, parent: Node, raw: bytes) -> None:
        require_writable(self._ns, parent)
        node = await self.child(parent, decode_name(raw))
        if node.is_dir:
            raise refused(errno.EISDIR)
        await self._writer.unlink(node)

    async def rename(
        self, old_parent: Node, raw_old: bytes, new_parent: Node, raw_new: bytes, *, noreplace: bool
    ) -> None:
        """Move ``old_parent``/``raw_old`` to ``new_parent``/``raw_new``, replacing what is
        there unless ``noreplace`` (then EEXIST)."""
        require_writable(self._ns, old_parent)
        require_writable(self._ns, new_parent)
        node = await self.child(old_parent, decode_name(raw_old))
        new_name = decode_name(raw_new)
        if node.kind is Kind.CONTAINER or new_parent.kind is Kind.ROOT:
            raise refused(errno.EPERM)  # containers cannot be renamed through the API
        target = await self._ns.lookup(new_parent, new_name)
        if target is node:
            return
        if target is not None:
            if noreplace:
                raise refused(errno.EEXIST)
            if target.is_dir and not node.is_dir:
                raise refused(errno.EISDIR)
            if node.is_dir and not target.is_dir:
                raise refused(errno.ENOTDIR)
            if target.is_dir and not await self._ns.is_empty(target):
                raise refused(errno.ENOTEMPTY)
        await self._writer.rename(node, new_parent, new_name, target)
