"""Listings: one container's files as last listed, indexed by directory and patched in place
by the mount's own changes. Plain data held in the namespace's TTL cache. Layer: namespace.

A container may hold 100,000 files: a lookup or a readdir must cost the entries of one
directory, not the files of the container. So a listing keeps its files grouped by the
directory they ask to be shown in, with the directories they imply (``DirTree``); the naming
rules (``paths.place_dir``) settle one directory at a time, on first use, and again only when
that directory changes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Mapping

from containerfs import paths
from containerfs.models import ContainerFile, FileId
from containerfs.ns.overlay import DirTree


class Listing:
    """One container's files, by display directory.

    ``aliases`` is the namespace's record of where this container's files are shown (file id ->
    display path), read here and never written; after changing one, call ``refile``.
    """

    __slots__ = ("_aliases", "_dirs", "_groups", "_names", "_parents", "_placed", "_root")

    def __init__(
        self, files: Iterable[ContainerFile], *, root: str, aliases: Mapping[FileId, str]
    ) -> None:
        self._root = root
        self._aliases = aliases
        # directory -> its files (those that ask to be shown there), by id
        self._groups: dict[str, dict[FileId, ContainerFile]] = {}
        # file id -> the directory it is grouped in (strings shared through ``_names``)
        self._parents: dict[FileId, str] = {}
        self._names: dict[str, str] = {}
        self._dirs = DirTree()
        # directory -> name -> file, settled by the naming rules; dropped when it changes
        self._placed: dict[str, dict[str, ContainerFile]] = {}
        for f in files:
            self.add(f)

    def __len__(self) -> int:
        return len(self._parents)

    def files(self) -> Iterator[ContainerFile]:
        for group in self._groups.values():
            yield from group.values()

    # ---- changes ----------------------------------------------------------------------------
    def add(self, f: ContainerFile) -> None:
        """``f`` is on the server now (a new file, or a new version of one listed)."""
        self.remove(f.id)
        parent = posixpath.dirname(self._shown(f))
        parent = self._names.setdefault(parent, parent)
        self._groups.setdefault(parent, {})[f.id] = f
        self._parents[f.id] = parent
        self._placed.pop(parent, None)
        for up in self._dirs.add(parent):  # a new directory: its parent shows one more entry
            self._placed.pop(up, None)

    def remove(self, fid: FileId) -> ContainerFile | None:
        """The file ``fid`` is gone from the server; what it was, if listed."""
        parent = self._parents.pop(fid, None)
        if parent is None:
            return None
        group = self._groups[parent]
        f = group.pop(fid)
        if not group:
            del self._groups[parent]
            self._names.pop(parent, None)
        self._placed.pop(parent, None)
        for d in self._dirs.remove(parent):  # an emptied directory: its parent shows one fewer
            self._placed.pop(d, None)
            self._placed.pop(posixpath.dirname(d), None)
        return f

    def refile(self, fid: FileId) -> None:
        """The alias of ``fid`` changed: show it where it asks to be shown now."""
        f = self.remove(fid)
        if f is not None:
            self.add(f)

    # ---- queries: each costs the entries of one directory ------------------------------------
    def is_dir(self, path: str) -> bool:
        """Whether the listed files imply a directory at ``path`` ("" always)."""
        return path in self._dirs

    def file(self, path: str) -> ContainerFile | None:
        """The file shown at display path ``path``, if any."""
        parent, name = posixpath.split(path)
        return self.placed(parent).get(name)

    def subdirs(self, path: str) -> set[str]:
        """The names of the directories directly under ``path`` (do not modify)."""
        return self._dirs.subdirs(path)

    def placed(self, path: str) -> dict[str, ContainerFile]:
        """Name -> file of the files shown in directory ``path``, settled once per change of
        that directory (do not modify)."""
        placed = self._placed.get(path)
        if placed is None:
            entries = [
                (posixpath.basename(self._shown(f)), f, f.id in self._aliases)
                for f in self._groups.get(path, {}).values()
            ]
            placed = self._placed[path] = paths.place_dir(entries, self._dirs.subdirs(path))
        return placed

    def _shown(self, f: ContainerFile) -> str:
        return paths.shown_path(f, root=self._root, aliases=self._aliases)
