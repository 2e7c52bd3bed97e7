"""Directory walks: a program opening a directory's files in the order ``readdir`` gave them
(``cp -r``, ``grep -r``, ``tar``, ``rsync``), noticed so that the reader can fetch the next
files before they are opened.

``opendir`` hands over its snapshot (the order the kernel, and so the program, sees);
``opened`` says, for each file opened, which files come next when the opens follow the
listing's order or the inodes' (``Walks``): two files in a row (the first file counts as
following the start) make a walk, and any open out of order ends it until the order is picked
up again. Plain bookkeeping on inode numbers, no I/O. Layer: FUSE adapter (knows nodes, not FUSE).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from containerfs.ns.inodes import Node

#: Directories whose snapshot is kept: a walk of a tree opens one directory after another,
#: and each kept snapshot costs about 100 B per file (``ls -lR`` of 100,000 files in 50
#: directories held 27 MB of them with 64)
WALK_DIRS = 8
#: How many files past the one just opened a walk names.
WALK_AHEAD = 16


@dataclass
class _Order:
    """One order a walk may take through a directory's files."""

    files: list[Node]
    index: dict[int, int]  # inode -> position in ``files``
    last: int = -1  # position of the file opened last
    streak: int = 0  # files opened in a row in this order

    @classmethod
    def of(cls, files: list[Node]) -> _Order:
        return cls(files, {node.inode: i for i, node in enumerate(files)})

    def step(self, node: Node) -> bool:
        """Count an open of ``node``: whether it continues a walk in this order."""
        i = self.index[node.inode]
        if i == self.last:  # the same file again (another descriptor): no step
            return self.streak >= 2
        self.streak = self.streak + 1 if i == self.last + 1 else 0
        self.last = i
        return self.streak >= 2


class Walks:
    """The directory snapshots of recent ``opendir`` calls and the opens that follow them.

    Two orders are followed: the listing's (``tar``, ``grep -r``, ``rsync``, which sorts by
    name as the listing does) and the inodes' (GNU ``cp -r`` sorts a directory's entries by
    inode number before copying them, which is faster on disks).
    """

    def __init__(self, *, ahead: int = WALK_AHEAD, dirs: int = WALK_DIRS) -> None:
        self._ahead = ahead
        self._dirs = dirs
        # directory inode -> its orders, the latest snapshot last
        self._walks: OrderedDict[int, tuple[_Order, ...]] = OrderedDict()

    def listed(self, dir_inode: int, entries: Sequence[tuple[str, Node]]) -> None:
        """The snapshot an ``opendir`` of ``dir_inode`` gave."""
        files = [node for _, node in entries if not node.is_dir]
        by_inode = sorted(files, key=lambda node: node.inode)
        orders = (
            (_Order.of(files),) if by_inode == files else (_Order.of(files), _Order.of(by_inode))
        )
        self._walks[dir_inode] = orders
        self._walks.move_to_end(dir_inode)
        if len(self._walks) > self._dirs:
            self._walks.popitem(last=False)

    def opened(self, node: Node) -> list[Node]:
        """The files to fetch ahead after an open of ``node``: empty unless a walk goes on."""
        # the latest snapshot listing it (a few kept: a lookup in each is cheaper than an
        # index of every listed inode)
        orders = next((o for o in reversed(self._walks.values()) if node.inode in o[0].index), None)
        if orders is None:
            return []
        upcoming: list[Node] = []
        for order in orders:  # every order counts the open; the first walk found is followed
            i = order.index[node.inode]
            if order.files[i] is node and order.step(node) and not upcoming:
                upcoming = order.files[i + 1 : i + 1 + self._ahead]
        return upcoming
