"""The local overlay: what the mount shows that the server's listing does not hold yet —
files being written, waiting to upload or kept local, and directories made here — indexed by
directory so that a lookup or a readdir costs one directory's entries. Also ``DirTree``, the
counted directory index a listing uses too. Plain data owned by the namespace. Layer: namespace.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator

from containerfs.models import ContainerId
from containerfs.ns.inodes import Node


class DirTree:
    """Directory paths, each with its ancestors, counted: a directory stays while anything
    added under it does. "" (the container itself) is always there."""

    __slots__ = ("_counts", "_subdirs")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        # directory -> the names of the directories directly under it
        self._subdirs: dict[str, set[str]] = {}

    def __contains__(self, path: object) -> bool:
        return path == "" or path in self._counts

    def add(self, path: str) -> list[str]:
        """Count ``path`` and its ancestors once more; the parents that gained a child."""
        grew: list[str] = []
        for d in lineage(path):
            self._counts[d] = self._counts.get(d, 0) + 1
            if self._counts[d] == 1 and d:
                up, name = posixpath.split(d)
                self._subdirs.setdefault(up, set()).add(name)
                grew.append(up)
        return grew

    def remove(self, path: str) -> list[str]:
        """Count ``path`` and its ancestors once less; the directories that went away."""
        gone: list[str] = []
        for d in lineage(path):
            count = self._counts.get(d, 0) - 1
            if count > 0:
                self._counts[d] = count
                continue
            self._counts.pop(d, None)
            if d:
                up, name = posixpath.split(d)
                siblings = self._subdirs.get(up, set())
                siblings.discard(name)
                if not siblings:
                    self._subdirs.pop(up, None)
                gone.append(d)
        return gone

    def subdirs(self, path: str) -> set[str]:
        """The names of the directories directly under ``path`` (do not modify)."""
        return self._subdirs.get(path, _EMPTY)


_EMPTY: set[str] = set()


def lineage(path: str) -> Iterator[str]:
    """``path`` and every directory above it, up to and including ""."""
    while True:
        yield path
        if not path:
            return
        path = posixpath.dirname(path)


class _Local:
    """One container's overlay."""

    __slots__ = ("by_dir", "files", "made", "tree")

    def __init__(self) -> None:
        self.files: dict[str, Node] = {}
        self.by_dir: dict[str, dict[str, Node]] = {}
        self.made: set[str] = set()  # directories made here (recorded in the state database)
        self.tree = DirTree()  # the directories of both


class Overlay:
    """Files not (or not yet) on the server and directories made here, per container."""

    def __init__(self) -> None:
        self._by_cid: dict[ContainerId, _Local] = {}

    def _of(self, cid: ContainerId) -> _Local:
        local = self._by_cid.get(cid)
        if local is None:
            local = self._by_cid[cid] = _Local()
        return local

    # ---- files ------------------------------------------------------------------------------
    def put(self, cid: ContainerId, path: str, node: Node) -> None:
        """Show ``node`` at ``path`` from the overlay."""
        local = self._of(cid)
        self.drop(cid, path)
        parent, name = posixpath.split(path)
        local.files[path] = node
        local.by_dir.setdefault(parent, {})[name] = node
        local.tree.add(parent)

    def drop(self, cid: ContainerId, path: str, node: Node | None = None) -> bool:
        """Stop showing the file at ``path`` (only if it is ``node``, when given)."""
        local = self._by_cid.get(cid)
        shown = local.files.get(path) if local is not None else None
        if local is None or shown is None or (node is not None and shown is not node):
            return False
        del local.files[path]
        parent, name = posixpath.split(path)
        siblings = local.by_dir[parent]
        del siblings[name]
        if not siblings:
            del local.by_dir[parent]
        local.tree.remove(parent)
        return True

    def file(self, cid: ContainerId, path: str) -> Node | None:
        local = self._by_cid.get(cid)
        return local.files.get(path) if local is not None else None

    def holds(self, cid: ContainerId, path: str, node: Node) -> bool:
        return self.file(cid, path) is node

    def files_in(self, cid: ContainerId, path: str) -> Iterable[tuple[str, Node]]:
        """Name -> node of the overlay's files directly in directory ``path``."""
        local = self._by_cid.get(cid)
        return local.by_dir.get(path, {}).items() if local is not None else ()

    def nodes(self) -> Iterator[Node]:
        for local in self._by_cid.values():
            yield from local.files.values()

    # ---- directories ------------------------------------------------------------------------
    def add_dir(self, cid: ContainerId, path: str) -> None:
        local = self._of(cid)
        if path not in local.made:
            local.made.add(path)
            local.tree.add(path)

    def drop_dir(self, cid: ContainerId, path: str) -> None:
        local = self._by_cid.get(cid)
        if local is not None and path in local.made:
            local.made.discard(path)
            local.tree.remove(path)

    def made_under(self, cid: ContainerId, path: str) -> list[str]:
        """The directories made here at ``path`` or below it."""
        local = self._by_cid.get(cid)
        if local is None:
            return []
        return [d for d in local.made if not path or d == path or d.startswith(path + "/")]

    def is_dir(self, cid: ContainerId, path: str) -> bool:
        """Whether the overlay implies a directory at ``path``: made here, or above a file or
        directory of the overlay."""
        local = self._by_cid.get(cid)
        return local is not None and path in local.tree

    def subdirs(self, cid: ContainerId, path: str) -> set[str]:
        local = self._by_cid.get(cid)
        return local.tree.subdirs(path) if local is not None else _EMPTY

    def forget_dirs(self, cid: ContainerId) -> None:
        """The container is gone: its directories made here go too."""
        for d in self.made_under(cid, ""):
            self.drop_dir(cid, d)
