"""Write path: spool files, upload at flush, the durable pending-upload queue.

Every node open for writing has a spool file in the state directory (mode 0600). Writes go to
the spool; ``flush`` uploads it when dirty (the steps in uploads.py), so ``close()`` reports a
failed upload. A failed upload keeps its spool and its row in the state database and is retried in
the background with backoff; a later mount resumes it. The server copy a new upload replaces is
deleted only after the server confirmed the new one. The retry and resume machinery is the
``UploadQueue`` (queue.py), renames the ``Renamer`` (renames.py); the writer owns both and they
reach it through narrow interfaces. Knows nothing about FUSE or HTTP. Layer: write path.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import trio

from containerfs.aio import holding, in_thread
from containerfs.api.retrying import Backoff
from containerfs.config import (
    DEFAULT_DEFERRED,
    DEFAULT_LOCAL_ONLY,
    DEFER_SECONDS,
    STREAM_AFTER,
    UPLOAD_RETRY_BASE,
    UPLOAD_RETRY_MAX,
    WRITE_BACK_PARALLEL,
)
from containerfs.errors import ApiError, SpoolError
from containerfs.models import ContainerFile
from containerfs.ns.inodes import Node
from containerfs.ns.namespace import Namespace
from containerfs.snapshots import PendingItem, WriterStats
from containerfs.state import PendingUpload, State
from containerfs.write.queue import UploadQueue
from containerfs.write.renames import Renamer
from containerfs.write.spool import ContentFetcher as ContentFetcher
from containerfs.write.spool import ServerId as ServerId
from containerfs.write.spool import Spool as Spool
from containerfs.write.spool import SpoolFiles, spool_of
from containerfs.write.spool import Uploader as Uploader
from containerfs.write.streaming import Streamer
from containerfs.write.uploads import Counters, UploadSteps

log = logging.getLogger(__name__)


class Writer(UploadSteps):
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
        retry_base: float = UPLOAD_RETRY_BASE,
        retry_max: float = UPLOAD_RETRY_MAX,
        max_dir_rename: int = 1000,
        stream_after: int | None = STREAM_AFTER,
        write_back: bool = False,
        parallel: int = WRITE_BACK_PARALLEL,
    ) -> None:
        self.client = client
        self.ns = namespace
        self.state = state
        self.reader = reader
        self.local_only = tuple(p for p in local_only if p)
        self.deferred = tuple(p for p in deferred if p)
        self.max_dir_rename = max_dir_rename
        self._stats = Counters()
        self._spools = SpoolFiles(state)
        self.write_back = write_back
        # a write-back close returns before any upload: nothing to stream while writing
        self._streamer = Streamer(client, stream_after=None if write_back else stream_after)
        self._queue = UploadQueue(
            self,
            namespace,
            state,
            policy=Backoff(retry_base, retry_max),
            defer_seconds=defer_seconds,
            parallel=parallel,
        )
        self._renamer = Renamer(
            self, namespace=namespace, state=state, client=client, reader=reader, queue=self._queue
        )

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
        await writer._queue.resume()
        await writer._queue.load_orphans()
        nursery.start_soon(writer._queue.run)
        writer._streamer.run_in(nursery)
        writer._spools.run_in(nursery)
        writer._queue.run_in(nursery)
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
        async with holding(node.lock):
            shared = spool_of(node)
            if shared is None:
                # the content fetched before the lock, unless the server copy changed meanwhile
                fetched = source if node.remote is remote else None
                spool = await self.new_spool(node, copy=not truncate, source=fetched)
                self.attach(node, spool)
            elif shared.writers > 0 or shared.dirty:
                # another writer's, or content not on the server yet (queued, local-only):
                # a private copy, so that a write failing on a full disk never damages it
                shared.abort_stream()  # two writers: the content is known only at the close
                if not truncate:
                    await self._spools.settle(shared)  # its writes held in memory, too
                spool = await self._spools.create(shared.path if not truncate else None)
            else:
                spool = shared
                if truncate and spool.size:
                    await self._spools.truncate(spool, 0)
            if truncate:
                spool.dirty = True
                spool.version += 1
            spool.writers += 1
            return spool

    async def new_spool(self, node: Node, *, copy: bool, source: Path | None = None) -> Spool:
        """A spool for ``node``: empty, or a copy of its server content (``source`` if the
        caller already fetched it)."""
        remote = node.remote
        if not copy or remote is None:
            spool = await self._spools.create(None)
        elif source is not None:
            spool = await self._spools.create(source)
        else:
            source = await self.reader.fetch(remote.container_id, remote.id, remote.bytes)
            try:
                spool = await self._spools.create(source)
            finally:
                self.reader.unpin(remote.id)
        if remote is not None:
            spool.replaces.append((remote.container_id, remote.id))
        return spool

    async def discard(self, spool: Spool) -> None:
        """Delete a spool nobody needs any more (and its pending upload, if any)."""
        await self._spools.discard(spool)

    async def settle(self, spool: Spool) -> None:
        """Everything written to ``spool`` is in its file (``SpoolError``: it cannot be)."""
        await self._spools.settle(spool)

    async def reopen(self, item: PendingUpload, replaces: list[ServerId]) -> Spool:
        """The spool of an upload a previous mount queued: dirty, and recorded as ``item``."""
        return await self._spools.reopen(item, replaces)

    async def write(
        self, node: Node, spool: Spool, offset: int, data: bytes, *, append: bool = False
    ) -> int:
        """Write to a handle's spool (``node``'s upload streams while it is written); on a
        full disk (``SpoolError``) the spool is given up."""
        at = spool.size if append else offset
        job = self._streamer.before_write(node, spool, at)
        try:
            written = await self._spools.write(spool, offset, data, append=append)
        except SpoolError:
            spool.abort_stream()
            async with holding(node.lock):
                await self._forsake_locked(node, spool)
            raise
        except BaseException:
            spool.abort_stream()  # the spool may not hold what was sent as written
            raise
        finally:
            self._streamer.after_write(spool, job, at, data)
        await self._streamer.keep_up(job)
        return written

    async def read(self, spool: Spool, offset: int, size: int) -> bytes:
        return await self._spools.read(spool, offset, size)

    async def truncate(self, node: Node, size: int, spool: Spool | None = None) -> None:
        """``ftruncate`` of a writer's ``spool``, or ``truncate`` by path, uploaded at once."""
        if spool is not None:
            if spool.size != size:
                await self._spools.truncate(spool, size)
            return
        spool = await self.open(node, truncate=size == 0)
        try:
            if spool.size != size:
                await self._spools.truncate(spool, size)
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
        retrying = spool is node.spool and self._queue.is_failed(node)
        if (
            spool.writers == 0
            and spool.dirty
            and spool.failed is None
            and not node.gone
            and not retrying
        ):
            # a failure stays queued and is retried; nobody is left to report it to (an
            # upload that already failed is retried by the background loop, at its time)
            with contextlib.suppress(ApiError):
                await self.flush(node, spool, wait=False)
        if spool is not node.spool and spool.writers == 0 and not spool.closed:
            # a writer whose content another close superseded (an unlink or a rename over
            # the file may have discarded it meanwhile: then nothing is left to do)
            await self.discard(spool)
        await self.close_if_idle(node)

    async def close_if_idle(self, node: Node) -> None:
        """Drop a clean spool once no handle uses it; a dirty one stays for its retry."""
        spool = spool_of(node)
        if spool is None or node.opens > 0:
            return
        if node.gone:
            node.spool = None
            await self.discard(spool)
            self.ns.release_local(node)
            return
        if spool.dirty or (node.local_only and node.remote is None):
            return  # waiting for its upload, or its only copy
        node.spool = None
        io = self._spools.close(spool)
        if io is None:
            self.ns.release_local(node)
            return
        # opens wait for this: the content moves from the spool to the cache meanwhile
        settled = node.settling = trio.Event()
        kept = False
        try:
            closing = await io.release()  # clean: uploaded, so settled before
            try:
                remote = node.remote
                # a clean spool holds exactly the server's content: keep it as the cached
                # copy (its descriptors closed in the same trip to a thread as the move)
                kept = (
                    remote is not None
                    and not node.local_only
                    and await self.reader.adopt(remote.id, spool.path, first=closing)
                )
            finally:
                if not kept:
                    with trio.CancelScope(shield=True):
                        await in_thread(_close_and_unlink, closing, spool.path)
        finally:
            node.settling = None
            settled.set()
        self.ns.release_local(node)

    # ---- unlink ------------------------------------------------------------------------
    async def unlink(self, node: Node) -> None:
        """Remove a file: its server copy (if any), then its spool and pending upload."""
        async with holding(node.lock):
            spool = spool_of(node)
            if spool is not None:
                spool.abort_stream()
            ids: list[ServerId] = []
            if node.remote is not None:
                ids.append((node.remote.container_id, node.remote.id))
            if spool is not None:
                ids += [f for f in spool.replaces if f not in ids]
            for owner, fid in ids:
                try:
                    await self.delete_remote(owner, fid)
                except ApiError:
                    if (owner, fid) == ids[0] and node.remote is not None:
                        self.ns.delete_abandoned(owner, fid)  # the unlink fails: the file stays
                    raise  # (a file its content replaces stays hidden: still superseded)
            self.ns.mark_gone(node)
            self.ns.drop_remote(node)
            self._queue.forget(node)
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

    # ---- rename (the Renamer) ----------------------------------------------------------
    async def rename(self, node: Node, parent: Node, name: str, replaced: Node | None) -> None:
        """Move ``node`` to ``parent/name`` (see ``Renamer.rename``)."""
        await self._renamer.rename(node, parent, name, replaced)

    # ---- the pending queue (the UploadQueue) ---------------------------------------------
    def pending(self) -> list[PendingItem]:
        """The uploads not done yet: deferred, failed, or queued by a previous mount."""
        return self._queue.snapshot()

    async def upload_due(self, *, everything: bool = False) -> None:
        """Upload the deferred files whose grace period is over (or all of them)."""
        await self._queue.upload_due(everything=everything)

    async def retry_now(self, nodes: Iterable[Node] | None = None, *, orphans: bool = True) -> None:
        """Try every failed upload that nobody is writing to, and leftover deletes."""
        await self._queue.retry_now(nodes, orphans=orphans)

    async def drain(self, timeout: float) -> bool:
        """Upload what is pending now, retrying until ``timeout``; True if nothing is left."""
        return await self._queue.drain(timeout)

    def stop_draining(self) -> None:
        """End a ``drain`` now; what is left stays queued for the next mount."""
        self._queue.stop_draining()

    async def discard_local_only(self) -> None:
        """The mount ended: local-only files (swap files, backups) end with it."""
        for node in list(self.ns.local_nodes()):
            spool = spool_of(node)
            if spool is not None and node.local_only and spool.pending_id is None:
                node.spool = None
                await self.discard(spool)

    def configure_retries(self, *, base: float, cap: float | None = None) -> None:
        """Change the upload retry delays of a running writer (``cap`` kept if None)."""
        current = self._queue.policy
        self._queue.set_policy(Backoff(base, current.cap if cap is None else cap))

    def count_upload(self) -> None:
        """An upload made outside ``upload_locked`` (a rename's)."""
        self._stats.uploads += 1

    def statistics(self) -> WriterStats:
        counts = self._queue.counts()
        streams = self._streamer.statistics()
        return WriterStats(
            **vars(self._stats),
            spools_open=self._spools.open_count,
            pending=counts.pending,
            deferred=counts.deferred,
            orphans=counts.orphans,
            streamed=streams.streamed,
            stream_fallbacks=streams.fallbacks,
        )


def _close_and_unlink(closing: Callable[[], None], path: Path) -> None:
    try:
        closing()
    finally:
        path.unlink(missing_ok=True)
