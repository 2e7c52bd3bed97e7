"""What ``stat`` shows of a node: its size (a spool's, then one learned from the content,
then the listing's), its mode, owner and times (``ns``, the namespace layer; the FUSE adapter
turns these ``Attrs`` into pyfuse3's).
"""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass

from containerfs.ns.inodes import Attrs, Node


def known_size(node: Node) -> int | None:
    """The node's size, or None for a server file listed without one and not yet learned."""
    if node.spool is not None:
        return node.spool.size
    if node.size_hint is not None:  # learned from the content: it wins over the listing
        return node.size_hint
    return node.remote.bytes if node.remote is not None else None


@dataclass(frozen=True)
class AttrRules:
    """The mount's owner and permission bits, shown for every node."""

    uid: int = 0
    gid: int = 0
    file_mode: int = 0o644
    dir_mode: int = 0o755

    def attrs(self, node: Node, *, writable: bool) -> Attrs:
        if node.is_dir:
            mode = stat.S_IFDIR | (node.mode if node.mode is not None else self.dir_mode)
            size, nlink = 4096, 2
            created = node.container.created_at if node.container else 0
        else:
            mode = stat.S_IFREG | (node.mode if node.mode is not None else self.file_mode)
            size, nlink = known_size(node) or 0, 1
            created = node.remote.created_at if node.remote else 0
        if not writable:
            mode &= ~0o222
        if not created and not node.born_ns:
            node.born_ns = time.time_ns()  # fixed from now on: rsync and make see it stay put
        created_ns = created * 1_000_000_000 if created else node.born_ns
        mtime = node.mtime_ns if node.mtime_ns is not None else created_ns
        atime = node.atime_ns if node.atime_ns is not None else mtime
        return Attrs(node.inode, mode, nlink, size, self.uid, self.gid, mtime, atime, mtime)
