"""Renames: the server has no move, so a file moved to a new name is uploaded under it.

A file the server does not have yet, or one moved to a local-only name (an editor's backup),
moves locally; a backup keeps its server copy until a new file is uploaded under its old name
(``retire_backup``). A directory moves file by file, up to the writer's ``max_dir_rename``.
The ``Renamer`` owns the backups it made; it reaches the writer's spools and uploads through
the ``RenameHost`` interface and the queue through its methods. Knows nothing about FUSE or
HTTP. Layer: write path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import posixpath
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from containerfs.aio import holding, in_thread
from containerfs.errors import ApiError, ContainerFsError
from containerfs.models import ContainerId, FileId
from containerfs.ns.inodes import Node
from containerfs.ns.namespace import Namespace
from containerfs.state import State
from containerfs.write.queue import UploadQueue
from containerfs.write.spool import ContentFetcher, ServerId, Spool, Uploader, spool_of

log = logging.getLogger(__name__)


class RenameHost(Protocol):
    """What a rename needs from the writer: its naming policy, spools and upload steps."""

    max_dir_rename: int

    def is_local_only(self, name: str) -> bool: ...

    def classify(self, node: Node) -> None: ...

    def count_upload(self) -> None: ...

    async def upload_locked(self, node: Node, *, now: bool = False) -> None: ...

    async def delete_quietly(self, cid: ContainerId, fid: FileId) -> None: ...

    async def delete_superseded(self, superseded: Sequence[ServerId]) -> None: ...

    async def new_spool(self, node: Node, *, copy: bool, source: Path | None = None) -> Spool: ...

    def attach(self, node: Node, spool: Spool) -> None: ...

    async def discard(self, spool: Spool) -> None: ...

    async def settle(self, spool: Spool) -> None: ...

    async def close_if_idle(self, node: Node) -> None: ...


class Renamer:
    """Moves files and directories for the writer; remembers the backups it made."""

    def __init__(
        self,
        host: RenameHost,
        *,
        namespace: Namespace,
        state: State,
        client: Uploader,
        reader: ContentFetcher,
        queue: UploadQueue,
    ) -> None:
        self._host = host
        self._ns = namespace
        self._state = state
        self._client = client
        self._reader = reader
        self._queue = queue
        # where a server file renamed to a local-only name (an editor's backup) came from
        self._backups: dict[tuple[ContainerId, str], Node] = {}

    async def rename(self, node: Node, parent: Node, name: str, replaced: Node | None) -> None:
        """Move ``node`` to ``parent/name``; the server has no move, so content is re-uploaded.

        A file the server does not have yet moves locally. A server file moved to a local-only
        name (an editor's backup) keeps its server copy, shown under the new name, until a new
        file is uploaded under its old name (``retire_backup``), it is deleted, or it moves
        back. Otherwise the content is uploaded under the new name and the old id (and a
        replaced target's) deleted only after that succeeded.
        """
        assert parent.cid is not None
        if node.is_dir:
            await self._rename_dir(node, parent, name, replaced)
            return
        await self._rename_file(node, parent.cid, self._ns.child_path(parent, name), replaced)

    async def _rename_file(
        self, node: Node, cid: ContainerId, path: str, replaced: Node | None
    ) -> None:
        name = posixpath.basename(path)
        async with holding(node.lock):
            to_local = self._host.is_local_only(name)
            back_home = node.remote is not None and self._backups.get((cid, path)) is node
            if node.remote is None or to_local or back_home:
                # not on the server, staying off it, or back where its server copy is: a
                # local move, no API call; the target is replaced now, as the move cannot
                # fail any more
                displaced = await self._take_over(replaced) if replaced is not None else []
                await self._move_locally(node, cid, path, displaced, to_local, back_home)
            else:
                await self._move_by_upload(node, cid, path, replaced)

    async def _move_locally(
        self,
        node: Node,
        cid: ContainerId,
        path: str,
        displaced: list[ServerId],
        to_local: bool,
        back_home: bool,
    ) -> None:
        spool = spool_of(node)
        was_local = node.local_only
        self._rename_in_place(node, cid, path, to_local=to_local, back_home=back_home)
        if spool is None:
            await self._host.delete_superseded(displaced)
            return
        spool.replaces += [f for f in displaced if f not in spool.replaces]
        if node.local_only and node.remote is None and spool.replaces:
            # content never on the server, staying here now: the server files it superseded
            # (one it was renamed over) are deleted now, before its queue record goes (the
            # only durable note of them): a crash must not leave one beside the next upload
            superseded, spool.replaces = spool.replaces, []
            await self._host.delete_superseded(superseded)
        await self._requeue(node, spool, cid, path)
        if was_local and not to_local:
            spool.dirty = True
            spool.version += 1
        if node.opens == 0:
            # the file has moved whatever happens now: a failed upload stays queued, and the
            # rename succeeds (sed and mv would otherwise clean up a name that no longer
            # exists)
            with contextlib.suppress(ApiError):
                await self._host.upload_locked(node)

    def _rename_in_place(
        self, node: Node, cid: ContainerId, path: str, *, to_local: bool, back_home: bool
    ) -> None:
        """Move ``node`` in the namespace, keeping its server copy shown at the new name,
        and remember (or forget) the backup a move to (or from) a local-only name makes."""
        was_local = node.local_only
        assert node.cid is not None
        origin = (node.cid, node.path)
        self._ns.move(node, cid, path)
        self._host.classify(node)
        if node.remote is not None:
            self._ns.show_at(node, node.remote, path)
            if to_local and not was_local:
                self._backups[origin] = node
            elif back_home:
                del self._backups[(cid, path)]
        if node.local_only:
            # staying on this machine: nothing of it is to be uploaded any more
            self._queue.forget(node)

    async def _requeue(self, node: Node, spool: Spool, cid: ContainerId, path: str) -> None:
        """A queued upload of a moved spool: dropped if it stays local, else renamed."""
        if spool.pending_id is None:
            return
        pid = spool.pending_id
        if node.local_only:
            spool.pending_id = None
            await in_thread(self._state.drop_pending, pid)
            return
        # the next mount resumes it under its new name, never the old one, and deletes what
        # it replaces now (the rename's target among them)
        replaces = list(spool.replaces)
        await in_thread(
            lambda: self._state.update_pending(pid, path=path, container_id=cid, replaces=replaces)
        )

    async def _move_by_upload(
        self, node: Node, cid: ContainerId, path: str, replaced: Node | None
    ) -> None:
        """A server file moved to a name that is uploaded: its content is uploaded under the
        new name; the target is replaced only after that succeeded, so a failed upload
        leaves both files as they were."""
        with self._ns.expecting(cid, path):
            await self._upload_moved(node, cid, path, replaced)

    async def _upload_moved(
        self, node: Node, cid: ContainerId, path: str, replaced: Node | None
    ) -> None:
        spool = spool_of(node)
        remote = node.remote
        assert remote is not None and node.cid is not None
        source, pinned = await self._content_path(node)
        version = spool.version if spool is not None else 0
        try:
            new = await self._client.upload_file(cid, source, filename=path)
            if pinned:
                await self._cache_copy(new.id, source)
        finally:
            if pinned:
                self._reader.unpin(remote.id)
        self._host.count_upload()
        displaced = await self._take_over(replaced) if replaced is not None else []
        self._ns.move(node, cid, path)
        self._host.classify(node)
        await self._ns.file_uploaded(node, new)
        superseded = [(remote.container_id, remote.id), *displaced]
        if spool is not None:
            superseded += [f for f in spool.replaces if f not in superseded]
            spool.replaces = [(cid, new.id)]
            if spool.version == version and spool.dirty:
                spool.dirty = False
                self._queue.uploaded(node)
                if spool.pending_id is not None:
                    pid, spool.pending_id = spool.pending_id, None
                    await in_thread(self._state.drop_pending, pid)
            elif spool.pending_id is not None:
                # written again meanwhile: its queued upload replaces the copy just made
                pid, replaces = spool.pending_id, list(spool.replaces)
                await in_thread(
                    lambda: self._state.update_pending(
                        pid, path=path, container_id=cid, replaces=replaces
                    )
                )
        await self._host.delete_superseded(superseded)
        await self.retire_backup(cid, path)

    async def retire_backup(self, cid: ContainerId, path: str) -> None:
        """A new file was just uploaded at ``path``: if a server file was renamed from there
        to a local-only name (vim's or emacs' ``f~``), that backup is superseded. Its content
        stays on this machine, local-only, and its server copy is deleted, so the server never
        keeps a backup. (Not under the backup's lock: its holder may wait for the caller's.)
        """
        node = self._backups.pop((cid, path), None)
        if node is None or node.gone or not node.local_only or node.remote is None:
            return
        remote = node.remote
        spool = spool_of(node)
        if spool is None:
            try:
                copy = await self._host.new_spool(node, copy=True)  # from the cache, usually
            except ContainerFsError as err:
                log.warning("backup %s keeps its server copy: %s", node.path, err)
                return
            if node.spool is not None or node.gone or node.remote is not remote:
                await self._host.discard(copy)
                return
            self._host.attach(node, copy)
            spool = copy
        spool.replaces = [f for f in spool.replaces if f[1] != remote.id]
        self._ns.drop_remote(node)
        await self._host.delete_quietly(remote.container_id, remote.id)

    async def _cache_copy(self, fid: FileId, source: Path) -> None:
        """Cache a copy of ``source`` as ``fid``'s content: a read after a rename then costs
        no download (the old id's cache entry goes with its delete)."""
        copy = self._state.new_spool_path()
        try:
            await in_thread(shutil.copyfile, source, copy)
            if await self._reader.adopt(fid, copy):
                return
        except OSError as err:
            log.debug("no cached copy of %s: %s", fid, err)
        await in_thread(copy.unlink, True)

    async def _content_path(self, node: Node) -> tuple[Path, bool]:
        """Where ``node``'s current content is on disk: its spool, or the pinned cache file."""
        spool = spool_of(node)
        if spool is not None:
            await self._host.settle(spool)
            await in_thread(spool.io.fsync)
            return spool.path, False
        remote = node.remote
        assert remote is not None
        return await self._reader.fetch(remote.container_id, remote.id, remote.bytes), True

    async def _take_over(self, replaced: Node) -> list[ServerId]:
        """The server files of a rename target, which the moved file supersedes."""
        async with holding(replaced.lock):
            remote = replaced.remote
            ids = [(remote.container_id, remote.id)] if remote is not None else []
            spool = spool_of(replaced)
            if spool is not None:
                ids += [f for f in spool.replaces if f not in ids]
                spool.replaces = []
                spool.dirty = False
                if spool.pending_id is not None:
                    pid, spool.pending_id = spool.pending_id, None
                    await in_thread(self._state.drop_pending, pid)
            self._queue.forget(replaced)
            self._ns.mark_gone(replaced)
            self._ns.drop_remote(replaced)
            await self._host.close_if_idle(replaced)
            for owner, fid in ids:  # gone for the user now, deleted once the move is stored
                self._ns.deleting(owner, fid)
            return ids

    async def _rename_dir(self, node: Node, parent: Node, name: str, replaced: Node | None) -> None:
        assert node.cid is not None and parent.cid is not None
        files = await self._ns.descendant_files(node)
        if len(files) > self._host.max_dir_rename:
            # mv then copies and deletes the tree itself
            raise ContainerFsError.with_errno(errno.EXDEV)
        new_dir = self._ns.child_path(parent, name)
        for f in files:
            rest = f.path[len(node.path) + 1 :]
            await self._rename_file(f, parent.cid, posixpath.join(new_dir, rest), None)
        if replaced is not None:  # an empty directory (checked by the caller): it ends here
            await self._ns.drop_dir(replaced)
        await self._ns.move_dirs(node, parent.cid, new_dir)
