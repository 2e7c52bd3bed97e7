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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TTLCache

from containerfs import paths as names
from containerfs.aio import FetchGate, in_thread
from containerfs.errors import ContainerFsError, NotFound
from containerfs.models import Container, ContainerFile, ContainerId, FileId
from containerfs.ns.inodes import ROOT_INODE as ROOT_INODE
from containerfs.ns.inodes import Attrs as Attrs
from containerfs.ns.inodes import Kind as Kind
from containerfs.ns.inodes import Node as Node
from containerfs.ns.inodes import node_key
from containerfs.ns.listings import Listing
from containerfs.ns.memory import NameMemory
from containerfs.state import State

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
        self._by_key: dict[tuple[str, ...], Node] = {}
        self._next_inode = ROOT_INODE + 1
        self._containers: TTLCache[str, dict[str, Container]] = TTLCache(1, ttl, timer=clock)
        self._listings: TTLCache[ContainerId, Listing] = TTLCache(4096, ttl, timer=clock)
        self._by_id: TTLCache[ContainerId, Container | None] = TTLCache(1024, ttl, timer=clock)
        self._aliases: dict[ContainerId, dict[FileId, str]] = {}
        self._dirs: dict[ContainerId, set[str]] = {}
        self._memory = NameMemory()  # where each file was shown: it keeps that path
        # files not (or not yet) on the server: being written, pending, local-only
        self._local: dict[ContainerId, dict[str, Node]] = {}
        # one listing call at a time per listing; a failed one fails its waiters too
        self._fetching = FetchGate()
        # own uploads (file, id) and deletes (None, id) made while a listing is being fetched
        self._journal: dict[ContainerId, list[tuple[ContainerFile | None, FileId]]] = {}
        self._stats = _Counters()
        self.root_node = Node(ROOT_INODE, Kind.ROOT)
        self._add(self.root_node)

    # ---- inode table -------------------------------------------------------------------
    def _add(self, node: Node) -> Node:
        self._nodes[node.inode] = node
        self._by_key[node.key] = node
        return node

    def _get_or_make(self, kind: Kind, cid: ContainerId, path: str = "") -> Node:
        node = self._by_key.get(node_key(kind, cid, path))
        if node is None:
            node = Node(self._next_inode, kind, cid, path)
            self._next_inode += 1
            self._add(node)
        node.gone = False
        return node

    def node(self, inode: int) -> Node | None:
        return self._nodes.get(inode)

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
            if self._by_key.get(node.key) is node:
                del self._by_key[node.key]

    def mark_gone(self, node: Node) -> None:
        node.gone = True
        if self._by_key.get(node.key) is node:
            del self._by_key[node.key]
        if node.cid is not None:
            local = self._local.get(node.cid, {})
            if local.get(node.path) is node:
                del local[node.path]
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
            listed = [c async for c in self.client.list_containers()]
            self._stats.container_listings += 1
            # named among all listed: a container's name does not change as others expire
            by_name = {
                name: c
                for name, c in names.container_dir_names(listed).items()
                if self.show_expired or not c.expired
            }
            self._containers["all"] = by_name
            for c in listed:
                self._by_id[c.id] = c
            return by_name

    def invalidate_containers(self) -> None:
        self._containers.pop("all", None)

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
            self._by_id[cid] = found
            return found

    async def _listing(self, cid: ContainerId) -> Listing:
        async with self._fetching(("files", cid)):
            listing = self._listings.get(cid)
            if listing is not None:
                return listing
            if cid not in self._aliases:
                self._aliases[cid] = await in_thread(lambda: self.state.aliases(cid))
                self._dirs[cid] = await in_thread(lambda: self.state.dirs(cid))
            # the mount's own changes made while the listing is fetched may be missing from it:
            # journal them and replay them on the fresh listing
            journal = self._journal[cid] = []
            try:
                container = await self.container(cid)
                files: list[ContainerFile] = []
                if container is not None and not container.expired:
                    files = [f async for f in self.client.list_files(cid)]
                    self._stats.file_listings += 1
            finally:
                del self._journal[cid]
            listing = Listing({f.id: f for f in files})
            for added, removed in journal:
                if added is not None:
                    listing.files[added.id] = added
                else:
                    listing.files.pop(removed, None)
            self._listings[cid] = listing
            return listing

    def invalidate_listing(self, cid: ContainerId) -> None:
        self._listings.pop(cid, None)

    async def _view(self, cid: ContainerId) -> tuple[dict[str, ContainerFile], set[str]]:
        listing = await self._listing(cid)
        aliases = self._aliases.get(cid, {})

        def place(files: Iterable[ContainerFile]) -> dict[str, ContainerFile]:
            shown = self._memory.shown(cid)
            placed = names.place_files(files, root=self.root, aliases=aliases, shown=shown)
            self._memory.remember(cid, placed)
            return placed

        return listing.view(place)

    async def _dirs_of(self, cid: ContainerId) -> set[str]:
        _, remote_dirs = await self._view(cid)
        dirs = set(remote_dirs) | self._dirs.get(cid, set())
        for d in list(self._dirs.get(cid, set())):
            dirs.update(names.ancestors(d + "/x"))
        for path in self._local.get(cid, {}):
            dirs.update(names.ancestors(path))
        return dirs

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
        local = self._local.get(cid, {}).get(path)
        if local is not None:
            return local
        placed, _ = await self._view(cid)
        remote = placed.get(path)
        if remote is not None:
            return self._file_node(cid, path, remote)
        if path in await self._dirs_of(cid):
            return self._get_or_make(Kind.DIR, cid, path)
        self._vanish(cid, path)
        return None

    def _vanish(self, cid: ContainerId, path: str) -> None:
        """A path that is no longer there: let go of a stale node for it."""
        for kind in (Kind.FILE, Kind.DIR):
            stale = self._by_key.get(node_key(kind, cid, path))
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
        placed, _ = await self._view(cid)
        prefix = node.path + "/" if node.path else ""
        entries: dict[str, Node] = {}
        for d in await self._dirs_of(cid):
            if d and posixpath.dirname(d) == node.path:
                entries[posixpath.basename(d)] = self._get_or_make(Kind.DIR, cid, d)
        for path, f in placed.items():
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                entries[path[len(prefix) :]] = self._file_node(cid, path, f)
        for path, local in self._local.get(cid, {}).items():
            if posixpath.dirname(path) == node.path:
                entries[posixpath.basename(path)] = local
        return sorted(entries.items())

    async def is_empty(self, node: Node) -> bool:
        return not await self.list_dir(node)

    # ---- attributes --------------------------------------------------------------------
    def writable(self, node: Node) -> bool:
        if self.read_only:
            return False
        c = self._by_id.get(node.cid) if node.cid else None
        return not (c is not None and c.expired)

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
        self._local.setdefault(parent.cid, {})[path] = node
        return node

    def child_path(self, parent: Node, name: str) -> str:
        return posixpath.join(parent.path, name) if parent.path else name

    def keep_local(self, node: Node) -> None:
        """Show ``node`` from the local overlay (its content lives in a spool)."""
        assert node.cid is not None
        self._local.setdefault(node.cid, {})[node.path] = node

    def release_local(self, node: Node) -> None:
        if node.cid is not None and self._local.get(node.cid, {}).get(node.path) is node:
            del self._local[node.cid][node.path]
        self._maybe_drop(node)

    async def file_uploaded(self, node: Node, new: ContainerFile) -> None:
        """``node`` now has server content ``new``; record where the server put it."""
        assert node.cid is not None
        cid = node.cid
        shown = names.relative_path(new.path, self.root)
        aliases = self._aliases.setdefault(cid, {})
        # recorded when the rules alone would show the file elsewhere after a remount
        if shown != node.path or names.reserved_file_name(node.name):
            aliases[new.id] = node.path
            await in_thread(lambda: self.state.set_alias(cid, new.id, node.path))
        node.remote = new
        node.size_hint = None
        if cid in self._journal:
            self._journal[cid].append((new, new.id))
        self._memory.claim(cid, new.id, node.path)
        listing = self._listings.get(cid)
        if listing is not None:
            listing.files[new.id] = new
            listing.changed()

    async def file_deleted(self, cid: ContainerId, fid: FileId) -> None:
        if cid in self._journal:
            self._journal[cid].append((None, fid))
        listing = self._listings.get(cid)
        if listing is not None and listing.files.pop(fid, None) is not None:
            listing.changed()
        self._memory.forget(cid, fid)
        if self._aliases.get(cid, {}).pop(fid, None) is not None:
            await in_thread(lambda: self.state.drop_alias(fid))
            if listing is not None:
                listing.changed()

    def move(self, node: Node, cid: ContainerId, path: str) -> None:
        """Re-key ``node`` (and, for a directory, the nodes under it) to ``cid``/``path``."""
        old_cid, old_path = node.cid, node.path
        moving = [node]
        if node.kind is Kind.DIR:
            prefix = old_path + "/"
            moving += [
                n for n in self._by_key.values() if n.cid == old_cid and n.path.startswith(prefix)
            ]
        for n in moving:
            if self._by_key.get(n.key) is n:
                del self._by_key[n.key]
            was_local = old_cid is not None and self._local.get(old_cid, {}).get(n.path) is n
            if was_local:
                del self._local[old_cid][n.path]  # type: ignore[index]
            n.path = path + n.path[len(old_path) :]
            n.cid = cid
            self._by_key[n.key] = n
            if was_local:
                self._local.setdefault(cid, {})[n.path] = n

    def show_at(self, node: Node, remote: ContainerFile, path: str) -> None:
        """Show a server file at ``path`` for this mount's life only (not recorded on disk)."""
        self._aliases.setdefault(remote.container_id, {})[remote.id] = path
        self._memory.claim(remote.container_id, remote.id, path)
        listing = self._listings.get(remote.container_id)
        if listing is not None:
            listing.changed()

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
        moved = {d for d in self._dirs.get(old_cid, set()) if d == old or d.startswith(old + "/")}
        for d in moved:
            new = path + d[len(old) :]
            self._dirs[old_cid].discard(d)
            self._dirs.setdefault(cid, set()).add(new)
            await in_thread(self.state.drop_dir, old_cid, d)
            await in_thread(self.state.add_dir, cid, new)
        self.move(node, cid, path)

    async def add_dir(self, parent: Node, name: str) -> Node:
        assert parent.cid is not None
        cid, path = parent.cid, self.child_path(parent, name)
        await self._listing(cid)
        self._dirs.setdefault(cid, set()).add(path)
        await in_thread(lambda: self.state.add_dir(cid, path))
        return self._get_or_make(Kind.DIR, cid, path)

    async def drop_dir(self, node: Node) -> None:
        assert node.cid is not None
        cid, path = node.cid, node.path
        self._dirs.get(cid, set()).discard(path)
        await in_thread(lambda: self.state.drop_dir(cid, path))
        self.mark_gone(node)

    async def create_container(
        self,
        name: str,
        *,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
    ) -> Node:
        c = await self.client.create_container(
            name, expires_after_minutes=expires_after_minutes, memory_limit=memory_limit
        )
        self._by_id[c.id] = c
        self.invalidate_containers()
        self._listings[c.id] = Listing({})
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
        self._by_id[cid] = None
        self.invalidate_containers()
        self._listings.pop(cid, None)
        self._aliases.pop(cid, None)
        self._memory.drop(cid)
        self._dirs.pop(cid, None)
        await in_thread(lambda: self.state.forget_container(cid))
        self.mark_gone(node)

    def local_nodes(self) -> Iterable[Node]:
        for nodes in self._local.values():
            yield from nodes.values()

    async def restore(self, cid: ContainerId, path: str) -> Node:
        """A node for a pending upload found at start (its spool is attached by the writer)."""
        await self._listing(cid)
        placed, _ = await self._view(cid)
        node = self._get_or_make(Kind.FILE, cid, path)
        node.remote = placed.get(path)
        return node
