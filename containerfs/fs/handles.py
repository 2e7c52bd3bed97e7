"""Open handles of the FUSE adapter: one ``Handle`` per open file, one listing per open
directory, numbered from one shared counter (the kernel's ``fh``). Layer: FUSE adapter.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from containerfs.ns.inodes import Node
from containerfs.read.reader import ReadHandle
from containerfs.write.spool import Spool


@dataclass(eq=False)
class Handle:
    node: Node
    writable: bool
    read: ReadHandle | None = None
    spool: Spool | None = None  # what a writable handle writes to (see Writer.open)
    append: bool = False  # O_APPEND
    changed: bool = False  # written or truncated through this handle


class HandleTable:
    """The open files and directories; file and directory handles share one numbering."""

    def __init__(self) -> None:
        self._files: dict[int, Handle] = {}
        self._dirs: dict[int, list[tuple[str, Node]]] = {}
        self._dir_nodes: dict[int, Node] = {}  # the directory each handle lists
        self._fhs = itertools.count(1)

    def add_file(self, handle: Handle) -> int:
        fh = next(self._fhs)
        self._files[fh] = handle
        return fh

    def file(self, fh: int) -> Handle | None:
        return self._files.get(fh)

    def pop_file(self, fh: int) -> Handle | None:
        return self._files.pop(fh, None)

    def add_dir(self, entries: list[tuple[str, Node]], node: Node) -> int:
        fh = next(self._fhs)
        self._dirs[fh] = entries
        self._dir_nodes[fh] = node
        return fh

    def dir_node(self, fh: int) -> Node | None:
        return self._dir_nodes.get(fh)

    def dir(self, fh: int) -> list[tuple[str, Node]] | None:
        return self._dirs.get(fh)

    def pop_dir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
        self._dir_nodes.pop(fh, None)
