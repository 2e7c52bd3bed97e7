"""Attributes as the kernel sees them: ``stat`` entries, extended attributes and ``statfs``.

Functions from the namespace's ``Attrs`` and ``Node`` to pyfuse3's records (pure, but for
``node_xattrs``, which asks the namespace what a container was created with); part of the
FUSE adapter (the ``fs`` package is the only place, with the daemon, that imports pyfuse3).
"""

from __future__ import annotations

import pyfuse3

from containerfs.ns.inodes import Attrs, Kind, Node
from containerfs.ns.namespace import Namespace
from containerfs.paths import NAME_MAX
from containerfs.state import CreatedWith

XATTR_PREFIX = "user.containerfs."
_FS_BLOCKS = 1 << 40  # 4 PiB of 4 KiB blocks: the API states no quota


def entry_attributes(
    a: Attrs, *, entry_timeout: float, attr_timeout: float
) -> pyfuse3.EntryAttributes:
    """The kernel's view of a node's attributes, cached for the given timeouts."""
    e = pyfuse3.EntryAttributes()
    e.st_ino = a.inode
    e.generation = 0
    e.entry_timeout = entry_timeout
    e.attr_timeout = attr_timeout
    e.st_mode = a.mode
    e.st_nlink = a.nlink
    e.st_uid = a.uid
    e.st_gid = a.gid
    e.st_rdev = 0
    e.st_size = a.size
    e.st_blksize = 1 << 20  # cp and others size their buffers by it: 1 MiB FUSE writes
    e.st_blocks = (a.size + 511) // 512
    e.st_atime_ns = a.atime_ns
    e.st_mtime_ns = a.mtime_ns
    e.st_ctime_ns = a.ctime_ns
    return e


def xattrs(node: Node, *, created: CreatedWith | None = None) -> dict[str, str]:
    """The read-only ``user.containerfs.*`` attributes of a node (name -> value).

    ``created``: what a container was created with, known only for containers this mount
    made (the container object does not say): ``file_ids`` and ``skills``, comma-separated
    and possibly empty; absent for a container made elsewhere.
    """
    if node.kind is Kind.CONTAINER and node.container is not None:
        c = node.container
        values: dict[str, object] = {
            "id": c.id,
            "status": c.status,
            "created_at": c.created_at,
            "last_active_at": c.last_active_at,
            "expires_after_minutes": c.expires_after.minutes if c.expires_after else None,
            "memory_limit": c.memory_limit,
            "network_policy": c.network_policy.describe() if c.network_policy else None,
        }
        if created is not None:
            values["file_ids"] = ",".join(created.file_ids)
            values["skills"] = ",".join(created.skills)
    elif node.kind is Kind.FILE:
        f = node.remote
        values = {
            "id": f.id if f else None,
            "path": f.path if f else None,
            "source": f.source if f else None,
            "created_at": f.created_at if f else None,
            "state": "local" if node.local_only else "pending" if f is None else "uploaded",
        }
    else:
        values = {"container_id": node.cid} if node.cid else {}
    return {XATTR_PREFIX + k: str(v) for k, v in values.items() if v is not None}


async def node_xattrs(ns: Namespace, node: Node) -> dict[str, str]:
    """``xattrs`` of a node, with what a container made here was created with."""
    created = None
    if node.kind is Kind.CONTAINER and node.cid is not None:
        created = await ns.created.get(node.cid)
    return xattrs(node, created=created)


def statfs_data() -> pyfuse3.StatvfsData:
    """Free space as the kernel asks for it: the API states no quota, so a lot."""
    s = pyfuse3.StatvfsData()
    s.f_bsize = 4096
    s.f_frsize = 4096
    s.f_blocks = _FS_BLOCKS
    s.f_bfree = _FS_BLOCKS
    s.f_bavail = _FS_BLOCKS
    s.f_files = 1 << 32
    s.f_ffree = 1 << 32
    s.f_favail = 1 << 32
    s.f_namemax = NAME_MAX
    return s
