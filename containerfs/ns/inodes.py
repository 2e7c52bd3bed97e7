"""Inodes: the ``Node`` record of one file, directory, container or the root, its key in
the inode table, and the ``Attrs`` the namespace reports for it. Plain data. Layer: namespace.

Who writes which field of a ``Node`` (the lock order is in ``containerfs/__init__.py``):
- the namespace: ``inode``, ``kind``, ``cid``, ``path``, ``container``, ``remote``, ``gone``,
  ``born_ns`` (when first shown), ``lookups`` (``remember``/``forget``);
- the writer (``Writer``, with its base ``UploadSteps``): ``spool`` (set by ``attach``, which
  its renamer and queue call too, and cleared by the writer alone), ``local_only`` and
  ``deferred`` (``classify``, from the name; ``unlink`` clears ``local_only``), ``settling``
  (``close_if_idle``);
- the FUSE adapter: ``opens`` (``OpenFiles``, its open handles), the local attributes
  ``mode``, ``mtime_ns``, ``atime_ns`` (``setattr``, ``create``), and ``size_hint`` once a read
  learnt the size of a file listed without one, or proved a listed size wrong (the namespace
  forgets it when the node's server file changes).
"""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass, field
from typing import Protocol

import trio

from containerfs.models import Container, ContainerFile, ContainerId

ROOT_INODE = 1


class LocalContent(Protocol):
    """What the namespace and the FUSE adapter read of a node's local content (the write
    path's ``Spool``, which this layer may not import): its size. The write path reads the
    rest through ``containerfs.write.spool.spool_of``."""

    @property
    def size(self) -> int: ...


class Kind(enum.Enum):
    ROOT = "root"
    CONTAINER = "container"
    DIR = "dir"
    FILE = "file"


@dataclass(eq=False, slots=True)
class Node:
    """One inode. ``path`` is the display path inside the container ("" for its directory).

    A mount may hold 100,000 nodes at once (``ls -lR`` of a large container): slots, and a
    lock made only for the few nodes that are ever written.
    """

    inode: int
    kind: Kind
    cid: ContainerId | None = None
    path: str = ""
    container: Container | None = None
    remote: ContainerFile | None = None
    lookups: int = 0
    gone: bool = False
    # local attributes: kept for the life of the node (cp -p, touch, chmod)
    mode: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None
    size_hint: int | None = None  # the size the content proved (bytes: null, or listed wrong)
    # write path state, written by the writer alone (see above); read by every layer
    spool: LocalContent | None = None  # the content written here (``Writer.attach``)
    local_only: bool = False  # never uploaded (editor swap and backup files)
    deferred: bool = False  # uploaded only if still there a while after close (tool temp files)
    # set by ``Writer.close_if_idle`` while a closed spool's content moves to the cache; an
    # open waits for it
    settling: trio.Event | None = None
    # open handles: counted by the FUSE adapter's open-file table (``OpenFiles``); read by the
    # writer, its queue and the inode table
    opens: int = 0
    # the time shown for a node the server gives none (directories, files not uploaded yet):
    # fixed, so that rsync and make see a directory's mtime stay put
    born_ns: int = 0  # set by the namespace when first shown
    _lock: trio.Lock | None = field(default=None, init=False, repr=False)

    @property
    def lock(self) -> trio.Lock:
        """Held around this file's spool, upload and rename (see the lock order)."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock

    @property
    def is_dir(self) -> bool:
        return self.kind is not Kind.FILE

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


class NodeIndex:
    """The live nodes by kind, container and path: at most one node per key.

    Keyed by the node's own path string, within one dict per kind and container, rather than
    by a tuple per node: a large container holds 100,000 of them.
    """

    __slots__ = ("_by_place",)

    def __init__(self) -> None:
        self._by_place: dict[tuple[Kind, ContainerId | None], dict[str, Node]] = {}

    def get(self, kind: Kind, cid: ContainerId | None, path: str = "") -> Node | None:
        nodes = self._by_place.get((kind, cid))
        return nodes.get(path) if nodes is not None else None

    def put(self, node: Node) -> None:
        self._by_place.setdefault((node.kind, node.cid), {})[node.path] = node

    def pop(self, node: Node) -> None:
        """Forget ``node`` if it is the one held at its key."""
        nodes = self._by_place.get((node.kind, node.cid))
        if nodes is not None and nodes.get(node.path) is node:
            del nodes[node.path]
            if not nodes:
                del self._by_place[(node.kind, node.cid)]

    def under(self, cid: ContainerId, prefix: str) -> list[Node]:
        """The file and directory nodes of ``cid`` whose path starts with ``prefix``."""
        return [
            n
            for kind in (Kind.DIR, Kind.FILE)
            for path, n in self._by_place.get((kind, cid), {}).items()
            if path.startswith(prefix)
        ]


class InodeTable:
    """Inode -> node, and the live nodes by key; a node stays in the table while the kernel
    may still name its inode, after its key has gone to another (``drop_if_unused``)."""

    __slots__ = ("_keys", "_next", "_nodes")

    def __init__(self, root: Node) -> None:
        self._nodes: dict[int, Node] = {}
        self._keys = NodeIndex()
        self._next = ROOT_INODE + 1
        self.add(root)

    def __len__(self) -> int:
        return len(self._nodes)

    def add(self, node: Node) -> Node:
        self._nodes[node.inode] = node
        self._keys.put(node)
        return node

    def get_or_make(self, kind: Kind, cid: ContainerId, path: str = "") -> Node:
        """The live node at that key, or a new one with the next inode; not gone either way."""
        node = self._keys.get(kind, cid, path)
        if node is None:
            node = Node(self._next, kind, cid, path)
            self._next += 1
            self.add(node)
        node.gone = False
        return node

    def container_node(self, c: Container) -> Node:
        """The live node of container ``c``, holding the container as listed last."""
        node = self.get_or_make(Kind.CONTAINER, c.id)
        node.container = c
        return node

    def file_node(self, cid: ContainerId, path: str, remote: ContainerFile) -> Node:
        """The live node of a server file at ``path``; a size learned for another version of
        it is forgotten."""
        node = self.get_or_make(Kind.FILE, cid, path)
        if node.remote is None or node.remote.id != remote.id:
            node.size_hint = None
        node.remote = remote
        return node

    def node(self, inode: int) -> Node | None:
        return self._nodes.get(inode)

    def at(self, kind: Kind, cid: ContainerId | None, path: str = "") -> Node | None:
        return self._keys.get(kind, cid, path)

    def unkey(self, node: Node) -> None:
        """``node`` no longer holds its key (it is gone, or about to move)."""
        self._keys.pop(node)

    def rekey(self, node: Node) -> None:
        """``node`` holds its (new) key."""
        self._keys.put(node)

    def under(self, cid: ContainerId, prefix: str) -> list[Node]:
        return self._keys.under(cid, prefix)

    def drop_if_unused(self, node: Node) -> None:
        """Forget a gone node once nothing refers to it: no kernel lookup, open or spool."""
        if node.gone and node.lookups == 0 and node.opens == 0 and node.spool is None:
            self._nodes.pop(node.inode, None)
            self._keys.pop(node)


@dataclass(frozen=True)
class Attrs:
    """What ``getattr`` reports, free of FUSE types."""

    inode: int
    mode: int
    nlink: int
    size: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
