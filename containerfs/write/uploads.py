"""Write path: the steps of an upload and of its server side, the writer's base class.

``flush`` makes a spool the node's content and uploads it (streamed while it was written, or
whole from its file), after recording it durably in the state database, so that a crash
leaves it to resume; ``_uploaded`` then deletes what it superseded, only once the server
confirmed the new file. A full state disk gives the spool up (``_forsake_locked``). The
``Writer`` (writer.py) adds the spools' lifecycle and the facade of its queue and renamer.
Knows nothing about FUSE or HTTP. Layer: write path.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from containerfs.aio import holding, in_thread
from containerfs.errors import ApiError, ContainerFsError, NotFound, SpoolError, StateError
from containerfs.models import ContainerFile, ContainerId, FileId
from containerfs.ns.inodes import Node
from containerfs.ns.namespace import Namespace
from containerfs.snapshots import PendingItem
from containerfs.state import PendingUpload, State
from containerfs.write.queue import UploadQueue
from containerfs.write.renames import Renamer
from containerfs.write.spool import ContentFetcher, ServerId, Spool, SpoolFiles, Uploader, spool_of
from containerfs.write.streaming import Streamer

log = logging.getLogger(__name__)


@dataclass
class Counters:
    uploads: int = 0
    upload_failures: int = 0
    bytes_uploaded: int = 0
    deletes: int = 0


class UploadSteps:
    """Uploads and deletes for the ``Writer``, over the parts it builds (its ``__init__``)."""

    client: Uploader
    ns: Namespace
    state: State
    reader: ContentFetcher
    write_back: bool
    _stats: Counters
    _spools: SpoolFiles
    _streamer: Streamer
    _queue: UploadQueue
    _renamer: Renamer

    def attach(self, node: Node, spool: Spool) -> None:
        """``spool`` becomes ``node``'s content, shown from the local overlay. The writer is
        the one owner of ``Node.spool``: its renamer and queue attach through here."""
        node.spool = spool
        self.ns.keep_local(node)

    async def _forsake_locked(self, node: Node, spool: Spool) -> None:
        """A write to ``spool`` failed (a full state disk): the content it was making is given
        up, and the file is what it was before that open: its server copy, or nothing for a
        file that open created. Nothing of it is uploaded; the spool file goes at its
        handle's release. Content closed earlier and still queued is never in such a spool:
        a writer of it gets a private copy (``_open_locked``)."""
        if spool is not node.spool:
            return  # a private copy: it never was the node's content
        node.spool = None
        self._queue.forget(node)
        if spool.pending_id is not None:
            pid, spool.pending_id = spool.pending_id, None
            with contextlib.suppress(StateError):  # the same full disk: resume finds no spool
                await in_thread(self.state.drop_pending, pid)
        for owner, fid in spool.replaces:  # a rename over them is not stored after all
            self.ns.delete_abandoned(owner, fid)
        spool.replaces = []
        if node.remote is None:
            self.ns.mark_gone(node)
        else:
            self.ns.release_local(node)

    async def flush(self, node: Node, spool: Spool | None = None, *, wait: bool = True) -> None:
        """Upload ``spool`` (by default the node's) if it changed; it becomes the node's content.

        Raises the ApiError if the upload failed; the upload stays queued. With write-back
        and not ``wait`` (a close), the spool is made durable and queued, and only an earlier
        failed upload of the file is raised. A handle's spool that cannot be made durable (a
        full state disk) raises ``SpoolError`` and is given up.
        """
        async with holding(node.lock):
            if spool is not None:
                spool.check()
            try:
                if spool is not None and spool is not node.spool:
                    if node.gone or not spool.dirty:
                        return
                    await self._adopt(node, spool)
                await self.upload_locked(node, wait=wait)
            except SpoolError as err:
                if spool is not None:
                    spool.failed = err.errno
                    await self._forsake_locked(node, spool)
                raise

    async def _adopt(self, node: Node, spool: Spool) -> None:
        """A writer's private spool closes last: it becomes the node's content."""
        old = spool_of(node)
        if old is not None and old.pending_id is not None and not node.local_only:
            # the older content is queued: the newer must be durable before that goes (a
            # full disk leaves the older content queued, untouched)
            assert node.cid is not None
            known = [*old.replaces, *(f for f in spool.replaces if f not in old.replaces)]
            replaced = None if node.deferred else next((f for c, f in known if c == node.cid), None)
            spool.pending_id = await self.record(
                spool, node.cid, node.path, replaced, replaces=() if node.deferred else known
            )
        self.attach(node, spool)
        if old is None:
            return
        spool.replaces = [*old.replaces, *(f for f in spool.replaces if f not in old.replaces)]
        old.replaces = []
        if old.writers == 0:
            await self._spools.discard(old)
        elif old.pending_id is not None:
            # its writer still has it open and uploads it again if it closes after this one
            pid, old.pending_id = old.pending_id, None
            await in_thread(self.state.drop_pending, pid)

    @staticmethod
    def _to_upload(node: Node) -> Spool | None:
        """``node``'s spool if it holds content to upload: changed, and neither local-only
        (it stays here) nor gone."""
        spool = spool_of(node)
        if spool is None or not spool.dirty or node.local_only or node.gone:
            return None
        return spool

    async def upload_locked(self, node: Node, *, now: bool = False, wait: bool = True) -> None:
        spool = self._to_upload(node)
        if spool is None:
            self._queue.uploaded(node)  # nothing (left) to upload
            left = spool_of(node)
            if left is not None:
                await self._streamer.cancel(left)
            return
        assert node.cid is not None
        cid, path, version = node.cid, node.path, spool.version
        # a deferred file whose upload already failed once is past its grace period
        if node.deferred and not now and not self._queue.is_failed(node):
            if spool.pending_id is None:
                spool.pending_id = await self.record(spool, cid, path, None, replaces=())
            else:
                await self._spools.settle(spool)
            self._queue.defer(node)
            return
        self._queue.uploading(node)
        pid = await self._record_locked(spool, cid, path)
        if self.write_back and not wait:
            self._queue.enqueue(node)
            failure = self._queue.failure(node)
            if failure is not None:
                raise ApiError(f"an earlier upload of {path} failed (retrying): {failure}")
            return
        with self.ns.expecting(cid, path):
            try:
                new = await self._streamer.finish(node, spool)
                if new is None:
                    new = await self.client.upload_file(cid, spool.path, filename=path)
            except ApiError as err:
                self._stats.upload_failures += 1
                log.warning("upload of %s/%s failed: %s", cid, path, err)
                message = str(err)
                self._queue.failed(node, err)
                await in_thread(lambda: self.state.update_pending(pid, error=message))
                raise
            await self._uploaded(node, spool, new, (cid, path, version))

    async def _record_locked(self, spool: Spool, cid: ContainerId, path: str) -> str:
        """The spool is settled, on disk and queued before its upload: a crash leaves it to
        resume. The id of its queue record, which the upload's outcome updates: the caller
        holds the node's lock, and only a holder of it drops or replaces that record."""
        durable = (spool.version, cid, path)
        pid = spool.pending_id
        if pid is None:
            old = next((f for c, f in spool.replaces if c == cid), None)
            pid = spool.pending_id = await self.record(spool, cid, path, old)
        elif spool.durable == durable:
            # a write-back close made exactly this durable: its queued upload follows
            await self._spools.settle(spool)
            return pid
        else:
            known = pid

            def moved() -> None:
                spool.io.fsync()
                self.state.update_pending(known, path=path)

            await self._spools.settle_then(spool, moved)
        spool.durable = durable
        return pid

    async def _uploaded(
        self, node: Node, spool: Spool, new: ContainerFile, sent: tuple[ContainerId, str, int]
    ) -> None:
        """The server holds ``new``: ``spool``'s content at a version, sent to ``cid/path``."""
        cid, path, version = sent
        self._stats.uploads += 1
        self._stats.bytes_uploaded += spool.size
        # shown at once; where it is shown is kept at the end, with the record's drop: the
        # record outlives it, so a crash in between resumes the upload, and adopts it
        keep_alias = self.ns.upload_landed(node, new)
        superseded, spool.replaces = spool.replaces, [(cid, new.id)]
        if spool.version != version:
            # written again meanwhile: the record stays, and its next upload replaces this one
            await self.keep_replaces(spool)
        await self.delete_superseded(superseded)
        await self._renamer.retire_backup(cid, path)
        pid = None
        if spool.version == version:
            spool.dirty = False
            pid, spool.pending_id = spool.pending_id, None
        if keep_alias is not None or pid is not None:
            await in_thread(self._landed, keep_alias, pid)  # one trip for both
        self._queue.uploaded(node)

    def _landed(self, keep_alias: Callable[[], None] | None, pid: str | None) -> None:
        """Blocking: keep where the new file is shown, then drop the record of its upload."""
        if keep_alias is not None:
            keep_alias()
        if pid is not None:
            self.state.drop_pending(pid)

    async def adopt_resumed(self, node: Node, item: PendingUpload) -> bool:
        """A queued upload of a previous mount that was killed may have reached the server,
        its answer lost: adopt the file it created rather than upload a duplicate."""
        spool = spool_of(node)
        if spool is None or node.cid is None:
            return False
        try:
            found = await self.client.find_upload(
                node.cid, node.path, size=spool.size, since=item.created, old=item.old_file_id
            )
        except ApiError as err:
            log.info("cannot check whether %s reached the server: %s", node.path, err)
            return False
        if found is None or not await self._same_content(found, spool):
            return False
        log.info(
            "adopting %s/%s: the previous mount's upload reached the server", node.cid, node.path
        )
        async with holding(node.lock):
            await self._uploaded(node, spool, found, (node.cid, node.path, spool.version))
        return True

    async def _same_content(self, found: ContainerFile, spool: Spool) -> bool:
        """Whether the server file ``found`` holds the spool's bytes: name, size and time
        alone could take an older file of the same size for the lost upload, and adopting it
        would lose the new content."""
        try:
            source = await self.reader.fetch(found.container_id, found.id, found.bytes)
        except ContainerFsError as err:
            log.info("cannot compare %s with the queued upload: %s", found.path, err)
            return False
        try:
            return await in_thread(filecmp.cmp, source, spool.path, False)
        except OSError:
            return False
        finally:
            self.reader.unpin(found.id)

    async def upload_queued(self, node: Node) -> bool:
        """Upload ``node`` now (a write-back job); True if a close queued newer content."""
        async with holding(node.lock):
            await self.upload_locked(node, now=True)
        spool = self._to_upload(node)  # e.g. not once moved to a local-only name meanwhile
        return spool is not None and spool.writers == 0 and not self._queue.is_failed(node)

    async def sync(self, under: Node, *, deferred: bool = True) -> list[PendingItem]:
        """Wait until every upload of ``under`` (a file, or a directory's files) is on the
        server, retrying failed ones once more; the uploads that still failed. Deferred
        files (tool temp files) are uploaded now unless ``deferred`` is False."""

        def inside(node: Node) -> bool:
            if under.cid is None:  # the mount's root
                return True
            if node.cid != under.cid:
                return False
            return (
                not under.path or node.path == under.path or node.path.startswith(under.path + "/")
            )

        return await self._queue.sync(inside, deferred=deferred)

    async def record(
        self,
        spool: Spool,
        cid: ContainerId,
        path: str,
        old: FileId | None,
        *,
        replaces: Sequence[ServerId] | None = None,
    ) -> str:
        """Queue ``spool``'s upload durably, its content settled and fsync'd first; it
        supersedes ``old`` and ``replaces`` (by default every file the spool replaces). A
        disk that cannot take it is ``SpoolError`` (ENOSPC)."""
        every = spool.replaces if replaces is None else replaces

        def durable() -> str:
            spool.io.fsync()
            return self.state.add_pending(cid, path, spool.path, old, replaces=every).id

        try:
            return await self._spools.settle_then(spool, durable)  # one trip to a thread
        except (OSError, StateError) as err:
            code = err.errno if isinstance(err.errno, int) and err.errno else errno.EIO
            raise SpoolError(f"cannot queue the upload of {path}: {err}", errno_=code) from err

    async def keep_replaces(self, spool: Spool) -> None:
        """Make what a queued spool replaces durable, so that a later mount's upload of it
        deletes the same files."""
        pid = spool.pending_id
        if pid is not None:
            replaces = list(spool.replaces)
            await in_thread(lambda: self.state.update_pending(pid, replaces=replaces))

    async def delete_superseded(self, superseded: Sequence[ServerId]) -> None:
        """Delete the server files a new one supersedes, all hidden from listings at once:
        none shows beside the new file while the deletes before it are on their way."""
        for owner, fid in superseded:
            self.ns.deleting(owner, fid)
        for i, (owner, fid) in enumerate(superseded):
            try:
                await self.delete_quietly(owner, fid)
            except BaseException:
                for left in superseded[i + 1 :]:
                    self.ns.delete_abandoned(*left)  # never tried: it may show again
                raise

    async def delete_quietly(self, cid: ContainerId, fid: FileId) -> None:
        try:
            await self.delete_remote(cid, fid)
        except ApiError as err:
            log.warning("could not delete superseded %s/%s (will retry): %s", cid, fid, err)
            # kept in the state before the caller lets go of the queue record that named it:
            # a crash must not leave the old file beside the new one
            try:
                await in_thread(self.state.add_orphan, cid, fid)
            except StateError as failed:  # a full state disk: this mount still retries it
                log.warning("the delete of %s/%s is kept for this mount only: %s", cid, fid, failed)
            self._queue.orphan(cid, fid, err)

    async def orphan_deleted(self, cid: ContainerId, fid: FileId) -> None:
        """A superseded file deleted by a retry: no later mount deletes it again."""
        with contextlib.suppress(StateError):  # if it stays, the next mount's delete is a 404
            await in_thread(self.state.drop_orphan, fid)

    async def delete_remote(self, cid: ContainerId, fid: FileId) -> None:
        self.ns.deleting(cid, fid)  # hidden while the delete is on its way
        try:
            await self.client.delete_file(cid, fid)
            self._stats.deletes += 1
        except NotFound:
            pass  # already gone: the goal of a delete
        except ApiError:
            raise  # still hidden: the caller queues it as an orphan or gives it up
        except BaseException:
            self.ns.delete_abandoned(cid, fid)  # cancelled, or a bug: it may still be there
            raise
        self.reader.invalidate(fid)
        await self.ns.file_deleted(cid, fid)
