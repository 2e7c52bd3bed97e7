"""Listings: one container's files as last listed, indexed by directory and patched in place
by the mount's own changes (``Listing``), and the TTL cache, fetch locks and replay journal
that hold them (``Listings``). Layer: namespace.

A container may hold 100,000 files: a lookup or a readdir must cost the entries of one
directory, not the files of the container. The naming rules (``paths.place_files``) run
once per listing, with the name memory; their result is kept only as an index by directory
(name -> file, and the directories, counted). The mount's own changes patch that index: a
deleted file leaves its place (every other file keeps its remembered path), an uploaded file
takes the path it claimed when that path is free; anything else places the listing again.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager

from cachetools import TTLCache

from containerfs import paths
from containerfs.aio import FetchGate
from containerfs.models import ContainerFile, ContainerId, FileId
from containerfs.ns.memory import NameMemory
from containerfs.ns.overlay import DirTree


class Listing:
    """One container's files, placed by the naming rules and indexed by display directory.

    ``aliases`` is the namespace's record of where this container's files are shown (file id ->
    display path), and ``memory`` where each was shown last: both read here; the placement is
    written back to ``memory`` each time the listing is placed. ``expected`` gives the names
    of the files the mount is creating in the container right now (``Listings.expecting``).
    """

    __slots__ = (
        "_aliases",
        "_cid",
        "_dirs",
        "_expected",
        "_files",
        "_index",
        "_memory",
        "_root",
        "_withheld",
    )

    def __init__(
        self,
        cid: ContainerId,
        files: Iterable[ContainerFile],
        *,
        root: str,
        aliases: Mapping[FileId, str],
        memory: NameMemory,
        expected: Callable[[], Collection[str]] = tuple,
    ) -> None:
        self._cid = cid
        self._root = root
        self._aliases = aliases
        self._memory = memory
        self._expected = expected
        self._withheld = False  # the placement left out a file that may be the mount's own
        self._files: dict[FileId, ContainerFile] = {f.id: f for f in files}
        # directory -> display path -> file, and the directories the files imply; None: to be
        # placed. Keyed by the whole path, the very string the name memory and the file's
        # node hold: 100,000 files need one copy of their paths, not three
        self._index: dict[str, dict[str, ContainerFile]] | None = None
        self._dirs = DirTree()

    def __len__(self) -> int:
        return len(self._files)

    def files(self) -> Iterator[ContainerFile]:
        yield from self._files.values()

    # ---- changes ----------------------------------------------------------------------------
    def add(self, f: ContainerFile) -> None:
        """``f`` is on the server now: shown at the path it claimed (``NameMemory.claim``) when
        that path is free, else the listing is placed again."""
        self.remove(f.id)
        self._files[f.id] = f
        path = self._memory.shown(self._cid).get(f.id)
        if self._index is None:
            return
        if path is not None and self._free(path):
            parent = posixpath.dirname(path)
            self._index.setdefault(parent, {})[path] = f  # cp -r into a large directory
            self._dirs.add(parent)
        else:
            self._unplace()

    def remove(self, fid: FileId) -> ContainerFile | None:
        """``fid`` is gone from the server; what it was, if listed. The others keep their
        paths, so only its own entry goes (call before the memory forgets it)."""
        f = self._files.pop(fid, None)
        if f is None or self._index is None:
            return f
        path = self._memory.shown(self._cid).get(fid)
        parent = posixpath.dirname(path) if path is not None else ""
        entries = self._index.get(parent)
        if path is None or entries is None or entries.get(path) is not f:
            self._unplace()  # not where the memory says: place everything again
            return f
        del entries[path]
        if not entries:
            del self._index[parent]
        self._dirs.remove(parent)
        return f

    def refile(self, fid: FileId) -> None:
        """The alias of ``fid`` changed: place the listing again."""
        if fid in self._files:
            self._unplace()

    def expectation_ended(self) -> None:
        """A create the placement waited for is answered: place again what it left out."""
        if self._withheld:
            self._unplace()

    def _unplace(self) -> None:
        self._index = None
        self._dirs = DirTree()

    def _free(self, path: str) -> bool:
        """Whether a file can take ``path`` without moving any other: its directory exists
        (so nothing above it is a file), and no file or directory is there."""
        assert self._index is not None
        parent = posixpath.dirname(path)
        return (
            parent in self._dirs
            and path not in self._index.get(parent, {})
            and (path not in self._dirs)
        )

    # ---- queries: each costs the entries of one directory ------------------------------------
    def _placed(self) -> dict[str, dict[str, ContainerFile]]:
        if self._index is None:
            placed = paths.place_files(
                self._files.values(),
                root=self._root,
                aliases=self._aliases,
                shown=self._memory.shown(self._cid),
                withhold=self._expected(),
            )
            self._withheld = len(placed) < len(self._files)
            self._memory.remember(self._cid, placed)
            index: dict[str, dict[str, ContainerFile]] = {}
            for path, f in placed.items():
                parent = posixpath.dirname(path)
                index.setdefault(parent, {})[path] = f
                self._dirs.add(parent)
            self._index = index
        return self._index

    def is_dir(self, path: str) -> bool:
        """Whether the listed files imply a directory at ``path`` ("" always)."""
        self._placed()
        return path in self._dirs

    def file(self, path: str) -> ContainerFile | None:
        """The file shown at display path ``path``, if any."""
        return self._placed().get(posixpath.dirname(path), {}).get(path)

    def subdirs(self, path: str) -> set[str]:
        """The names of the directories directly under ``path`` (do not modify)."""
        self._placed()
        return self._dirs.subdirs(path)

    def placed(self, path: str) -> Mapping[str, ContainerFile]:
        """Display path -> file of the files shown in directory ``path`` (do not modify)."""
        return self._placed().get(path, {})


class Listings:
    """The containers' listings: a TTL cache, one fetch at a time per container, and the
    replay journal that keeps the mount's own changes made while a listing was on its way.

    The fetch itself (which containers can be listed, the client call) is the namespace's,
    passed to ``get``.
    """

    def __init__(
        self, *, root: str, ttl: float, clock: Callable[[], float], memory: NameMemory
    ) -> None:
        self._root = root
        self._memory = memory
        self._cache: TTLCache[ContainerId, Listing] = TTLCache(4096, ttl, timer=clock)
        # one listing call at a time per container; a failed one fails its waiters too
        self._fetching = FetchGate()
        # own uploads (file, id) and deletes (None, id) made while a listing is being fetched
        self._journal: dict[ContainerId, list[tuple[ContainerFile | None, FileId]]] = {}
        # files this mount is deleting (or will: orphans queued for a retry), hidden from every
        # listing, even one fetched before the delete went out, until it is confirmed or given up
        self._deleting: dict[ContainerId, set[FileId]] = {}
        # names of the files the mount is creating, per container, until their answer is
        # handled (``expecting``)
        self._expected: dict[ContainerId, Counter[str]] = {}

    async def get(
        self,
        cid: ContainerId,
        fetch: Callable[[], Awaitable[list[ContainerFile]]],
        *,
        aliases: Mapping[FileId, str],
    ) -> Listing:
        """The cached listing of ``cid``, or a fresh one from ``fetch`` (behind the
        container's fetch gate: concurrent lookups share one fetch, and its failure)."""
        listing = self._cache.get(cid)
        if listing is not None:
            # no schedule point: a lookup answered from the cache never waits behind the
            # steps of every other ready task (uploads in the background: ~1 ms each)
            return listing
        async with self._fetching(cid):
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
            hidden = self._deleting.get(cid, set())
            shown = [f for f in files if f.id not in hidden]
            listing = self._listing(cid, shown, aliases)
            for added, removed in journal:
                if added is not None:
                    listing.add(added)
                else:
                    listing.remove(removed)
            self._cache[cid] = listing
            return listing

    def start_empty(self, cid: ContainerId, *, aliases: Mapping[FileId, str]) -> None:
        """A container made here: known to hold no file, without a listing call."""
        self._cache[cid] = self._listing(cid, (), aliases)

    def _listing(
        self, cid: ContainerId, files: Iterable[ContainerFile], aliases: Mapping[FileId, str]
    ) -> Listing:
        return Listing(
            cid,
            files,
            root=self._root,
            aliases=aliases,
            memory=self._memory,
            expected=lambda: self._expected.get(cid, ()),
        )

    @contextmanager
    def expecting(self, cid: ContainerId, name: str) -> Iterator[None]:
        """The mount is creating a file named ``name`` in ``cid`` (an upload and the deletes
        of what it supersedes). Until that is done, a listing does not show a file of that
        name it does not know yet: the server may hold the new file before its answer
        arrives, and it would show beside the mount's own under another name."""
        names = self._expected.setdefault(cid, Counter())
        names[name] += 1
        try:
            yield
        finally:
            names[name] -= 1
            if not names[name]:
                del names[name]
            if not names:
                self._expected.pop(cid, None)
            listing = self._cache.get(cid)
            if listing is not None:
                listing.expectation_ended()

    def invalidate(self, cid: ContainerId) -> None:
        self._cache.pop(cid, None)

    def added(self, cid: ContainerId, f: ContainerFile) -> None:
        """The mount put ``f`` on the server."""
        if cid in self._journal:
            self._journal[cid].append((f, f.id))
        listing = self._cache.get(cid)
        if listing is not None:
            listing.add(f)

    def deleting(self, cid: ContainerId, fid: FileId) -> None:
        """The mount is deleting ``fid`` (or has queued its delete): hide it from now on."""
        self._deleting.setdefault(cid, set()).add(fid)
        listing = self._cache.get(cid)
        if listing is not None:
            listing.remove(fid)

    def delete_abandoned(self, cid: ContainerId, fid: FileId) -> None:
        """The delete of ``fid`` will not be tried again: the file may still be there, so the
        next listing shows it again (the cached one no longer holds it)."""
        if self._stop_hiding(cid, fid):
            self._cache.pop(cid, None)

    def _stop_hiding(self, cid: ContainerId, fid: FileId) -> bool:
        hidden = self._deleting.get(cid)
        if hidden is None or fid not in hidden:
            return False
        hidden.discard(fid)
        if not hidden:
            del self._deleting[cid]
        return True

    def removed(self, cid: ContainerId, fid: FileId) -> None:
        """The mount deleted ``fid`` from the server."""
        self._stop_hiding(cid, fid)
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
