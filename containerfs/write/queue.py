"""The pending-upload queue: deferred uploads, retries with backoff, resuming a previous mount.

A failed upload keeps its spool and its row in the state database; the writer's background loop
(``retry_loop``) tries it again at its own time, uploads deferred files once their grace period
is over, and retries the deletes of superseded server files. ``resume`` re-queues what a
previous mount left; ``drain`` uploads everything it can before a mount ends. These are
functions of the ``Writer``, whose queues they work on. Knows nothing about FUSE or HTTP.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from containerfs.errors import ApiError, ContainerFsError
from containerfs.models import ContainerId
from containerfs.state import PendingUpload, in_thread

if TYPE_CHECKING:
    from containerfs.ns.namespace import Node
    from containerfs.write.writer import ServerId, Writer

log = logging.getLogger(__name__)


@dataclass
class Retry:
    """When to try a failed upload (or delete) again, and why the last attempt failed."""

    delay: float  # the wait before ``due``; doubled by every failure up to ``retry_max``
    due: float  # trio time of the next attempt
    error: str | None = None


def pending(w: Writer) -> list[dict[str, object]]:
    """The uploads not done yet: deferred, failed, or queued by a previous mount."""
    return [
        {
            "container_id": n.cid,
            "path": n.path,
            "bytes": n.spool.size if n.spool else 0,
            "state": "deferred" if n in w._later else "failed",
            "error": w._failed[n].error if n in w._failed else None,
        }
        for n in [*w._failed, *w._later]
    ] + [
        {
            "container_id": item.container_id,
            "path": item.path,
            "bytes": _size_of(item.spool),
            "state": "failed",
            "error": retry.error,
        }
        for item, _, retry in w._unresumed.values()
    ]


async def resume(w: Writer) -> None:
    """Re-queue the uploads a previous mount did not finish."""
    latest: dict[tuple[ContainerId, str], tuple[PendingUpload, list[ServerId]]] = {}
    for item in await in_thread(w.state.pending):  # oldest first
        if not item.spool.exists():
            log.error("pending upload %s lost its spool file; dropping it", item.path)
            await in_thread(w.state.drop_pending, item.id)
            continue
        # only the id it was recorded to replace: a file at its path now may be newer
        replaces = [(item.container_id, item.old_file_id)] if item.old_file_id else []
        key = (item.container_id, item.path)
        if key in latest:
            # two queued uploads of one path: the newer content wins, and replaces what
            # the older one would have
            older, older_replaces = latest[key]
            await _drop_item(w, older)
            replaces += [f for f in older_replaces if f not in replaces]
        latest[key] = (item, replaces)
    for item, replaces in latest.values():
        await _resume_one(w, item, replaces, None)
    w._wakeup.set()


async def _drop_item(w: Writer, item: PendingUpload) -> None:
    log.info("dropping the superseded queued upload of %s/%s", item.container_id, item.path)
    await in_thread(w.state.drop_pending, item.id)
    await in_thread(item.spool.unlink, True)


async def _resume_one(
    w: Writer, item: PendingUpload, replaces: list[ServerId], last: Retry | None
) -> None:
    w._unresumed.pop(item.id, None)
    try:
        node = await w.ns.restore(item.container_id, item.path)
    except ContainerFsError as err:
        log.warning("cannot resume upload of %s yet: %s", item.path, err)
        w._unresumed[item.id] = (item, replaces, w._backoff(last, err))
        return
    if node.spool is not None:  # written again on this mount meanwhile: that is newer
        await _drop_item(w, item)
        return
    node.spool = await w._reopen(item, replaces)
    w.ns.keep_local(node)
    w.classify(node)
    w._failed[node] = Retry(w.retry_base, trio.current_time())
    log.info("resuming upload of %s/%s (%d bytes)", item.container_id, item.path, node.spool.size)


async def _resume_due(w: Writer, *, everything: bool = False) -> None:
    now = trio.current_time()
    for item, replaces, retry in list(w._unresumed.values()):
        if everything or retry.due <= now:
            await _resume_one(w, item, replaces, retry)


async def retry_loop(w: Writer) -> None:
    """Upload deferred files when due and retry failed uploads at their own times.

    ``_wakeup`` is set by changes from outside (a failed flush, a deferred close); the loop
    renews it only after its own work, whose failures must not wake it again at once.
    """
    while True:
        try:
            await _retry_due(w)
        except Exception:  # never let the loop end: it would take the mount with it
            log.exception("the background upload loop failed; carrying on")
            await trio.sleep(w.retry_base)
        w._wakeup = trio.Event()
        with trio.move_on_after(_next_delay(w)):
            await w._wakeup.wait()


async def _retry_due(w: Writer) -> None:
    await _resume_due(w)
    await upload_due(w)
    now = trio.current_time()
    due = [n for n, r in w._failed.items() if r.due <= now]
    await retry_now(w, due, orphans=bool(w._orphans) and w._orphans_retry.due <= now)


def _next_delay(w: Writer) -> float:
    dues = [r.due for r in w._failed.values()]
    dues += w._later.values()
    dues += [retry.due for _, _, retry in w._unresumed.values()]
    if w._orphans:
        dues.append(w._orphans_retry.due)
    now = trio.current_time()
    return max(0.0, min(dues, default=now + w.retry_max) - now)


async def upload_due(w: Writer, *, everything: bool = False) -> None:
    """Upload the deferred files whose grace period is over (or all of them)."""
    now = trio.current_time()
    for node, deadline in list(w._later.items()):
        if node.gone or not node.deferred:
            w._later.pop(node, None)
        elif not everything and deadline <= now and node.opens > 0:
            w._later[node] = now + w.defer_seconds  # reopened: wait for its close
        elif (everything or deadline <= now) and node.opens == 0:
            try:
                async with node.lock:
                    await w._upload_locked(node, now=True)
            except ApiError:
                continue
            except Exception as err:
                _unexpected(w, node, err)
                continue
            await w.close_if_idle(node)


async def retry_now(
    w: Writer, nodes: Iterable[Node] | None = None, *, orphans: bool = True
) -> None:
    """Try every failed upload that nobody is writing to, and leftover deletes."""
    for node in list(nodes if nodes is not None else w._failed):
        if node.spool is not None and node.spool.writers > 0:
            _postpone(w, node)
            continue  # its writer's own flush uploads it
        try:
            await w.flush(node)
            _postpone(w, node)
            await w.close_if_idle(node)
        except ApiError:
            continue  # the failure scheduled its next attempt
        except Exception as err:
            _unexpected(w, node, err)
    if orphans:
        left, w._orphans = w._orphans, []
        for cid, fid in left:
            try:
                await w._delete_quietly(cid, fid)
            except Exception as err:
                log.error("deleting superseded %s/%s failed: %r", cid, fid, err, exc_info=err)
                w._orphan(cid, fid, err)
        if not w._orphans:
            w._orphans_retry = Retry(0.0, 0.0)


def _unexpected(w: Writer, node: Node, err: Exception) -> None:
    """An error no upload should raise (a full disk, the state database): log it, and
    try the node again later like a failed upload."""
    log.error("retrying the upload of %s/%s failed: %r", node.cid, node.path, err, exc_info=err)
    if not node.gone:
        w._failed[node] = w._backoff(w._failed.get(node), err)


def _postpone(w: Writer, node: Node) -> None:
    """A due node that was not tried: its next attempt is one delay away, not now again."""
    entry = w._failed.get(node)
    now = trio.current_time()
    if entry is not None and entry.due <= now:
        entry.due = now + max(entry.delay, w.retry_base)


async def drain(w: Writer, timeout: float) -> bool:
    """Upload what is pending now, retrying until ``timeout``; True if nothing is left."""
    with trio.move_on_after(timeout):
        while True:
            await _resume_due(w, everything=True)
            await upload_due(w, everything=True)
            await retry_now(w)
            if not (_left(w) or w._orphans):
                break
            await trio.sleep(min(1.0, w.retry_base))
    await _queue_unsaved(w)
    return not _left(w)


def _left(w: Writer) -> bool:
    return bool(w._failed or w._unresumed or _closed_deferred(w))


async def _queue_unsaved(w: Writer) -> None:
    """Writers still open as the mount ends: queue their content, so that the next mount
    uploads it (their close will never come)."""
    for node in list(w.ns.local_nodes()):
        spool = node.spool
        if spool is None or not spool.dirty or node.local_only or node.gone or spool.closed:
            continue
        cid, path = node.cid, node.path
        assert cid is not None
        if spool.pending_id is None:
            old = next((f for c, f in spool.replaces if c == cid), None)
            spool.pending_id = await in_thread(w._record, spool, cid, path, old)
        else:
            await in_thread(os.fsync, spool.fd)
        if node not in w._failed and node not in w._later:
            delay = w.retry_base
            w._failed[node] = Retry(delay, trio.current_time() + delay, "still open")


def _closed_deferred(w: Writer) -> list[Node]:
    """Deferred files nobody has open: drain uploads them now."""
    return [n for n in w._later if n.opens == 0]


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
