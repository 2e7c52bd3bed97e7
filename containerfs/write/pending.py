"""What the upload queue holds and what it needs: a retry's timing, the items
``containerfs status`` shows, and the ``UploadHost`` interface through which the queue reaches
the writer. Knows nothing about FUSE or HTTP. Layer: write path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from containerfs.models import ContainerId, FileId
from containerfs.ns.inodes import Node
from containerfs.state import PendingUpload
from containerfs.write.spool import ServerId, Spool


@dataclass
class Retry:
    """When to try a failed upload (or delete) again, and why the last attempt failed."""

    delay: float  # the wait before ``due``; doubled by every failure up to the cap
    due: float  # trio time of the next attempt
    error: str | None = None


class UploadHost(Protocol):
    """What the queue needs from the writer: its upload, flush and delete steps."""

    def classify(self, node: Node) -> None: ...

    async def reopen(self, item: PendingUpload, replaces: list[ServerId]) -> Spool: ...

    def attach(self, node: Node, spool: Spool) -> None: ...

    async def settle(self, spool: Spool) -> None: ...

    async def record(
        self, spool: Spool, cid: ContainerId, path: str, old: FileId | None
    ) -> str: ...

    async def upload_locked(self, node: Node, *, now: bool = False) -> None: ...

    async def flush(self, node: Node, spool: Spool | None = None) -> None: ...

    async def close_if_idle(self, node: Node) -> None: ...

    async def upload_queued(self, node: Node) -> bool: ...

    async def adopt_resumed(self, node: Node, item: PendingUpload) -> bool: ...

    async def delete_quietly(self, cid: ContainerId, fid: FileId) -> None: ...

    async def orphan_deleted(self, cid: ContainerId, fid: FileId) -> None: ...


@dataclass(frozen=True)
class QueueCounts:
    pending: int  # failed uploads, and queued ones of a previous mount not resumed yet
    deferred: int
    orphans: int  # superseded server files not deleted yet
