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

import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from containerfs.aio import in_thread
from containerfs.models import Container, ContainerFile, ContainerId, FileId, NetworkPolicy
from containerfs.ns.aliases import Aliases
from containerfs.ns.attributes import AttrRules, known_size
from containerfs.ns.containers import Containers, ContainerSource
from containerfs.ns.created import CreationLog
from containerfs.ns.dirs import MadeDirs
from containerfs.ns.inodes import ROOT_INODE as ROOT_INODE
from containerfs.ns.inodes import Attrs as Attrs
from containerfs.ns.inodes import InodeTable
from containerfs.ns.inodes import Kind as Kind
from containerfs.ns.inodes import Node as Node
from containerfs.ns.listings import Listing, Listings
from containerfs.ns.memory import NameMemory
from containerfs.ns.overlay import Overlay
from containerfs.snapshots import NamespaceStats
from containerfs.state import CreatedWith, State

log = logging.getLogger(__name__)


@dataclass
class _Counters:
    file_listings: int = 0
    lookups: int = 0
    negative_lookups: int = 0


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
        self._rules = AttrRules(uid=uid, gid=gid, file_mode=file_mode, dir_mode=dir_mode)
        self._containers = Containers(client, ttl=ttl, show_expired=show_expired, clock=clock)
        memory = NameMemory()  # where each file was shown: it keeps that path
        self._listings = Listings(root=root, ttl=ttl, clock=clock, memory=memory)
        # where files are shown, by container (read by its listing, see ``Listing.refile``)
        self._aliases = Aliases(state, root=root, memory=memory, listings=self._listings)
        # files not (or not yet) on the server (being written, pending, local-only) and the
        # directories made here
        self._overlay = Overlay()
        self._dirs = MadeDirs(self._overlay, state)
        self._stats = _Counters()
        self.created = CreationLog(state)  # what the containers made here were made with
        self.root_node = Node(ROOT_INODE, Kind.ROOT)
        self._nodes = InodeTable(self.root_node)

    # ---- inode table -------------------------------------------------------------------
    def node(self, inode: int) -> Node | None:
        return self._nodes.node(inode)

    def known(self, kind: Kind, cid: ContainerId, path: str = "") -> Node | None:
        """The live node of that kind at ``cid``/``path``, if there is one (asks no server)."""
        return self._nodes.at(kind, cid, path)

    def remember(self, node: Node) -> None:
        """The kernel took one more lookup reference to ``node`` (``forget`` returns them)."""
        node.lookups += 1

    def forget(self, inode: int, count: int) -> None:
        node = self._nodes.node(inode)
        if node is None or node.kind is Kind.ROOT:
            return
        node.lookups = max(0, node.lookups - count)
        self._nodes.drop_if_unused(node)

    def mark_gone(self, node: Node) -> None:
        node.gone = True
        self._nodes.unkey(node)
        if node.cid is not None:
            self._overlay.drop(node.cid, node.path, node)
        self._nodes.drop_if_unused(node)

    def drop_remote(self, node: Node) -> None:
        """``node`` no longer stands for a server file (deleted, or superseded by a rename)."""
        node.remote = None

    def statistics(self) -> NamespaceStats:
        return NamespaceStats(
            container_listings=self._containers.listings,
            **vars(self._stats),
            inodes=len(self._nodes),
        )

    # ---- cached listings ---------------------------------------------------------------
    async def containers(self) -> dict[str, Container]:
        """Directory name -> container, from one cached, paginated listing."""
        return await self._containers.by_name()

    def invalidate_containers(self) -> None:
        self._containers.invalidate()

    def container_changed(self, cid: ContainerId) -> None:
        """The server says the container changed (it expired): ask again before trusting the
        cached container, its name or its files."""
        self._containers.changed(cid)
        self.invalidate_listing(cid)

    async def container_dir(self, cid: ContainerId) -> str:
        """The directory name a container is shown under (its id if it is not listed)."""
        return await self._containers.dir_name(cid)

    async def container(self, cid: ContainerId) -> Container | None:
        """A container by id, listed or not (a ``cntr_…`` name always resolves)."""
        return await self._containers.get(cid)

    async def _listing(self, cid: ContainerId) -> Listing:
        return await self._listings.get(
            cid, lambda: self._fetch_files(cid), aliases=self._aliases.of(cid)
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
        if self._aliases.loaded(cid):
            return
        stored = await in_thread(lambda: self.state.aliases(cid))
        made = await self._dirs.stored(cid)
        self._aliases.load(cid, stored)
        self._dirs.show(cid, made)

    def invalidate_listing(self, cid: ContainerId) -> None:
        self._listings.invalidate(cid)

    async def _is_dir(self, cid: ContainerId, path: str) -> bool:
        return (await self._listing(cid)).is_dir(path) or self._overlay.is_dir(cid, path)

    # ---- where things show in the mount (for the status: cached answers only) ----------
    def shown_path(self, cid: ContainerId, path: str) -> str:
        """Where a container's file ``path`` shows, relative to the mount: under the
        directory the container showed as at its last listing, else under its id."""
        top = self._containers.last_dir_name(cid)
        return posixpath.join(top, path) if path else top

    def file_path(self, cid: ContainerId, fid: FileId) -> str | None:
        """The path in its container of a file by id, where the mount last showed it."""
        return self._aliases.shown(cid, fid)

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
            c = await self._containers.named(name)
            return self._nodes.container_node(c) if c is not None else None
        assert parent.cid is not None
        cid = parent.cid
        path = posixpath.join(parent.path, name) if parent.path else name
        local = self._overlay.file(cid, path)
        if local is not None:
            return local
        remote = (await self._listing(cid)).file(path)
        if remote is not None:
            return self._nodes.file_node(cid, path, remote)
        if await self._is_dir(cid, path):
            return self._nodes.get_or_make(Kind.DIR, cid, path)
        self._vanish(cid, path)
        return None

    def _vanish(self, cid: ContainerId, path: str) -> None:
        """A path that is no longer there: let go of a stale node for it."""
        for kind in (Kind.FILE, Kind.DIR):
            stale = self._nodes.at(kind, cid, path)
            if stale is not None and stale.spool is None:
                self.mark_gone(stale)

    async def list_dir(self, node: Node) -> list[tuple[str, Node]]:
        """A stable snapshot of a directory's entries, sorted by name."""
        if node.kind is Kind.ROOT:
            by_name = await self.containers()
            return [(n, self._nodes.container_node(c)) for n, c in sorted(by_name.items())]
        assert node.cid is not None
        cid = node.cid
        listing = await self._listing(cid)
        entries: dict[str, Node] = {}
        prefix = node.path + "/" if node.path else ""
        for names_of in (listing.subdirs, lambda d: self._overlay.subdirs(cid, d)):
            for name in names_of(node.path):
                entries[name] = self._nodes.get_or_make(Kind.DIR, cid, prefix + name)
        for path, f in listing.placed(node.path).items():
            entries[path[len(prefix) :]] = self._nodes.file_node(cid, path, f)
        entries.update(self._overlay.files_in(cid, node.path))
        return sorted(entries.items())

    async def is_empty(self, node: Node) -> bool:
        return not await self.list_dir(node)

    # ---- attributes --------------------------------------------------------------------
    def writable(self, node: Node) -> bool:
        if self.read_only:
            return False
        return not self._containers.is_expired(node.cid)

    def size(self, node: Node) -> int:
        return known_size(node) or 0

    def size_known(self, node: Node) -> bool:
        return known_size(node) is not None

    def attrs(self, node: Node) -> Attrs:
        return self._rules.attrs(node, writable=self.writable(node))

    # ---- changes made through the mount ------------------------------------------------
    def new_file(self, parent: Node, name: str) -> Node:
        """A file created here: local until its first upload."""
        assert parent.cid is not None
        path = self.child_path(parent, name)
        node = self._nodes.get_or_make(Kind.FILE, parent.cid, path)
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
        self._nodes.drop_if_unused(node)

    async def file_uploaded(self, node: Node, new: ContainerFile) -> None:
        """``node`` now has server content ``new``; record where the server put it."""
        keep = self.upload_landed(node, new)
        if keep is not None:
            await in_thread(keep)

    def upload_landed(self, node: Node, new: ContainerFile) -> Callable[[], None] | None:
        """``file_uploaded`` in memory now; the blocking step that keeps where the server put
        it (None: nothing to keep), for the caller's next trip to a thread. The caller keeps
        the upload's queue record until that step ran: a crash before it is resumed, and the
        resumed upload is adopted and recorded again."""
        assert node.cid is not None
        keep = self._aliases.claim(node.cid, node.path, new)
        node.remote = new
        node.size_hint = None
        return keep

    async def file_added(self, parent: Node, name: str, new: ContainerFile) -> Node:
        """A server file made here without an upload (copied from the Files API) to be shown
        as ``name`` in ``parent``: shown there at once, and kept there like an upload."""
        assert parent.cid is not None
        path = self.child_path(parent, name)
        await self._listing(parent.cid)  # the container's recorded aliases are loaded first
        await self._aliases.record(parent.cid, path, new)
        return self._nodes.file_node(parent.cid, path, new)

    def expecting(self, cid: ContainerId, path: str) -> AbstractContextManager[None]:
        """The mount is creating ``path`` in ``cid`` (``Listings.expecting``)."""
        return self._listings.expecting(cid, posixpath.basename(path))

    def deleting(self, cid: ContainerId, fid: FileId) -> None:
        """This mount is deleting ``fid``, or will once the pending upload that supersedes it
        lands (or will retry it): no listing shows it any more, even one fetched meanwhile,
        until ``file_deleted`` confirms it or ``delete_abandoned`` gives it up."""
        self._listings.deleting(cid, fid)

    def delete_abandoned(self, cid: ContainerId, fid: FileId) -> None:
        """The delete of ``fid`` failed for good: listings show it again."""
        self._listings.delete_abandoned(cid, fid)

    async def file_deleted(self, cid: ContainerId, fid: FileId) -> None:
        await self._aliases.deleted(cid, fid)

    def move(self, node: Node, cid: ContainerId, path: str) -> None:
        """Re-key ``node`` (and, for a directory, the nodes under it) to ``cid``/``path``."""
        old_cid, old_path = node.cid, node.path
        moving = [node]
        if node.kind is Kind.DIR and old_cid is not None:
            moving += self._nodes.under(old_cid, old_path + "/")
        for n in moving:
            self._nodes.unkey(n)
            was_local = old_cid is not None and self._overlay.drop(old_cid, n.path, n)
            n.path = path + n.path[len(old_path) :]
            n.cid = cid
            self._nodes.rekey(n)
            if was_local:
                self._overlay.put(cid, n.path, n)

    def show_at(self, node: Node, remote: ContainerFile, path: str) -> None:
        """Show a server file at ``path`` for this mount's life only (not recorded on disk)."""
        self._aliases.show_at(remote, path)

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
        await self._dirs.move(node.cid, node.path, cid, path)
        self.move(node, cid, path)

    async def add_dir(self, parent: Node, name: str) -> Node:
        assert parent.cid is not None
        cid, path = parent.cid, self.child_path(parent, name)
        await self._listing(cid)
        await self._dirs.add(cid, path)
        return self._nodes.get_or_make(Kind.DIR, cid, path)

    async def drop_dir(self, node: Node) -> None:
        assert node.cid is not None
        await self._dirs.drop(node.cid, node.path)
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
        self._containers.learn(c)
        if not file_ids:  # known to be empty; with files, the first look lists them
            self._listings.start_empty(c.id, aliases=self._aliases.of(c.id))
        return self._nodes.container_node(c)

    async def delete_container(self, node: Node) -> None:
        assert node.cid is not None
        cid = node.cid
        await self._containers.delete(cid)
        self._listings.invalidate(cid)
        self._aliases.forget(cid)
        self._dirs.forget(cid)
        self.created.forget(cid)
        await in_thread(lambda: self.state.forget_container(cid))
        self.mark_gone(node)

    def local_nodes(self) -> Iterable[Node]:
        return self._overlay.nodes()

    async def restore(self, cid: ContainerId, path: str) -> Node:
        """A node for a pending upload found at start (its spool is attached by the writer)."""
        listing = await self._listing(cid)
        node = self._nodes.get_or_make(Kind.FILE, cid, path)
        node.remote = listing.file(path)
        return node
