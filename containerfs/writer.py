"""Write path: spool files, upload at flush, the durable pending-upload queue.

Every node open for writing has a spool file in the state directory (mode 0600). Writes go to
the spool; ``flush`` uploads it when dirty, streamed from disk, so ``close()`` reports a failed
upload. A failed upload keeps its spool and its row in the state database and is retried in
the background with backoff; a later mount resumes it. The server copy a new upload replaces is
deleted only after the server confirmed the new one. Knows nothing about FUSE or HTTP.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import posixpath
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from containerfs.errors import ApiError, ContainerFsError, NotFound
from containerfs.models import ContainerFile, ContainerId, FileId
from containerfs.namespace import Namespace, Node
from containerfs.state import PendingUpload, State, in_thread

log = logging.getLogger(__name__)

# Editor swap/backup/lock files: kept on this machine, never uploaded.
DEFAULT_LOCAL_ONLY: tuple[str, ...] = (
    ".*.swp",
    ".*.swx",
    ".*.swo",
    "*~",
    "4913",
    "#*#",
    ".#*",
    ".*.kate-swp",
    ".~lock.*#",
)

# Temporary files of tools that write a temp file and rename it over the original (sed -i,
# Python's tempfile, rsync): uploaded only if still there DEFER_SECONDS after close, so the
# usual temp-then-rename costs one upload under the final name.
DEFAULT_DEFERRED: tuple[str, ...] = (
    "sed??????",  # sed -i
    "tmp????????",  # Python's tempfile
    ".*.??????",  # rsync
    "*.lock",  # git's index.lock, HEAD.lock, refs/heads/*.lock
    "tmp_*_??????",  # git's tmp_obj_XXXXXX, tmp_pack_XXXXXX
)
DEFER_SECONDS = 5.0

# a server file: its container and id (a moved file may supersede ids of another container)
ServerId = tuple[ContainerId, FileId]


class Uploader(Protocol):
    async def upload_file(
        self, container_id: ContainerId, source: str | os.PathLike[str], *, filename: str
    ) -> ContainerFile: ...

    async def delete_file(self, container_id: ContainerId, file_id: FileId) -> None: ...


class ContentFetcher(Protocol):
    async def fetch(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Path: ...

    def unpin(self, file_id: FileId) -> None: ...

    def invalidate(self, file_id: FileId) -> None: ...

    async def adopt(self, file_id: FileId, source: Path) -> bool: ...


@dataclass(eq=False)
class Spool:
    """A node's local content. ``version`` counts writes, so an upload knows if it is stale."""

    path: Path
    fd: int
    size: int = 0
    dirty: bool = False
    version: int = 0
    pending_id: str | None = None
    replaces: list[ServerId] = field(default_factory=list)  # server files it supersedes
    writers: int = 0  # open handles writing to it
    closed: bool = False  # its fd is closed (discarded, or handed to the cache)


@dataclass
class Retry:
    """When to try a failed upload (or delete) again, and why the last attempt failed."""

    delay: float  # the wait before ``due``; doubled by every failure up to ``retry_max``
    due: float  # trio time of the next attempt
    error: str | None = None


@dataclass
class WriterStats:
    uploads: int = 0
    upload_failures: int = 0
    bytes_uploaded: int = 0
    deletes: int = 0
    spools_open: int = 0


class Writer:
    def __init__(
        self,
        client: Uploader,
        namespace: Namespace,
        state: State,
        reader: ContentFetcher,
        *,
        local_only: Sequence[str] = DEFAULT_LOCAL_ONLY,
        deferred: Sequence[str] = DEFAULT_DEFERRED,
        defer_seconds: float = DEFER_SECONDS,
        retry_base: float = 2.0,
        retry_max: float = 300.0,
        max_dir_rename: int = 1000,
    ) -> None:
        self.client = client
        self.ns = namespace
        self.state = state
        self.reader = reader
        self.local_only = tuple(p for p in local_only if p)
        self.deferred = tuple(p for p in deferred if p)
        self.defer_seconds = defer_seconds
        self._later: dict[Node, float] = {}  # deferred node -> upload deadline
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_dir_rename = max_dir_rename
        self.stats = WriterStats()
        self._failed: dict[Node, Retry] = {}  # node -> when its upload is tried again
        self._orphans: list[tuple[ContainerId, FileId]] = []  # superseded ids not yet deleted
        self._orphans_retry = Retry(0.0, 0.0)
        # queued uploads of a previous mount that could not be resumed yet (network down)
        self._unresumed: dict[str, tuple[PendingUpload, list[ServerId], Retry]] = {}
        # where a server file renamed to a local-only name (an editor's backup) came from
        self._backups: dict[tuple[ContainerId, str], Node] = {}
        self._wakeup = trio.Event()

    @classmethod
    async def create(
        cls,
        client: Uploader,
        namespace: Namespace,
        state: State,
        reader: ContentFetcher,
        *,
        nursery: trio.Nursery,
        **options: object,
    ) -> Writer:
        writer = cls(client, namespace, state, reader, **options)  # type: ignore[arg-type]
        await writer._resume()
        nursery.start_soon(writer._retry_loop)
        return writer

    # ---- naming ------------------------------------------------------------------------
    def is_local_only(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.local_only)

    def is_deferred(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.deferred)

    def classify(self, node: Node) -> None:
        """Set a new or renamed node's upload policy from its name."""
        node.local_only = self.is_local_only(node.name)
        node.deferred = not node.local_only and self.is_deferred(node.name)

    # ---- spool lifecycle ---------------------------------------------------------------
    async def open(self, node: Node, *, truncate: bool) -> Spool:
        """The spool a new writable handle of ``node`` writes to (``release`` it at close).

        The first writer gets the node's spool (its server content copied in unless
        ``truncate``). A writer that opens while another still writes gets a private copy, which
        becomes the node's content when it is flushed: the last writer to close wins and no
        upload ever mixes the bytes of two writers.
        """
        # download the server content first, not under the lock: a retry, an unlink or a
        # flush of the file must not wait for a long download
        remote = node.remote
        source = None
        if not truncate and node.spool is None and remote is not None:
            source = await self.reader.fetch(remote.container_id, remote.id, remote.bytes)
        try:
            return await self._open_locked(node, truncate, remote, source)
        finally:
            if source is not None and remote is not None:
                self.reader.unpin(remote.id)

    async def _open_locked(
        self, node: Node, truncate: bool, remote: ContainerFile | None, source: Path | None
    ) -> Spool:
        async with node.lock:
            shared = node.spool
            if shared is None:
                if source is not None and remote is not None and node.remote is remote:
                    spool = await self._spool_from(source)
                    spool.replaces.append((remote.container_id, remote.id))
                else:
                    spool = await self._new_spool(node, copy=not truncate)
                node.spool = spool
                self.ns.keep_local(node)
            elif shared.writers > 0:
                spool = await self._spool_from(shared.path if not truncate else None)
            else:
                spool = shared
                if truncate and spool.size:
                    await self._truncate_spool(spool, 0)
            if truncate:
                spool.dirty = True
                spool.version += 1
            spool.writers += 1
            return spool

    async def _new_spool(self, node: Node, *, copy: bool) -> Spool:
        remote = node.remote
        if not copy or remote is None:
            spool = await self._spool_from(None)
        else:
            source = await self.reader.fetch(remote.container_id, remote.id, remote.bytes)
            try:
                spool = await self._spool_from(source)
            finally:
                self.reader.unpin(remote.id)
        if remote is not None:
            spool.replaces.append((remote.container_id, remote.id))
        return spool

    async def _spool_from(self, source: Path | None) -> Spool:
        """A new spool file, empty or a copy of ``source``."""
        path = self.state.new_spool_path()

        def make() -> tuple[int, int]:
            if source is not None:
                shutil.copyfile(source, path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            return fd, os.fstat(fd).st_size

        fd, size = await in_thread(make)
        self.stats.spools_open += 1
        return Spool(path, fd, size)

    def _close(self, spool: Spool) -> int | None:
        """Mark ``spool`` closed, once: the fd to close, or None if someone already did.

        Called before the first await, so that two tasks (a release and an unlink racing)
        never close the same fd twice: by then it may be another file's.
        """
        if spool.closed:
            return None
        fd, spool.fd, spool.closed = spool.fd, -1, True
        self.stats.spools_open -= 1
        return fd

    async def _discard(self, spool: Spool) -> None:
        """Delete a spool nobody needs any more (and its pending upload, if any)."""
        fd = self._close(spool)
        if fd is None:
            return
        if spool.pending_id is not None:
            pid, spool.pending_id = spool.pending_id, None
            await in_thread(self.state.drop_pending, pid)

        def remove() -> None:
            try:
                os.close(fd)
            finally:
                spool.path.unlink(missing_ok=True)

        await in_thread(remove)

    async def _truncate_spool(self, spool: Spool, size: int) -> None:
        await in_thread(lambda: os.ftruncate(spool.fd, size))
        spool.size = size
        spool.dirty = True
        spool.version += 1

    async def write(self, spool: Spool, offset: int, data: bytes, *, append: bool = False) -> int:
        if append:
            offset = spool.size  # O_APPEND: the end of this writer's content
        # grow before the await, so that concurrent appends get distinct offsets
        spool.size = max(spool.size, offset + len(data))
        written = await in_thread(lambda: os.pwrite(spool.fd, data, offset))
        spool.dirty = True
        spool.version += 1
        return written

    async def read(self, spool: Spool, offset: int, size: int) -> bytes:
        return await in_thread(lambda: os.pread(spool.fd, size, offset))

    async def truncate(self, node: Node, size: int, spool: Spool | None = None) -> None:
        """``ftruncate`` of a writer's ``spool``, or ``truncate`` by path, uploaded at once."""
        if spool is not None:
            if spool.size != size:
                await self._truncate_spool(spool, size)
            return
        spool = await self.open(node, truncate=size == 0)
        try:
            if spool.size != size:
                await self._truncate_spool(spool, size)
            await self.flush(node, spool)
        finally:
            await self.release(node, spool)

    async def release(self, node: Node, spool: Spool) -> None:
        """A writable handle closed (after ``node.opens`` was decremented).

        Uploads what no flush did: a file created, opened with ``O_TRUNC`` or truncated but
        never written through the handle (``touch``, ``: > f``); its ``flush`` skipped the
        upload because a shell's ``dup2`` flushes before the first write.
        """
        spool.writers -= 1
        retrying = spool is node.spool and node in self._failed
        if spool.writers == 0 and spool.dirty and not node.gone and not retrying:
            # a failure stays queued and is retried; nobody is left to report it to (an
            # upload that already failed is retried by the background loop, at its time)
            with contextlib.suppress(ApiError):
                await self.flush(node, spool)
        if spool is not node.spool and spool.writers == 0 and not spool.closed:
            # a writer whose content another close superseded (an unlink or a rename over
            # the file may have discarded it meanwhile: then nothing is left to do)
            await self._discard(spool)
        await self.close_if_idle(node)

    async def close_if_idle(self, node: Node) -> None:
        """Drop a clean spool once no handle uses it; a dirty one stays for its retry."""
        spool = node.spool
        if spool is None or node.opens > 0:
            return
        if node.gone:
            node.spool = None
            await self._discard(spool)
            self.ns.release_local(node)
            return
        if spool.dirty or (node.local_only and node.remote is None):
            return  # waiting for its upload, or its only copy
        node.spool = None
        fd = self._close(spool)
        if fd is None:
            self.ns.release_local(node)
            return
        # opens wait for this: the content moves from the spool to the cache meanwhile
        settled = node.settling = trio.Event()
        try:
            await in_thread(os.close, fd)
            remote = node.remote
            # a clean spool holds exactly the server's content: keep it as the cached copy
            kept = (
                remote is not None
                and not node.local_only
                and await self.reader.adopt(remote.id, spool.path)
            )
            if not kept:
                await in_thread(spool.path.unlink, True)
        finally:
            node.settling = None
            settled.set()
        self.ns.release_local(node)

    # ---- uploads -----------------------------------------------------------------------
    async def flush(self, node: Node, spool: Spool | None = None) -> None:
        """Upload ``spool`` (by default the node's) if it changed; it becomes the node's content.

        Raises the ApiError if the upload failed; the upload stays queued.
        """
        async with node.lock:
            if spool is not None and spool is not node.spool:
                if node.gone or not spool.dirty:
                    return
                await self._adopt(node, spool)
            await self._upload_locked(node)

    async def _adopt(self, node: Node, spool: Spool) -> None:
        """A concurrent writer's private spool closes last: it becomes the node's content."""
        old = node.spool
        node.spool = spool
        self.ns.keep_local(node)
        if old is None:
            return
        spool.replaces = [*old.replaces, *(f for f in spool.replaces if f not in old.replaces)]
        old.replaces = []
        if old.writers == 0:
            await self._discard(old)
        elif old.pending_id is not None:
            # its writer still has it open and uploads it again if it closes after this one
            pid, old.pending_id = old.pending_id, None
            await in_thread(self.state.drop_pending, pid)

    async def _upload_locked(self, node: Node, *, now: bool = False) -> None:
        spool = node.spool
        if spool is None or not spool.dirty or node.local_only or node.gone:
            self._failed.pop(node, None)  # nothing (left) to upload
            return
        assert node.cid is not None
        cid, path, version = node.cid, node.path, spool.version
        # a deferred file whose upload already failed once is past its grace period
        if node.deferred and not now and node not in self._failed:
            if spool.pending_id is None:
                spool.pending_id = await in_thread(self._record, spool, cid, path, None)
            self._later[node] = trio.current_time() + self.defer_seconds
            self._wakeup.set()
            return
        self._later.pop(node, None)
        if spool.pending_id is None:
            old = next((f for c, f in spool.replaces if c == cid), None)
            item = await in_thread(lambda: self._record(spool, cid, path, old))
            spool.pending_id = item
        else:
            await in_thread(lambda: os.fsync(spool.fd))
            pid = spool.pending_id
            await in_thread(lambda: self.state.update_pending(pid, path=path))
        try:
            new = await self.client.upload_file(cid, spool.path, filename=path)
        except ApiError as err:
            self.stats.upload_failures += 1
            log.warning("upload of %s/%s failed: %s", cid, path, err)
            message = str(err)
            self._failed[node] = self._backoff(self._failed.get(node), err)
            self._wakeup.set()
            pid = spool.pending_id
            await in_thread(lambda: self.state.update_pending(pid, error=message))
            raise
        self.stats.uploads += 1
        self.stats.bytes_uploaded += spool.size
        await self.ns.file_uploaded(node, new)
        superseded, spool.replaces = spool.replaces, [(cid, new.id)]
        for owner, fid in superseded:
            await self._delete_quietly(owner, fid)
        await self._retire_backup(cid, path)
        if spool.version == version:
            spool.dirty = False
            pid = spool.pending_id
            spool.pending_id = None
            await in_thread(lambda: self.state.drop_pending(pid))
        self._failed.pop(node, None)

    def _backoff(self, last: Retry | None, err: Exception) -> Retry:
        """The next attempt after a failure: ``retry_base``, doubling up to ``retry_max``.

        An error that retrying cannot cure soon (an expired or deleted container, a refused
        request) waits the longest delay at once.
        """
        if isinstance(err, ApiError) and not err.retryable:
            delay = self.retry_max
        elif last is None:
            delay = self.retry_base
        else:
            delay = min(max(last.delay, self.retry_base) * 2, self.retry_max)
        return Retry(delay, trio.current_time() + delay, str(err))

    def _record(self, spool: Spool, cid: ContainerId, path: str, old: FileId | None) -> str:
        os.fsync(spool.fd)
        return self.state.add_pending(cid, path, spool.path, old).id

    async def _delete_quietly(self, cid: ContainerId, fid: FileId) -> None:
        try:
            await self.delete_remote(cid, fid)
        except ApiError as err:
            log.warning("could not delete superseded %s/%s (will retry): %s", cid, fid, err)
            self._orphan(cid, fid, err)

    def _orphan(self, cid: ContainerId, fid: FileId, err: Exception) -> None:
        """A superseded id to delete later."""
        self._orphans.append((cid, fid))
        last = self._orphans_retry
        if last.due <= trio.current_time():  # once per round of retries
            self._orphans_retry = self._backoff(last if last.delay else None, err)
        self._wakeup.set()

    async def delete_remote(self, cid: ContainerId, fid: FileId) -> None:
        try:
            await self.client.delete_file(cid, fid)
            self.stats.deletes += 1
        except NotFound:
            pass  # already gone: the goal of a delete
        self.reader.invalidate(fid)
        await self.ns.file_deleted(cid, fid)

    # ---- unlink ------------------------------------------------------------------------
    async def unlink(self, node: Node) -> None:
        """Remove a file: its server copy (if any), then its spool and pending upload."""
        async with node.lock:
            spool = node.spool
            ids: list[ServerId] = []
            if node.remote is not None:
                ids.append((node.remote.container_id, node.remote.id))
            if spool is not None:
                ids += [f for f in spool.replaces if f not in ids]
            for owner, fid in ids:
                await self.delete_remote(owner, fid)
            self.ns.mark_gone(node)
            node.remote = None
            self._failed.pop(node, None)
            self._later.pop(node, None)
            if spool is not None:
                spool.dirty = False
                spool.replaces = []
                if spool.pending_id is not None:
                    pid = spool.pending_id
                    spool.pending_id = None
                    await in_thread(lambda: self.state.drop_pending(pid))
                if node.opens == 0:
                    node.local_only = False
                    await self.close_if_idle(node)

    # ---- rename ------------------------------------------------------------------------
    async def rename(self, node: Node, parent: Node, name: str, replaced: Node | None) -> None:
        """Move ``node`` to ``parent/name``; the server has no move, so content is re-uploaded.

        A file the server does not have yet moves locally. A server file moved to a local-only
        name (an editor's backup) keeps its server copy, shown under the new name, until a new
        file is uploaded under its old name (``_retire_backup``), it is deleted, or it moves
        back. Otherwise the content is uploaded under the new name and the old id (and a
        replaced target's) deleted only after that succeeded.
        """
        assert parent.cid is not None
        if node.is_dir:
            await self._rename_dir(node, parent, name, replaced)
            return
        await self._rename_file(node, parent.cid, self.ns.child_path(parent, name), replaced)

    async def _rename_file(
        self, node: Node, cid: ContainerId, path: str, replaced: Node | None
    ) -> None:
        name = posixpath.basename(path)
        async with node.lock:
            spool = node.spool
            to_local = self.is_local_only(name)
            back_home = node.remote is not None and self._backups.get((cid, path)) is node
            local_move = node.remote is None or to_local or back_home
            # the target is replaced only once the move cannot fail any more: a failed upload
            # leaves both files as they were
            displaced = (
                await self._take_over(replaced) if replaced is not None and local_move else []
            )
            if local_move:
                # not on the server, staying off it, or back where its server copy is: a
                # local move, no API call
                was_local = node.local_only
                assert node.cid is not None
                origin = (node.cid, node.path)
                self.ns.move(node, cid, path)
                self.classify(node)
                if node.remote is not None:
                    self.ns.show_at(node, node.remote, path)
                    if to_local and not was_local:
                        self._backups[origin] = node
                    elif back_home:
                        del self._backups[(cid, path)]
                if node.local_only:
                    # staying on this machine: nothing of it is to be uploaded any more
                    self._failed.pop(node, None)
                    self._later.pop(node, None)
                if spool is not None and spool.pending_id is not None:
                    pid = spool.pending_id
                    if node.local_only:
                        spool.pending_id = None
                        await in_thread(self.state.drop_pending, pid)
                    else:
                        # the next mount resumes it under its new name, never the old one
                        await in_thread(
                            lambda: self.state.update_pending(pid, path=path, container_id=cid)
                        )
                if spool is not None:
                    spool.replaces += displaced
                    if was_local and not to_local:
                        spool.dirty = True
                        spool.version += 1
                    if node.opens == 0:
                        # the file has moved whatever happens now: a failed upload stays
                        # queued, and the rename succeeds (sed and mv would otherwise clean
                        # up a name that no longer exists)
                        with contextlib.suppress(ApiError):
                            await self._upload_locked(node)
                else:
                    for owner, fid in displaced:
                        await self._delete_quietly(owner, fid)
                return
            # on the server, to a name that is uploaded: upload the content under it
            remote = node.remote
            assert remote is not None  # not a local move
            old_cid = node.cid
            assert old_cid is not None
            source, pinned = await self._content_path(node)
            version = spool.version if spool is not None else 0
            try:
                new = await self.client.upload_file(cid, source, filename=path)
                if pinned:
                    await self._cache_copy(new.id, source)
            finally:
                if pinned:
                    self.reader.unpin(remote.id)
            self.stats.uploads += 1
            if replaced is not None:
                displaced = await self._take_over(replaced)
            self.ns.move(node, cid, path)
            self.classify(node)
            await self.ns.file_uploaded(node, new)
            superseded = [(remote.container_id, remote.id), *displaced]
            if spool is not None:
                superseded += [f for f in spool.replaces if f not in superseded]
                spool.replaces = [(cid, new.id)]
                if spool.version == version and spool.dirty:
                    spool.dirty = False
                    self._failed.pop(node, None)
                    if spool.pending_id is not None:
                        pid, spool.pending_id = spool.pending_id, None
                        await in_thread(self.state.drop_pending, pid)
            for owner, fid in superseded:
                await self._delete_quietly(owner, fid)
            await self._retire_backup(cid, path)

    async def _retire_backup(self, cid: ContainerId, path: str) -> None:
        """A new file was just uploaded at ``path``: if a server file was renamed from there
        to a local-only name (vim's or emacs' ``f~``), that backup is superseded. Its content
        stays on this machine, local-only, and its server copy is deleted, so the server never
        keeps a backup. (Not under the backup's lock: its holder may wait for the caller's.)
        """
        node = self._backups.pop((cid, path), None)
        if node is None or node.gone or not node.local_only or node.remote is None:
            return
        remote = node.remote
        if node.spool is None:
            try:
                spool = await self._new_spool(node, copy=True)  # from the cache, usually
            except ContainerFsError as err:
                log.warning("backup %s keeps its server copy: %s", node.path, err)
                return
            if node.spool is not None or node.gone or node.remote is not remote:
                await self._discard(spool)
                return
            node.spool = spool
            self.ns.keep_local(node)
        node.spool.replaces = [f for f in node.spool.replaces if f[1] != remote.id]
        node.remote = None
        await self._delete_quietly(remote.container_id, remote.id)

    async def _cache_copy(self, fid: FileId, source: Path) -> None:
        """Cache a copy of ``source`` as ``fid``'s content: a read after a rename then costs
        no download (the old id's cache entry goes with its delete)."""
        copy = self.state.new_spool_path()
        try:
            await in_thread(shutil.copyfile, source, copy)
            if await self.reader.adopt(fid, copy):
                return
        except OSError as err:
            log.debug("no cached copy of %s: %s", fid, err)
        await in_thread(copy.unlink, True)

    async def _content_path(self, node: Node) -> tuple[Path, bool]:
        """Where ``node``'s current content is on disk: its spool, or the pinned cache file."""
        if node.spool is not None:
            await in_thread(os.fsync, node.spool.fd)
            return node.spool.path, False
        remote = node.remote
        assert remote is not None
        return await self.reader.fetch(remote.container_id, remote.id, remote.bytes), True

    async def _take_over(self, replaced: Node) -> list[ServerId]:
        """The server files of a rename target, which the moved file supersedes."""
        async with replaced.lock:
            remote = replaced.remote
            ids = [(remote.container_id, remote.id)] if remote is not None else []
            spool = replaced.spool
            if spool is not None:
                ids += [f for f in spool.replaces if f not in ids]
                spool.replaces = []
                spool.dirty = False
                if spool.pending_id is not None:
                    pid, spool.pending_id = spool.pending_id, None
                    await in_thread(self.state.drop_pending, pid)
            self._failed.pop(replaced, None)
            self._later.pop(replaced, None)
            self.ns.mark_gone(replaced)
            replaced.remote = None
            await self.close_if_idle(replaced)
            return ids

    async def _rename_dir(self, node: Node, parent: Node, name: str, replaced: Node | None) -> None:
        assert node.cid is not None and parent.cid is not None
        files = await self.ns.descendant_files(node)
        if len(files) > self.max_dir_rename:
            # mv then copies and deletes the tree itself
            raise ContainerFsError.with_errno(errno.EXDEV)
        new_dir = self.ns.child_path(parent, name)
        for f in files:
            rest = f.path[len(node.path) + 1 :]
            await self._rename_file(f, parent.cid, posixpath.join(new_dir, rest), None)
        if replaced is not None:  # an empty directory (checked by the caller): it ends here
            await self.ns.drop_dir(replaced)
        await self.ns.move_dirs(node, parent.cid, new_dir)

    # ---- the pending queue -------------------------------------------------------------
    def pending(self) -> list[dict[str, object]]:
        return [
            {
                "container_id": n.cid,
                "path": n.path,
                "bytes": n.spool.size if n.spool else 0,
                "state": "deferred" if n in self._later else "failed",
                "error": self._failed[n].error if n in self._failed else None,
            }
            for n in [*self._failed, *self._later]
        ] + [
            {
                "container_id": item.container_id,
                "path": item.path,
                "bytes": _size_of(item.spool),
                "state": "failed",
                "error": retry.error,
            }
            for item, _, retry in self._unresumed.values()
        ]

    async def _resume(self) -> None:
        """Re-queue the uploads a previous mount did not finish."""
        latest: dict[tuple[ContainerId, str], tuple[PendingUpload, list[ServerId]]] = {}
        for item in await in_thread(self.state.pending):  # oldest first
            if not item.spool.exists():
                log.error("pending upload %s lost its spool file; dropping it", item.path)
                await in_thread(self.state.drop_pending, item.id)
                continue
            # only the id it was recorded to replace: a file at its path now may be newer
            replaces = [(item.container_id, item.old_file_id)] if item.old_file_id else []
            key = (item.container_id, item.path)
            if key in latest:
                # two queued uploads of one path: the newer content wins, and replaces what
                # the older one would have
                older, older_replaces = latest[key]
                await self._drop_item(older)
                replaces += [f for f in older_replaces if f not in replaces]
            latest[key] = (item, replaces)
        for item, replaces in latest.values():
            await self._resume_one(item, replaces, None)
        self._wakeup.set()

    async def _drop_item(self, item: PendingUpload) -> None:
        log.info("dropping the superseded queued upload of %s/%s", item.container_id, item.path)
        await in_thread(self.state.drop_pending, item.id)
        await in_thread(item.spool.unlink, True)

    async def _resume_one(
        self, item: PendingUpload, replaces: list[ServerId], last: Retry | None
    ) -> None:
        self._unresumed.pop(item.id, None)
        try:
            node = await self.ns.restore(item.container_id, item.path)
        except ContainerFsError as err:
            log.warning("cannot resume upload of %s yet: %s", item.path, err)
            self._unresumed[item.id] = (item, replaces, self._backoff(last, err))
            return
        if node.spool is not None:  # written again on this mount meanwhile: that is newer
            await self._drop_item(item)
            return
        fd = await in_thread(os.open, item.spool, os.O_RDWR)
        size = os.fstat(fd).st_size
        node.spool = Spool(item.spool, fd, size, True, 1, item.id, replaces)
        self.stats.spools_open += 1
        self.ns.keep_local(node)
        self.classify(node)
        self._failed[node] = Retry(self.retry_base, trio.current_time())
        log.info("resuming upload of %s/%s (%d bytes)", item.container_id, item.path, size)

    async def _resume_due(self, *, everything: bool = False) -> None:
        now = trio.current_time()
        for item, replaces, retry in list(self._unresumed.values()):
            if everything or retry.due <= now:
                await self._resume_one(item, replaces, retry)

    async def _retry_loop(self) -> None:
        """Upload deferred files when due and retry failed uploads at their own times.

        ``_wakeup`` is set by changes from outside (a failed flush, a deferred close); the loop
        renews it only after its own work, whose failures must not wake it again at once.
        """
        while True:
            try:
                await self._retry_due()
            except Exception:  # never let the loop end: it would take the mount with it
                log.exception("the background upload loop failed; carrying on")
                await trio.sleep(self.retry_base)
            self._wakeup = trio.Event()
            with trio.move_on_after(self._next_delay()):
                await self._wakeup.wait()

    async def _retry_due(self) -> None:
        await self._resume_due()
        await self.upload_due()
        now = trio.current_time()
        due = [n for n, r in self._failed.items() if r.due <= now]
        await self.retry_now(due, orphans=bool(self._orphans) and self._orphans_retry.due <= now)

    def _next_delay(self) -> float:
        dues = [r.due for r in self._failed.values()]
        dues += self._later.values()
        dues += [retry.due for _, _, retry in self._unresumed.values()]
        if self._orphans:
            dues.append(self._orphans_retry.due)
        now = trio.current_time()
        return max(0.0, min(dues, default=now + self.retry_max) - now)

    async def upload_due(self, *, everything: bool = False) -> None:
        """Upload the deferred files whose grace period is over (or all of them)."""
        now = trio.current_time()
        for node, deadline in list(self._later.items()):
            if node.gone or not node.deferred:
                self._later.pop(node, None)
            elif not everything and deadline <= now and node.opens > 0:
                self._later[node] = now + self.defer_seconds  # reopened: wait for its close
            elif (everything or deadline <= now) and node.opens == 0:
                try:
                    async with node.lock:
                        await self._upload_locked(node, now=True)
                except ApiError:
                    continue
                except Exception as err:
                    self._unexpected(node, err)
                    continue
                await self.close_if_idle(node)

    async def retry_now(self, nodes: Iterable[Node] | None = None, *, orphans: bool = True) -> None:
        """Try every failed upload that nobody is writing to, and leftover deletes."""
        for node in list(nodes if nodes is not None else self._failed):
            if node.spool is not None and node.spool.writers > 0:
                self._postpone(node)
                continue  # its writer's own flush uploads it
            try:
                await self.flush(node)
                self._postpone(node)
                await self.close_if_idle(node)
            except ApiError:
                continue  # the failure scheduled its next attempt
            except Exception as err:
                self._unexpected(node, err)
        if orphans:
            left, self._orphans = self._orphans, []
            for cid, fid in left:
                try:
                    await self._delete_quietly(cid, fid)
                except Exception as err:
                    log.error("deleting superseded %s/%s failed: %r", cid, fid, err, exc_info=err)
                    self._orphan(cid, fid, err)
            if not self._orphans:
                self._orphans_retry = Retry(0.0, 0.0)

    def _unexpected(self, node: Node, err: Exception) -> None:
        """An error no upload should raise (a full disk, the state database): log it, and
        try the node again later like a failed upload."""
        log.error("retrying the upload of %s/%s failed: %r", node.cid, node.path, err, exc_info=err)
        if not node.gone:
            self._failed[node] = self._backoff(self._failed.get(node), err)

    def _postpone(self, node: Node) -> None:
        """A due node that was not tried: its next attempt is one delay away, not now again."""
        entry = self._failed.get(node)
        now = trio.current_time()
        if entry is not None and entry.due <= now:
            entry.due = now + max(entry.delay, self.retry_base)

    async def drain(self, timeout: float) -> bool:
        """Upload what is pending now, retrying until ``timeout``; True if nothing is left."""
        with trio.move_on_after(timeout):
            while True:
                await self._resume_due(everything=True)
                await self.upload_due(everything=True)
                await self.retry_now()
                if not (self._left() or self._orphans):
                    break
                await trio.sleep(min(1.0, self.retry_base))
        await self._queue_unsaved()
        return not self._left()

    def _left(self) -> bool:
        return bool(self._failed or self._unresumed or self._closed_deferred())

    async def _queue_unsaved(self) -> None:
        """Writers still open as the mount ends: queue their content, so that the next mount
        uploads it (their close will never come)."""
        for node in list(self.ns.local_nodes()):
            spool = node.spool
            if spool is None or not spool.dirty or node.local_only or node.gone or spool.closed:
                continue
            cid, path = node.cid, node.path
            assert cid is not None
            if spool.pending_id is None:
                old = next((f for c, f in spool.replaces if c == cid), None)
                spool.pending_id = await in_thread(self._record, spool, cid, path, old)
            else:
                await in_thread(os.fsync, spool.fd)
            if node not in self._failed and node not in self._later:
                delay = self.retry_base
                self._failed[node] = Retry(delay, trio.current_time() + delay, "still open")

    def _closed_deferred(self) -> list[Node]:
        """Deferred files nobody has open: drain uploads them now."""
        return [n for n in self._later if n.opens == 0]

    async def discard_local_only(self) -> None:
        """The mount ended: local-only files (swap files, backups) end with it."""
        for node in list(self.ns.local_nodes()):
            spool = node.spool
            if spool is not None and node.local_only and spool.pending_id is None:
                node.spool = None
                await self._discard(spool)

    def statistics(self) -> dict[str, object]:
        return {
            **vars(self.stats),
            "pending": len(self._failed) + len(self._unresumed),
            "deferred": len(self._later),
            "orphans": len(self._orphans),
        }


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
