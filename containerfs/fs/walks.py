"""Directory walks: a program opening a directory's files in the order ``readdir`` gave them
(``cp -r``, ``grep -r``, ``tar``, ``rsync``), noticed so that the reader can fetch the next
files before they are opened.

``opendir`` hands over its snapshot (the order the kernel, and so the program, sees);
``opened`` says, for each file opened, which files come next when the opens follow that order:
two files in a row (the first file counts as following the start) make a walk, and any open
out of order ends it until the order is picked up again. Plain bookkeeping on inode numbers,
no I/O. Layer: FUSE adapter (knows nodes, not FUSE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import LRUCache

from containerfs.ns.inodes import Node

#: Directories whose snapshot is kept (a walk of a tree opens one directory after another).
WALK_DIRS = 64
#: How many files past the one just opened a walk names.
WALK_AHEAD = 16


@dataclass
class _Walk:
    files: list[Node]  # the directory's files, in listing order
    last: int = -1  # index of the file opened last
    streak: int = 0  # files opened in a row in listing order


class Walks:
    """The directory snapshots of recent ``opendir`` calls and the opens that follow them."""

    def __init__(self, *, ahead: int = WALK_AHEAD, dirs: int = WALK_DIRS) -> None:
        self._ahead = ahead
        self._walks: LRUCache[int, _Walk] = LRUCache(maxsize=dirs)
        # file inode -> (directory inode, index in that directory's files)
        self._where: LRUCache[int, tuple[int, int]] = LRUCache(maxsize=dirs * 1024)

    def listed(self, dir_inode: int, entries: Sequence[tuple[str, Node]]) -> None:
        """The snapshot an ``opendir`` of ``dir_inode`` gave."""
        files = [node for _, node in entries if not node.is_dir]
        self._walks[dir_inode] = _Walk(files)
        for index, node in enumerate(files):
            self._where[node.inode] = (dir_inode, index)

    def opened(self, node: Node) -> list[Node]:
        """The files to fetch ahead after an open of ``node``: empty unless a walk goes on."""
        where = self._where.get(node.inode)
        if where is None:
            return []
        walk = self._walks.get(where[0])
        index = where[1]
        if walk is None or index >= len(walk.files) or walk.files[index] is not node:
            return []
        if index == walk.last:  # the same file again (another descriptor): no step
            return []
        walk.streak = walk.streak + 1 if index == walk.last + 1 else 0
        walk.last = index
        if walk.streak < 2:
            return []
        return walk.files[index + 1 : index + 1 + self._ahead]
