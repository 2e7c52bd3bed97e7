"""Namespace: the inode table, listings, display names and their TTL caches.

Turns the API's flat lists (containers; files with server paths) into a tree of nodes that
the operations layer can serve ``lookup``/``readdir``/``getattr`` from. One paginated listing
per container serves every lookup in it; listings live in cachetools TTL caches and are patched
in place by the mount's own changes, so a change made here costs no extra listing call. Knows
nothing about FUSE or HTTP.

Invariants:
- a node's key (``("c", cid)``, ``("d", cid, path)``, ``("f", cid, path)``) maps to exactly one
  inode while the node lives; renames move the node to its new key and keep the inode;
- a node is dropped from the table only when it is gone *and* the kernel holds no lookup
  reference to it (``forget``), so an inode the kernel knows always resolves.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import posixpath
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TTLCache

from containerfs import paths as names
from containerfs.aio import FetchGate, in_thread
from containerfs.errors import ContainerFsError, NotFound
from containerfs.models import Container, ContainerFile, ContainerId, FileId, NetworkPolicy
from containerfs.ns.created import CreationLog
from containerfs.ns.inodes import ROOT_INODE as ROOT_INODE
from containerfs.ns.inodes import Attrs as Attrs
from containerfs.ns.inodes import Kind as Kind
from containerfs.ns.inodes import Node as Node
from containerfs.ns.inodes import NodeIndex
from containerfs.ns.listings import Listing, Listings
from containerfs.ns.memory import NameMemory
from containerfs.ns.overlay import Overlay
from containerfs.state import CreatedWith, State

log = logging.getLogger(__name__)


class ContainerSource(Protocol):
    def list_containers(self) -> Any: ...  # AsyncIterator[Container]
    def list_files(self, container_id: ContainerId) -> Any: ...  # AsyncIterator[ContainerFile]
    async def retrieve_container(self, container_id: ContainerId) -> Container: ...
    async def create_container(
        self,
        name: str,
        *,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        network_policy: NetworkPolicy | None = None,
        file_ids: Sequence[str] = (),
        skills: Sequence[str] = (),
    ) -> Container: ...
    async def delete_container(self, container_id: ContainerId) -> None: ...
    async def holds_files(self, container_id: ContainerId) -> bool: ...


@dataclass
class _Counters:
    container_listings: int = 0
    file_listings: int = 0
    lookups: int = 0
    negative_lookups: int = 0


@dataclass(frozen=True)
class NamespaceStats:
    container_listings: int
    file_listings: int
    lookups: int
    negative_lookups: int
    inodes: int


class Namespace:
    def __init__(
        self,
        client: ContainerSource,
        state: State,
        *,
        root: str = "/mnt/data",
        ttl: float = 10.0,
        show_expired: bool = False,
        read_only: bool = False,
        uid: int = 0,
        gid: int = 0,
        file_mode: int = 0o644,
        dir_mode: int = 0o755,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.state = state
        self.root = root
        self.show_expired = show_expired
        self.read_only = read_only
        self.uid = uid
        self.gid = gid
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self._nodes: dict[int, Node] = {}
        self._by_key = NodeIndex()
        self._next_inode = ROOT_INODE + 1
        self._containers: TTLCache[str, dict[str, Container]] = TTLCache(1, ttl, timer=clock)
        self._memory = NameMemory()  # where each file was shown: it keeps that path
        self._listings = Listings(root=root, ttl=ttl, clock=clock, memory=self._memory)
        self._by_id: TTLCache[ContainerId, Container | None] = TTLCache(1024, ttl, timer=clock)
        # the containers last seen expired, kept past the TTL: asked for every stat
        self._expired: set[ContainerId] = set()
        # where files are shown, by container (read by its listing, see ``Listing.refile``)
        self._aliases: dict[ContainerId, dict[FileId, str]] = {}
        self._loaded: set[ContainerId] = set()  # containers whose aliases and dirs are read
        # files not (or not yet) on the server (being written, pending, local-only) and the
        # directories made here
        self._overlay = Overlay()
        # the directory each container showed as at its last listing (kept past the TTL)
        self._dir_names: dict[ContainerId, str] = {}
        # one listing call at a time per key; a failed one fails its waiters too
        self._fetching = FetchGate()
        # containers created here while the container listing is fetched (kept in it)
        self._created_meanwhile: dict[ContainerId, Container] | None = None
        self._listed: list[Container] = []  # the containers of the cached listing, expired too
        self._stats = _Counters()
        self.created = CreationLog(state)  # what the containers made here were made with
        self.root_node = Node(ROOT_INODE, Kind.ROOT)
        self._add(self.root_node)

    # ---- inode table -------------------------------------------------------------------
    def _add(self, node: Node) -> Node:
        self._nodes[node.inode] = node
        self._by_key.put(node)
        return node

    def _get_or_make(self, kind: Kind, cid: ContainerId, path: str = "") -> Node:
        node = self._by_key.get(kind, cid, path)
        if node is None:
            node = Node(self._next_inode, kind, cid, path)
            self._next_inode += 1
            self._add(node)
        node.gone = False
        return node

    def node(self, inode: int) -> Node | None:
        return self._nodes.get(inode)

    def known(self, kind: Kind, cid: ContainerId, path: str = "") -> Node | None:
        """The live node of that kind at ``cid``/``path``, if there is one (asks no server)."""
        return self._by_key.get(kind, cid, path)

    def remember(self, node: Node) -> None:
        """The kernel took one more lookup reference to ``node`` (``forget`` returns them)."""
        node.lookups += 1

    def forget(self, inode: int, count: int) -> None:
        node = self._nodes.get(inode)
        if node is None or node.kind is Kind.ROOT:
            return
        node.lookups = max(0, node.lookups - count)
        self._maybe_drop(node)

    def _maybe_drop(self, node: Node) -> None:
        if node.gone and node.lookups == 0 and node.opens == 0 and node.spool is None:
            self._nodes.pop(node.inode, None)
            self._by_key.pop(node)

    def mark_gone(self, node: Node) -> None:
        node.gone = True
        self._by_key.pop(node)
        if node.cid is not None:
            self._overlay.drop(node.cid, node.path, node)
        self._maybe_drop(node)

    def drop_remote(self, node: Node) -> None:
        """``node`` no longer stands for a server file (deleted, or superseded by a rename)."""
        node.remote = None

    def statistics(self) -> NamespaceStats:
        return NamespaceStats(**vars(self._stats), inodes=len(self._nodes))

    # ---- cached listings ---------------------------------------------------------------
    async def containers(self) -> dict[str, Container]:
        """Directory name -> container, from one cached, paginated listing."""
        async with self._fetching("containers"):
            cached = self._containers.get("all")
            if cached is not None:
                return cached
            # containers created here while the listing is fetched may be missing from it
            self._created_meanwhile = {}
            try:
                listed = [c async for c in self.client.list_containers()]
            finally:
                made, self._created_meanwhile = self._created_meanwhile, None
            listed += [c for c in made.values() if c.id not in {x.id for x in listed}]
            self._stats.container_listings += 1
            self._listed = listed
            by_name = self._named(listed)
            self._containers["all"] = by_name
            self._dir_names = {c.id: name for name, c in by_name.items()}
            for c in listed:
                self._saw(c.id, c)
            return by_name

    def _saw(self, cid: ContainerId, c: Container | None) -> None:
        self._by_id[cid] = c
        if c is not None and c.expired:
            self._expired.add(cid)
        else:
            self._expired.discard(cid)

    def invalidate_containers(self) -> None:
        self._containers.pop("all", None)

    def _named(self, listed: list[Container]) -> dict[str, Container]:
        # named among all listed: a container's name does not change as others expire
        return {
            name: c
            for name, c in names.container_dir_names(listed).items()
            if self.show_expired or not c.expired
        }

    def _learn_container(self, c: Container) -> None:
        """Show a container created here without listing again: the cached listing, if any,
        gains it (names recomputed by the usual rules; its expiry time is kept)."""
        self._saw(c.id, c)
        if self._created_meanwhile is not None:
            self._created_meanwhile[c.id] = c
        cached = self._containers.get("all")
        if cached is not None:
            self._listed = [*self._listed, c]
            renamed = self._named(self._listed)
            cached.clear()  # in place: the cached listing keeps its expiry time
            cached.update(renamed)
            self._dir_names = {c.id: name for name, c in renamed.items()}

    def container_changed(self, cid: ContainerId) -> None:
        """The server says the container changed (it expired): ask again before trusting the
        cached container, its name or its files."""
        self._by_id.pop(cid, None)
        self.invalidate_containers()
        self.invalidate_listing(cid)

    async def container_dir(self, cid: ContainerId) -> str:
        """The directory name a container is shown under (its id if it is not listed)."""
        for name, c in (await self.containers()).items():
            if c.id == cid:
                return name
        return cid

    async def container(self, cid: ContainerId) -> Container | None:
        """A container by id, listed or not (a ``cntr_…`` name always resolves)."""
        if cid in self._by_id:
            return self._by_id[cid]
        async with self._fetching(("container", cid)):
            if cid in self._by_id:
                return self._by_id[cid]
            try:
                found: Container | None = await self.client.retrieve_container(cid)
            except NotFound:
                found = None
            self._saw(cid, found)
            return found

    async def _listing(self, cid: ContainerId) -> Listing:
        return await self._listings.get(
            cid, lambda: self._fetch_files(cid), aliases=self._aliases.setdefault(cid, {})
        )

    async def _fetch_files(self, cid: ContainerId) -> list[ContainerFile]:
        await self._load_local(cid)
        container = await self.container(cid)
        if container is None or container.expired:
            return []
        files = [f async for f in self.client.list_files(cid)]
        self._stats.file_listings += 1
        return files

    async def _load_local(self, cid: ContainerId) -> None:
        """Read once what the state database keeps of a container: aliases, directories."""
        if cid in self._loaded:
            return
        stored = await in_thread(lambda: self.state.aliases(cid))
        made = await in_thread(lambda: self.state.dirs(cid))
        self._loaded.add(cid)
        aliases = self._aliases.setdefault(cid, {})
        for fid, path in stored.items():
            aliases.setdefault(fid, path)
        for d in made:
            self._overlay.add_dir(cid, d)

    def invalidate_listing(self, cid: ContainerId) -> None:
        self._listings.invalidate(cid)

    async def _is_dir(self, cid: ContainerId, path: str) -> bool:
        return (await self._listing(cid)).is_dir(path) or self._overlay.is_dir(cid, path)

    # ---- where things show in the mount (for the status: cached answers only) ----------
    def shown_path(self, cid: ContainerId, path: str) -> str:
        """Where a container's file ``path`` shows, relative to the mount: under the
        directory the container showed as at its last listing, else under its id."""
        top = self._dir_names.get(cid, str(cid))
        return posixpath.join(top, path) if path else top

    def file_path(self, cid: ContainerId, fid: FileId) -> str | None:
        """The path in its container of a file by id, where the mount last showed it."""
        return self._memory.shown(cid).get(fid)

    # ---- lookups -----------------------------------------------------------------------
    async def lookup(self, parent: Node, name: str) -> Node | None:
        """The child ``name`` of a directory node, or None. Costs at most one listing."""
        self._stats.lookups += 1
        found = await self._lookup(parent, name)
        if found is None:
            self._stats.negative_lookups += 1
        return found

    async def _lookup(self, parent: Node, name: str) -> Node | None:
        if parent.kind is Kind.ROOT:
            by_name = await self.containers()
            c = by_name.get(name)
            # no directory is named like another container's id: an id always resolves to
            # its own container, listed or not
            if c is None and names.looks_like_container_id(name):
                c = await self.container(ContainerId(name))
                if c is not None and c.expired and not self.show_expired:
                    c = None
            return self._container_node(c) if c is not None else None
        assert parent.cid is not None
        cid = parent.cid
        path = posixpath.join(parent.path, name) if parent.path else name
        local = self._overlay.file(cid, path)
        if local is not None:
            return local
        remote = (await self._listing(cid)).file(path)
        if remote is not None:
            return self._file_node(cid, path, remote)
        if await self._is_dir(cid, path):
            return self._get_or_make(Kind.DIR, cid, path)
        self._vanish(cid, path)
        return None

    def _vanish(self, cid: ContainerId, path: str) -> None:
        """A path that is no longer there: let go of a stale node for it."""
        for kind in (Kind.FILE, Kind.DIR):
            stale = self._by_key.get(kind, cid, path)
            if stale is not None and stale.spool is None:
                self.mark_gone(stale)

    def _container_node(self, c: Container) -> Node:
        node = self._get_or_make(Kind.CONTAINER, c.id)
        node.container = c
        return node

    def _file_node(self, cid: ContainerId, path: str, remote: ContainerFile) -> Node:
        node = self._get_or_make(Kind.FILE, cid, path)
        if node.remote is None or node.remote.id != remote.id:
            node.size_hint = None
        node.remote = remote
        return node

    async def list_dir(self, node: Node) -> list[tuple[str, Node]]:
        """A stable snapshot of a directory's entries, sorted by name."""
        if node.kind is Kind.ROOT:
            by_name = await self.containers()
            return [(n, self._container_node(c)) for n, c in sorted(by_name.items())]
        assert node.cid is not None
        cid = node.cid
        listing = await self._listing(cid)
        entries: dict[str, Node] = {}
        prefix = node.path + "/" if node.path else ""
        for names_of in (listing.subdirs, lambda d: self._overlay.subdirs(cid, d)):
            for name in names_of(node.path):
                entries[name] = self._get_or_make(Kind.DIR, cid, prefix + name)
        for path, f in listing.placed(node.path).items():
            entries[path[len(prefix) :]] = self._file_node(cid, path, f)
        entries.update(self._overlay.files_in(cid, node.path))
        return sorted(entries.items())

    async def is_empty(self, node: Node) -> bool:
        return not await self.list_dir(node)

    # ---- attributes --------------------------------------------------------------------
    def writable(self, node: Node) -> bool:
        if self.read_only:
            return False
        return node.cid not in self._expired

    def _known_size(self, node: Node) -> int | None:
        if node.spool is not None:
            return int(node.spool.size)
        if node.size_hint is not None:  # learned from the content: it wins over the listing
            return node.size_hint
        return node.remote.bytes if node.remote is not None else None

    def size(self, node: Node) -> int:
        return self._known_size(node) or 0

    def size_known(self, node: Node) -> bool:
        return self._known_size(node) is not None

    def attrs(self, node: Node) -> Attrs:
        ro = not self.writable(node)
        if node.is_dir:
            mode = stat.S_IFDIR | (node.mode if node.mode is not None else self.dir_mode)
            size, nlink = 4096, 2
            created = node.container.created_at if node.container else 0
        else:
            mode = stat.S_IFREG | (node.mode if node.mode is not None else self.file_mode)
            size, nlink = self.size(node), 1
            created = node.remote.created_at if node.remote else 0
        if ro:
            mode &= ~0o222
        if not created and not node.born_ns:
            node.born_ns = time.time_ns()  # fixed from now on: rsync and make see it stay put
        created_ns = created * 1_000_000_000 if created else node.born_ns
        mtime = node.mtime_ns if node.mtime_ns is not None else created_ns
        atime = node.atime_ns if node.atime_ns is not None else mtime
        return Attrs(node.inode, mode, nlink, size, self.uid, self.gid, mtime, atime, mtime)

    # ---- changes made through the mount ------------------------------------------------
    def new_file(self, parent: Node, name: str) -> Node:
        """A file created here: local until its first upload."""
        assert parent.cid is not None
        path = self.child_path(parent, name)
        node = self._get_or_make(Kind.FILE, parent.cid, path)
        node.remote = None
        self._overlay.put(parent.cid, path, node)
        return node

    def child_path(self, parent: Node, name: str) -> str:
        return posixpath.join(parent.path, name) if parent.path else name

    def keep_local(self, node: Node) -> None:
        """Show ``node`` from the local overlay (its content lives in a spool)."""
        assert node.cid is not None
        self._overlay.put(node.cid, node.path, node)

    def release_local(self, node: Node) -> None:
        if node.cid is not None:
            self._overlay.drop(node.cid, node.path, node)
        self._maybe_drop(node)

    async def file_uploaded(self, node: Node, new: ContainerFile) -> None:
        """``node`` now has server content ``new``; record where the server put it."""
        assert node.cid is not None
        await self._record_file(node.cid, node.path, new)
        node.remote = new
        node.size_hint = None

    async def file_added(self, parent: Node, name: str, new: ContainerFile) -> Node:
        """A server file made here without an upload (copied from the Files API) to be shown
        as ``name`` in ``parent``: shown there at once, and kept there like an upload."""
        assert parent.cid is not None
        path = self.child_path(parent, name)
        await self._listing(parent.cid)  # the container's recorded aliases are loaded first
        await self._record_file(parent.cid, path, new)
        return self._file_node(parent.cid, path, new)

    async def _record_file(self, cid: ContainerId, path: str, new: ContainerFile) -> None:
        """Show the new server file ``new`` at ``path``: an alias when the server's path
        differs (kept in the state, so it survives cache expiry and remounts)."""
        shown = names.relative_path(new.path, self.root)
        aliases = self._aliases.setdefault(cid, {})
        # recorded when the rules alone would show the file elsewhere after a remount
        if shown != path or names.reserved_file_name(posixpath.basename(path)):
            aliases[new.id] = path
            await in_thread(lambda: self.state.set_alias(cid, new.id, path))
        self._memory.claim(cid, new.id, path)
        self._listings.added(cid, new)

    async def file_deleted(self, cid: ContainerId, fid: FileId) -> None:
        self._listings.removed(cid, fid)  # before the memory forgets where it was
        self._memory.forget(cid, fid)
        if self._aliases.get(cid, {}).pop(fid, None) is not None:
            await in_thread(lambda: self.state.drop_alias(fid))

    def move(self, node: Node, cid: ContainerId, path: str) -> None:
        """Re-key ``node`` (and, for a directory, the nodes under it) to ``cid``/``path``."""
        old_cid, old_path = node.cid, node.path
        moving = [node]
        if node.kind is Kind.DIR and old_cid is not None:
            moving += self._by_key.under(old_cid, old_path + "/")
        for n in moving:
            self._by_key.pop(n)
            was_local = old_cid is not None and self._overlay.drop(old_cid, n.path, n)
            n.path = path + n.path[len(old_path) :]
            n.cid = cid
            self._by_key.put(n)
            if was_local:
                self._overlay.put(cid, n.path, n)

    def show_at(self, node: Node, remote: ContainerFile, path: str) -> None:
        """Show a server file at ``path`` for this mount's life only (not recorded on disk)."""
        self._aliases.setdefault(remote.container_id, {})[remote.id] = path
        self._memory.claim(remote.container_id, remote.id, path)
        self._listings.refile(remote.container_id, remote.id)

    async def descendant_files(self, node: Node) -> list[Node]:
        out: list[Node] = []
        for _, child in await self.list_dir(node):
            if child.is_dir:
                out += await self.descendant_files(child)
            else:
                out.append(child)
        return out

    async def move_dirs(self, node: Node, cid: ContainerId, path: str) -> None:
        """After its files moved: move a directory node and the local directories under it."""
        assert node.cid is not None
        old_cid, old = node.cid, node.path
        for d in self._overlay.made_under(old_cid, old):
            new = path + d[len(old) :]
            self._overlay.drop_dir(old_cid, d)
            self._overlay.add_dir(cid, new)
            await in_thread(self.state.drop_dir, old_cid, d)
            await in_thread(self.state.add_dir, cid, new)
        self.move(node, cid, path)

    async def add_dir(self, parent: Node, name: str) -> Node:
        assert parent.cid is not None
        cid, path = parent.cid, self.child_path(parent, name)
        await self._listing(cid)
        self._overlay.add_dir(cid, path)
        await in_thread(lambda: self.state.add_dir(cid, path))
        return self._get_or_make(Kind.DIR, cid, path)

    async def drop_dir(self, node: Node) -> None:
        assert node.cid is not None
        cid, path = node.cid, node.path
        self._overlay.drop_dir(cid, path)
        await in_thread(lambda: self.state.drop_dir(cid, path))
        self.mark_gone(node)

    async def create_container(
        self,
        name: str,
        *,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        network_policy: NetworkPolicy | None = None,
        file_ids: Sequence[str] = (),
        skills: Sequence[str] = (),
    ) -> Node:
        """Create a container (one call) and show it at once, without listing again."""
        c = await self.client.create_container(
            name,
            expires_after_minutes=expires_after_minutes,
            memory_limit=memory_limit,
            network_policy=network_policy,
            file_ids=file_ids,
            skills=skills,
        )
        await self.created.record(c.id, CreatedWith(tuple(file_ids), tuple(skills)))
        self._learn_container(c)
        if not file_ids:  # known to be empty; with files, the first look lists them
            self._listings.start_empty(c.id, aliases=self._aliases.setdefault(c.id, {}))
        return self._container_node(c)

    async def delete_container(self, node: Node) -> None:
        assert node.cid is not None
        cid = node.cid
        # deleting a container deletes its files: only on a fresh, well-formed answer that
        # shows none (a file the listing skipped as malformed still counts)
        if await self.client.holds_files(cid):
            raise ContainerFsError.with_errno(errno.ENOTEMPTY, f"{cid} still holds files")
        with contextlib.suppress(NotFound):
            await self.client.delete_container(cid)
        self._saw(cid, None)
        self.invalidate_containers()
        self._listings.invalidate(cid)
        self._aliases.pop(cid, None)
        self._memory.drop(cid)
        self._loaded.discard(cid)
        self._overlay.forget_dirs(cid)
        self.created.forget(cid)
        await in_thread(lambda: self.state.forget_container(cid))
        self.mark_gone(node)

    def local_nodes(self) -> Iterable[Node]:
        return self._overlay.nodes()

    async def restore(self, cid: ContainerId, path: str) -> Node:
        """A node for a pending upload found at start (its spool is attached by the writer)."""
        listing = await self._listing(cid)
        node = self._get_or_make(Kind.FILE, cid, path)
        node.remote = listing.file(path)
        return node
