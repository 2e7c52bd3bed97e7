"""The upload queue's timing on trio's mock clock: failed uploads are retried with a doubling
delay up to the cap, an error retrying cannot cure waits the cap at once, a deferred file is
uploaded when its grace period is over, and orphans are retried. The queue is driven through
its ``UploadHost`` interface by a fake writer, so no thread hop lets the clock run ahead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from containerfs.api.retrying import Backoff
from containerfs.errors import ApiError, ContainerExpired, ServerError
from containerfs.models import ContainerId, FileId
from containerfs.ns.inodes import Kind, Node
from containerfs.state import PendingUpload
from containerfs.write.queue import UploadQueue
from containerfs.write.spool import ServerId, Spool

CID = ContainerId("cntr_1")


class FakeWriter:
    """Records when each step was asked for; fails uploads with ``error`` while it is set."""

    def __init__(self) -> None:
        self.error: ApiError | None = None
        self.uploads: list[float] = []
        self.deletes: list[float] = []
        self.delete_error: ApiError | None = None
        self.orphans_deleted: list[FileId] = []
        self.queue: UploadQueue | None = None

    def classify(self, node: Node) -> None:
        pass

    async def reopen(self, item: PendingUpload, replaces: list[ServerId]) -> Spool:
        raise AssertionError("nothing to resume here")

    def attach(self, node: Node, spool: Spool) -> None:
        raise AssertionError("no spool is attached here")

    async def settle(self, spool: Spool) -> None:
        raise AssertionError("no spool is written here")

    async def record(self, spool: Spool, cid: ContainerId, path: str, old: FileId | None) -> str:
        return "pending-1"

    async def upload_locked(self, node: Node, *, now: bool = False) -> None:
        self.uploads.append(trio.current_time())
        assert self.queue is not None
        self.queue.uploading(node)
        if self.error is not None:
            self.queue.failed(node, self.error)
            raise self.error
        self.queue.uploaded(node)

    async def flush(self, node: Node, spool: Spool | None = None) -> None:
        await self.upload_locked(node)

    async def close_if_idle(self, node: Node) -> None:
        pass

    async def adopt_resumed(self, node: Node, item: PendingUpload) -> bool:
        return False

    async def upload_queued(self, node: Node) -> bool:
        await self.flush(node)
        return False

    async def delete_quietly(self, cid: ContainerId, fid: FileId) -> None:
        self.deletes.append(trio.current_time())
        assert self.queue is not None
        if self.delete_error is not None:
            self.queue.orphan(cid, fid, self.delete_error)

    async def orphan_deleted(self, cid: ContainerId, fid: FileId) -> None:
        self.orphans_deleted.append(fid)


@pytest.fixture
async def queue() -> AsyncIterator[Any]:
    writer = FakeWriter()
    q = UploadQueue(
        writer,
        None,  # type: ignore[arg-type]  # only resume and drain use the namespace
        None,  # type: ignore[arg-type]  # ... and the state database
        policy=Backoff(base=1.0, cap=4.0),
        defer_seconds=5.0,
    )
    writer.queue = q
    async with trio.open_nursery() as nursery:
        nursery.start_soon(q.run)
        yield q, writer
        nursery.cancel_scope.cancel()


def file_node(path: str = "f") -> Node:
    return Node(2, Kind.FILE, CID, path)


async def test_a_failed_upload_is_retried_after_a_doubling_delay_up_to_the_cap(
    queue: Any, autojump_clock: trio.abc.Clock
) -> None:
    q, writer = queue
    writer.error = ServerError("unavailable")
    node = file_node()
    start = trio.current_time()
    with pytest.raises(ApiError):
        await writer.upload_locked(node)
    await trio.sleep(20.5)
    assert [round(t - start, 6) for t in writer.uploads] == [0, 1, 3, 7, 11, 15, 19]
    assert q.counts().pending == 1
    [item] = q.snapshot()
    assert item.state == "failed" and "unavailable" in str(item.error)


async def test_a_retry_that_succeeds_empties_the_queue(
    queue: Any, autojump_clock: trio.abc.Clock
) -> None:
    q, writer = queue
    writer.error = ServerError("unavailable")
    with pytest.raises(ApiError):
        await writer.upload_locked(file_node())
    writer.error = None
    await trio.sleep(1.5)
    assert len(writer.uploads) == 2
    assert q.snapshot() == [] and q.counts().pending == 0


async def test_an_error_retrying_cannot_cure_waits_the_cap_at_once(
    queue: Any, autojump_clock: trio.abc.Clock
) -> None:
    _, writer = queue
    writer.error = ContainerExpired("Container is expired.", status=400)
    start = trio.current_time()
    with pytest.raises(ApiError):
        await writer.upload_locked(file_node())
    await trio.sleep(3.9)
    assert len(writer.uploads) == 1
    await trio.sleep(0.2)
    assert [round(t - start, 6) for t in writer.uploads] == [0, 4]


async def test_a_deferred_file_is_uploaded_when_its_grace_period_is_over(
    queue: Any, autojump_clock: trio.abc.Clock
) -> None:
    q, writer = queue
    node = file_node("tmp12345678")
    node.deferred = True
    start = trio.current_time()
    q.defer(node)
    await trio.sleep(4.9)
    assert writer.uploads == [] and q.snapshot()[0].state == "deferred"
    await trio.sleep(0.2)
    assert [round(t - start, 6) for t in writer.uploads] == [5]
    assert q.snapshot() == []


async def test_a_superseded_file_whose_delete_failed_is_deleted_later(
    queue: Any, autojump_clock: trio.abc.Clock
) -> None:
    q, writer = queue
    start = trio.current_time()
    q.orphan(CID, FileId("file_old"), ServerError("unavailable"))
    assert q.counts().orphans == 1
    await trio.sleep(1.5)
    assert [round(t - start, 6) for t in writer.deletes] == [1]
    assert q.counts().orphans == 0
    assert writer.orphans_deleted == [FileId("file_old")]  # no later mount deletes it again
