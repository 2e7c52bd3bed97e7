"""Listings: one container's files as last listed, indexed by directory and patched in place
by the mount's own changes (``Listing``), and the TTL cache, fetch locks and replay journal
that hold them (``Listings``). Layer: namespace.

A container may hold 100,000 files: a lookup or a readdir must cost the entries of one
directory, not the files of the container. So a listing keeps its files grouped by the
directory they ask to be shown in, with the directories they imply (``DirTree``); the naming
rules (``paths.place_dir``) settle one directory at a time, on first use, and again only when
that directory changes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

import trio
from cachetools import TTLCache

from containerfs import paths
from containerfs.models import ContainerFile, ContainerId, FileId
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
        parent, name = posixpath.split(self._shown(f))
        parent = self._names.setdefault(parent, parent)
        self._groups.setdefault(parent, {})[f.id] = f
        self._parents[f.id] = parent
        placed = self._placed.get(parent)
        if placed is not None and self._fits(placed, parent, name, f):
            placed[name] = f  # a file copied into a large directory: no settling again
        else:
            self._placed.pop(parent, None)
        for up in self._dirs.add(parent):  # a new directory: its parent shows one more entry
            self._placed.pop(up, None)

    def _fits(
        self, placed: Mapping[str, ContainerFile], parent: str, name: str, f: ContainerFile
    ) -> bool:
        """Whether ``f`` is shown at ``name`` beside a directory's settled files and changes
        none of them: a name no file or directory shows, with no prefix to strip. (A prefixed
        file that wanted this name would be shown at it already; one that could not have it
        still cannot.)"""
        return (
            name not in placed
            and name not in self._dirs.subdirs(parent)
            and (f.id in self._aliases or paths.strip_prefix(name) is None)
        )

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


class Listings:
    """The containers' listings: a TTL cache, one fetch at a time per container, and the
    replay journal that keeps the mount's own changes made while a listing was on its way.

    The fetch itself (which containers can be listed, the client call) is the namespace's,
    passed to ``get``.
    """

    def __init__(self, *, root: str, ttl: float, clock: Callable[[], float]) -> None:
        self._root = root
        self._cache: TTLCache[ContainerId, Listing] = TTLCache(4096, ttl, timer=clock)
        self._locks: dict[ContainerId, trio.Lock] = {}
        # own uploads (file, id) and deletes (None, id) made while a listing is being fetched
        self._journal: dict[ContainerId, list[tuple[ContainerFile | None, FileId]]] = {}

    async def get(
        self,
        cid: ContainerId,
        fetch: Callable[[], Awaitable[list[ContainerFile]]],
        *,
        aliases: Mapping[FileId, str],
    ) -> Listing:
        """The cached listing of ``cid``, or a fresh one from ``fetch`` (held under the
        container's fetch lock: concurrent lookups share one fetch)."""
        async with self._locks.setdefault(cid, trio.Lock()):
            listing = self._cache.get(cid)
            if listing is not None:
                return listing
            # the mount's own changes made while the listing is fetched may be missing from it:
            # journal them and replay them on the fresh listing
            journal = self._journal[cid] = []
            try:
                files = await fetch()
            finally:
                del self._journal[cid]
            listing = Listing(files, root=self._root, aliases=aliases)
            for added, removed in journal:
                if added is not None:
                    listing.add(added)
                else:
                    listing.remove(removed)
            self._cache[cid] = listing
            return listing

    def start_empty(self, cid: ContainerId, *, aliases: Mapping[FileId, str]) -> None:
        """A container made here: known to hold no file, without a listing call."""
        self._cache[cid] = Listing((), root=self._root, aliases=aliases)

    def invalidate(self, cid: ContainerId) -> None:
        self._cache.pop(cid, None)

    def added(self, cid: ContainerId, f: ContainerFile) -> None:
        """The mount put ``f`` on the server."""
        if cid in self._journal:
            self._journal[cid].append((f, f.id))
        listing = self._cache.get(cid)
        if listing is not None:
            listing.add(f)

    def removed(self, cid: ContainerId, fid: FileId) -> None:
        """The mount deleted ``fid`` from the server."""
        if cid in self._journal:
            self._journal[cid].append((None, fid))
        listing = self._cache.get(cid)
        if listing is not None:
            listing.remove(fid)

    def refile(self, cid: ContainerId, fid: FileId) -> None:
        """The alias of ``fid`` changed."""
        listing = self._cache.get(cid)
        if listing is not None:
            listing.refile(fid)
