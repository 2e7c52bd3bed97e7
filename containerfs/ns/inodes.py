"""Inodes: the ``Node`` record of one file, directory, container or the root, its key in
the inode table, and the ``Attrs`` the namespace reports for it. Plain data. Layer: namespace.

Who writes which field of a ``Node`` (the lock order is in ``containerfs/__init__.py``):
- the namespace: ``inode``, ``kind``, ``cid``, ``path``, ``container``, ``remote``, ``gone``,
  ``lookups`` (``remember``/``forget``);
- the writer (and its renamer and queue): ``spool``, ``local_only``, ``deferred``,
  ``settling``;
- the FUSE adapter: ``opens`` (open handles), the local attributes ``mode``, ``mtime_ns``,
  ``atime_ns`` (``setattr``, ``create``), and ``size_hint`` once a read learnt the size of a
  file listed without one, or proved a listed size wrong.
"""

from __future__ import annotations

import enum
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from containerfs.models import Container, ContainerFile, ContainerId

ROOT_INODE = 1


class Kind(enum.Enum):
    ROOT = "root"
    CONTAINER = "container"
    DIR = "dir"
    FILE = "file"


@dataclass(eq=False)
class Node:
    """One inode. ``path`` is the display path inside the container ("" for its directory)."""

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
    # write path state, owned by the writer
    spool: Any = None
    local_only: bool = False  # never uploaded (editor swap and backup files)
    deferred: bool = False  # uploaded only if still there a while after close (tool temp files)
    opens: int = 0
    settling: trio.Event | None = None  # set while a closed spool's content moves to the cache
    # the time shown for a node the server gives none (directories, files not uploaded yet):
    # fixed, so that rsync and make see a directory's mtime stay put
    born_ns: int = field(default_factory=time.time_ns)
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def is_dir(self) -> bool:
        return self.kind is not Kind.FILE

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def key(self) -> tuple[str, ...]:
        return node_key(self.kind, self.cid, self.path)


def node_key(kind: Kind, cid: ContainerId | None, path: str = "") -> tuple[str, ...]:
    if kind is Kind.ROOT:
        return ("root",)
    assert cid is not None
    if kind is Kind.CONTAINER:
        return ("c", cid)
    return ("d" if kind is Kind.DIR else "f", cid, path)


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
