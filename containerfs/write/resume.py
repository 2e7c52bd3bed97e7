"""The queue's memory of a previous mount: ``resume`` re-queues the uploads it left (the
newest of each path, adopting one the server got before the crash), those that cannot be
resumed yet wait with backoff; and the queue's snapshot for ``containerfs status``. A base
class of the ``UploadQueue`` (queue.py), over the sets it owns. Knows nothing about FUSE or
HTTP. Layer: write path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from containerfs.aio import in_thread
from containerfs.api.retrying import Backoff
from containerfs.errors import ApiError, ContainerFsError
from containerfs.models import ContainerId
from containerfs.ns.inodes import Node
from containerfs.ns.namespace import Namespace
from containerfs.snapshots import PendingItem
from containerfs.state import PendingUpload, State
from containerfs.write.job import UploadJob
from containerfs.write.pending import Retry, UploadHost
from containerfs.write.spool import ServerId

log = logging.getLogger(__name__)


class Resuming:
    """Resume, backoff and snapshot of the ``UploadQueue``, over the state it builds."""

    _host: UploadHost
    _ns: Namespace
    _state: State
    _policy: Backoff
    _later: dict[Node, float]
    _failed: dict[Node, Retry]
    _unresumed: dict[str, tuple[PendingUpload, list[ServerId], Retry]]
    _queued: dict[Node, UploadJob]
    _wakeup: trio.Event

    def backoff(self, last: Retry | None, err: Exception) -> Retry:
        """The next attempt after a failure: the policy's base delay, doubling up to its cap.

        An error that retrying cannot cure soon (an expired or deleted container, a refused
        request) waits the longest delay at once.
        """
        if isinstance(err, ApiError) and not err.retryable:
            delay = self._policy.cap
        else:
            delay = self._policy.next_delay(last.delay if last is not None else None)
        return Retry(delay, trio.current_time() + delay, str(err))

    def snapshot(self) -> list[PendingItem]:
        """The uploads not done yet: deferred, failed, or queued by a previous mount."""
        return (
            [
                PendingItem(
                    container_id=str(n.cid),
                    path=n.path,
                    bytes=n.spool.size if n.spool else 0,
                    state="deferred" if n in self._later else "failed",
                    error=self._failed[n].error if n in self._failed else None,
                )
                for n in [*self._failed, *self._later]
            ]
            + [
                PendingItem(
                    container_id=str(n.cid),
                    path=n.path,
                    bytes=n.spool.size if n.spool else 0,
                    state=job.state.value,
                    error=None,
                )
                for n, job in self._queued.items()
                if n not in self._failed
            ]
            + [
                PendingItem(
                    container_id=item.container_id,
                    path=item.path,
                    bytes=_size_of(item.spool),
                    state="failed",
                    error=retry.error,
                )
                for item, _, retry in self._unresumed.values()
            ]
        )

    async def resume(self) -> None:
        """Re-queue the uploads a previous mount did not finish."""
        latest: dict[tuple[ContainerId, str], tuple[PendingUpload, list[ServerId]]] = {}
        for item in await in_thread(self._state.pending):  # oldest first
            if not item.spool.exists():
                log.error("pending upload %s lost its spool file; dropping it", item.path)
                await in_thread(self._state.drop_pending, item.id)
                continue
            # only the ids it was recorded to replace: a file at its path now may be newer
            replaces = list(item.replaces)
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
        await in_thread(self._state.drop_pending, item.id)
        await in_thread(item.spool.unlink, True)

    async def _resume_one(
        self, item: PendingUpload, replaces: list[ServerId], last: Retry | None
    ) -> None:
        self._unresumed.pop(item.id, None)
        try:
            node = await self._ns.restore(item.container_id, item.path)
        except ContainerFsError as err:
            log.warning("cannot resume upload of %s yet: %s", item.path, err)
            self._unresumed[item.id] = (item, replaces, self.backoff(last, err))
            return
        if node.spool is not None:  # written again on this mount meanwhile: that is newer
            await self._drop_item(item)
            return
        spool = await self._host.reopen(item, replaces)
        self._host.attach(node, spool)
        own = (node.remote.container_id, node.remote.id) if node.remote is not None else None
        for owner, fid in replaces:
            if (owner, fid) != own:  # replaced elsewhere (a rename over it): not shown there
                self._ns.deleting(owner, fid)
        self._host.classify(node)
        if await self._host.adopt_resumed(node, item):
            await self._host.close_if_idle(node)
            return
        self._failed[node] = Retry(self._policy.base, trio.current_time())
        log.info("resuming upload of %s/%s (%d bytes)", item.container_id, item.path, spool.size)

    async def _resume_due(self, *, everything: bool = False) -> None:
        now = trio.current_time()
        for item, replaces, retry in list(self._unresumed.values()):
            if everything or retry.due <= now:
                await self._resume_one(item, replaces, retry)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
