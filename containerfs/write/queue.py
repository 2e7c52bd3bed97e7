"""The pending-upload queue: deferred uploads, retries with backoff, resuming a previous mount.

A failed upload keeps its spool and its row in the state database; the queue's background loop
(``UploadQueue.run``) tries it again at its own time, uploads deferred files once their grace
period is over, and retries the deletes of superseded server files. ``resume`` re-queues what a
previous mount left; ``drain`` uploads everything it can before a mount ends. The queue owns
the deferred, failed, unresumed and orphan sets; it reaches the writer only through the
``UploadHost`` interface (pending.py). Resuming a previous mount's uploads and the snapshot
``status`` shows are its base class (resume.py). Knows nothing about FUSE or HTTP. Layer:
write path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from containerfs.aio import holding, in_thread
from containerfs.api.retrying import Backoff
from containerfs.errors import ApiError, SpoolError
from containerfs.models import ContainerId, FileId
from containerfs.ns.inodes import Node
from containerfs.ns.namespace import Namespace
from containerfs.snapshots import PendingItem
from containerfs.state import PendingUpload, State
from containerfs.write.job import JobState, UploadJob
from containerfs.write.pending import QueueCounts, Retry, UploadHost
from containerfs.write.resume import Resuming
from containerfs.write.spool import ServerId, spool_of

log = logging.getLogger(__name__)


class UploadQueue(Resuming):
    """The uploads not done yet, and when each is tried again."""

    def __init__(
        self,
        host: UploadHost,
        namespace: Namespace,
        state: State,
        *,
        policy: Backoff,
        defer_seconds: float,
        parallel: int = 1,
    ) -> None:
        self._host = host
        self._ns = namespace
        self._state = state
        self._policy = policy
        self._defer_seconds = defer_seconds
        self._later: dict[Node, float] = {}  # deferred node -> upload deadline
        self._failed: dict[Node, Retry] = {}  # node -> when its upload is tried again
        self._orphans: list[tuple[ContainerId, FileId]] = []  # superseded ids not yet deleted
        self._orphans_retry = Retry(0.0, 0.0)
        # queued uploads of a previous mount that could not be resumed yet (network down)
        self._unresumed: dict[str, tuple[PendingUpload, list[ServerId], Retry]] = {}
        self._wakeup = trio.Event()
        # write-back: the uploads a close queued, sent in the background, ``parallel`` at once
        self._queued: dict[Node, UploadJob] = {}
        self._limit = trio.CapacityLimiter(max(1, parallel))
        self._settled = trio.Event()  # set whenever a queued upload ends
        self._nursery: trio.Nursery | None = None
        self._draining: trio.CancelScope | None = None

    @property
    def policy(self) -> Backoff:
        return self._policy

    def set_policy(self, policy: Backoff) -> None:
        """Retry with ``policy`` from the next failure on (tests shorten the delays)."""
        self._policy = policy

    # ---- what the writer tells the queue ----

    def is_failed(self, node: Node) -> bool:
        return node in self._failed

    def failure(self, node: Node) -> str | None:
        """Why the last upload of ``node`` failed, while it waits for its retry."""
        retry = self._failed.get(node)
        return retry.error if retry is not None else None

    # ---- write-back: uploads a close queued ----

    def run_in(self, nursery: trio.Nursery) -> None:
        """Queued uploads run as tasks of ``nursery``."""
        self._nursery = nursery

    def enqueue(self, node: Node) -> None:
        """Upload ``node`` in the background (its spool and queue record are durable)."""
        if node in self._queued or node in self._failed:
            return  # the running job takes the newest content; a failed one waits its retry
        assert self._nursery is not None, "write-back needs run_in()"
        assert node.cid is not None
        job = self._queued[node] = UploadJob(node.cid, node.path)
        self._nursery.start_soon(self._upload_queued, node, job)

    async def _upload_queued(self, node: Node, job: UploadJob) -> None:
        try:
            async with self._limit:
                job.state = JobState.UPLOADING
                # the versions of one file go in order: each round uploads the newest content
                # under the file's lock, again while a write made it dirty during the last
                while await self._host.upload_queued(node):
                    # a round may pass no schedule point (a file's lock is taken without
                    # one when free): never keep the loop from the other tasks
                    await trio.lowlevel.checkpoint()
                job.state = JobState.DONE
        except ApiError as err:
            job.state, job.error = JobState.FAILED, err  # now in ``_failed``, retried there
        except Exception as err:
            job.state, job.error = JobState.FAILED, err
            self._unexpected(node, err)
        finally:
            self._queued.pop(node, None)
            self._settled.set()
            self._settled = trio.Event()
        await self._host.close_if_idle(node)

    async def _retry_limited(self, node: Node) -> None:
        async with self._limit:
            await self.retry_now([node], orphans=False)

    async def sync(
        self, under: Callable[[Node], bool], *, deferred: bool = True
    ) -> list[PendingItem]:
        """Wait until every upload of a node ``under`` is on the server (the ``deferred``
        ones too, uploaded now); the uploads that still failed."""
        if deferred:
            await self.upload_due(everything=True)
        while True:
            while any(under(n) for n in self._queued):
                await self._settled.wait()
            failed = [n for n in self._failed if under(n)]
            if not failed:
                return []
            async with trio.open_nursery() as nursery:  # as many at once as the queue's jobs
                for node in failed:
                    nursery.start_soon(self._retry_limited, node)
            if not any(under(n) for n in self._queued):
                break
        return [
            PendingItem(str(n.cid), n.path, n.spool.size if n.spool else 0, "failed", r.error)
            for n, r in self._failed.items()
            if under(n)
        ]

    def defer(self, node: Node) -> None:
        """Upload ``node`` once its grace period is over."""
        self._later[node] = trio.current_time() + self._defer_seconds
        self._wakeup.set()

    def uploading(self, node: Node) -> None:
        """An upload of ``node`` starts now: it is no longer deferred."""
        self._later.pop(node, None)

    def uploaded(self, node: Node) -> None:
        """Nothing (left) to upload for ``node``."""
        self._failed.pop(node, None)

    def forget(self, node: Node) -> None:
        """``node`` is gone or stays local: nothing of it is to be uploaded any more."""
        self._failed.pop(node, None)
        self._later.pop(node, None)

    def failed(self, node: Node, err: Exception) -> None:
        """An upload of ``node`` failed: try again after the next backoff delay."""
        self._failed[node] = self.backoff(self._failed.get(node), err)
        self._wakeup.set()

    def orphan(self, cid: ContainerId, fid: FileId, err: Exception | None) -> None:
        """A superseded id to delete later (the host keeps it in the state first)."""
        self._orphans.append((cid, fid))
        last = self._orphans_retry
        if err is not None and last.due <= trio.current_time():  # once per round of retries
            self._orphans_retry = self.backoff(last if last.delay else None, err)
        self._wakeup.set()

    async def load_orphans(self) -> None:
        """The deletes a previous mount could not make: hidden, and retried soon."""
        for cid, fid in await in_thread(self._state.orphans):
            self._ns.deleting(cid, fid)
            self.orphan(cid, fid, None)

    def counts(self) -> QueueCounts:
        return QueueCounts(
            pending=len(self._failed) + len(self._unresumed) + len(self._queued),
            deferred=len(self._later),
            orphans=len(self._orphans),
        )

    async def run(self) -> None:
        """Upload deferred files when due and retry failed uploads at their own times.

        ``_wakeup`` is set by changes from outside (a failed flush, a deferred close); the loop
        renews it only after its own work, whose failures must not wake it again at once.
        """
        while True:
            try:
                await self._retry_due()
            except Exception:  # never let the loop end: it would take the mount with it
                log.exception("the background upload loop failed; carrying on")
                await trio.sleep(self._policy.base)
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
        return max(0.0, min(dues, default=now + self._policy.cap) - now)

    async def upload_due(self, *, everything: bool = False) -> None:
        """Upload the deferred files whose grace period is over (or all of them)."""
        now = trio.current_time()
        for node, deadline in list(self._later.items()):
            if node.gone or not node.deferred:
                self._later.pop(node, None)
            elif not everything and deadline <= now and node.opens > 0:
                self._later[node] = now + self._defer_seconds  # reopened: wait for its close
            elif (everything or deadline <= now) and node.opens == 0:
                try:
                    async with holding(node.lock):
                        await self._host.upload_locked(node, now=True)
                except ApiError:
                    continue
                except Exception as err:
                    self._unexpected(node, err)
                    continue
                await self._host.close_if_idle(node)

    async def retry_now(self, nodes: Iterable[Node] | None = None, *, orphans: bool = True) -> None:
        """Try every failed upload that nobody is writing to, and leftover deletes."""
        for node in list(nodes if nodes is not None else self._failed):
            spool = spool_of(node)
            if spool is not None and spool.writers > 0:
                self._postpone(node)
                continue  # its writer's own flush uploads it
            try:
                await self._host.flush(node)
                self._postpone(node)
                await self._host.close_if_idle(node)
            except ApiError:
                continue  # the failure scheduled its next attempt
            except Exception as err:
                self._unexpected(node, err)
        if orphans:
            left, self._orphans = self._orphans, []
            for cid, fid in left:
                try:
                    await self._host.delete_quietly(cid, fid)  # an orphan again if it fails
                except Exception as err:
                    log.error("deleting superseded %s/%s failed: %r", cid, fid, err, exc_info=err)
                    self.orphan(cid, fid, err)
                    continue
                if (cid, fid) not in self._orphans:
                    await self._host.orphan_deleted(cid, fid)
            if not self._orphans:
                self._orphans_retry = Retry(0.0, 0.0)

    def _unexpected(self, node: Node, err: Exception) -> None:
        """An error no upload should raise (a full disk, the state database): log it, and
        try the node again later like a failed upload."""
        log.error("retrying the upload of %s/%s failed: %r", node.cid, node.path, err, exc_info=err)
        if not node.gone:
            self._failed[node] = self.backoff(self._failed.get(node), err)

    def _postpone(self, node: Node) -> None:
        """A due node that was not tried: its next attempt is one delay away, not now again."""
        entry = self._failed.get(node)
        now = trio.current_time()
        if entry is not None and entry.due <= now:
            entry.due = now + max(entry.delay, self._policy.base)

    async def drain(self, timeout: float) -> bool:
        """Upload what is pending now, retrying until ``timeout`` (or ``stop_draining``);
        True if nothing is left."""
        with trio.move_on_after(timeout) as self._draining:
            while True:
                await self._resume_due(everything=True)
                await self.upload_due(everything=True)
                await self.retry_now()
                if not (self._left() or self._orphans):
                    break
                await trio.sleep(min(1.0, self._policy.base))
        self._draining = None
        await self._queue_unsaved()
        return not self._left()

    def stop_draining(self) -> None:
        """End a ``drain`` now (an upload in flight is cut); what is left stays queued."""
        if self._draining is not None:
            self._draining.cancel()

    def _left(self) -> bool:
        return bool(self._failed or self._unresumed or self._queued or self._closed_deferred())

    async def _queue_unsaved(self) -> None:
        """Writers still open as the mount ends: queue their content, so that the next mount
        uploads it (their close will never come)."""
        for node in list(self._ns.local_nodes()):
            spool = spool_of(node)
            if spool is None or not spool.dirty or node.local_only or node.gone or spool.closed:
                continue
            cid, path = node.cid, node.path
            assert cid is not None
            try:
                await self._host.settle(spool)
            except SpoolError as err:  # a full disk: its writer's next write or close says so
                log.error("cannot queue %s/%s, still open: %s", cid, path, err)
                continue
            if spool.pending_id is None:
                old = next((f for c, f in spool.replaces if c == cid), None)
                spool.pending_id = await self._host.record(spool, cid, path, old)
            else:
                await in_thread(spool.io.fsync)
            if node not in self._failed and node not in self._later:
                delay = self._policy.base
                self._failed[node] = Retry(delay, trio.current_time() + delay, "still open")

    def _closed_deferred(self) -> list[Node]:
        """Deferred files nobody has open: drain uploads them now."""
        return [n for n in self._later if n.opens == 0]
