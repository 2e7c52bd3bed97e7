"""When a file's upload streams while it is written: the writer's ``Streamer``.

A spool written from offset 0 straight on by its only writer gets an ``UploadJob`` at its
first write; once it holds ``stream_after`` bytes the job starts sending it (``job.py``), and
the flush ends the body and takes the answer. The spool's other changes (a write elsewhere, a
truncate, a second writer, a close of its fd) abort the job, and a flush finding the file
renamed, reclassified or gone cancels it: the spool is then uploaded whole, as without
streaming. Knows nothing about FUSE or HTTP. Layer: write path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from containerfs.config import STREAM_AHEAD, STREAM_PATIENCE
from containerfs.models import ContainerFile
from containerfs.ns.inodes import Node
from containerfs.write.job import JobState, SpoolFeed, StreamSender, UploadJob
from containerfs.write.spool import Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamStats:
    streamed: int  # uploads whose body was sent while the file was written
    fallbacks: int  # streams given up: their file was uploaded whole at flush


class Streamer:
    """Starts, feeds, ends and cancels the streaming uploads of a writer's spools."""

    def __init__(self, sender: StreamSender, *, stream_after: int | None) -> None:
        self._sender = sender
        self._after = stream_after
        self._nursery: trio.Nursery | None = None
        self._streamed = 0
        self._fallbacks = 0

    def run_in(self, nursery: trio.Nursery) -> None:
        """Streams run as tasks of ``nursery``; none starts before this is called."""
        self._nursery = nursery

    def statistics(self) -> StreamStats:
        return StreamStats(streamed=self._streamed, fallbacks=self._fallbacks)

    def before_write(self, node: Node | None, spool: Spool, offset: int) -> UploadJob | None:
        """A write to ``spool`` at ``offset`` is about to start: the job it feeds, if any."""
        job = spool.job
        if job is None:
            if offset != 0 or spool.size != 0 or node is None or not self._may_stream(node, spool):
                return None
            assert node.cid is not None
            job = spool.job = UploadJob(node.cid, node.path, feed=SpoolFeed())
        assert job.feed is not None
        if not job.feed.writing(offset, spool.size):
            self._drop_unstarted(spool)
            return None
        return job

    async def keep_up(self, job: UploadJob | None) -> None:
        """After a write fed ``job``: wait while its body lags too far behind (a writer
        outrunning the link gains nothing, as ``close`` waits for the whole body)."""
        if job is not None and job.feed is not None and job.state is JobState.STREAMING:
            await job.feed.keep_up(ahead=STREAM_AHEAD, patience=STREAM_PATIENCE)

    def after_write(self, spool: Spool, job: UploadJob | None, offset: int, data: bytes) -> None:
        """The write ``before_write`` was told of (``data`` at ``offset``) is on disk."""
        if job is None or job.feed is None:
            return
        job.feed.written(spool.size, offset, data)
        if (
            job.state is JobState.SPOOLING
            and self._after is not None
            and spool.size >= self._after
            and not job.feed.aborted
            and self._nursery is not None
            and not spool.closed
        ):
            job.start(self._nursery, self._sender, spool.io)

    async def finish(self, node: Node, spool: Spool) -> ContainerFile | None:
        """At flush: the file as the stream uploaded it, or None (upload the spool whole)."""
        job, spool.job = spool.job, None
        if job is None or not job.started:
            return None
        if (node.cid, node.path) != (job.cid, job.path) or node.deferred or node.local_only:
            await job.cancel()  # renamed or reclassified: the stream named it wrong
        created = await job.finish(spool.size)
        if created is None:
            self._fallbacks += 1
            log.info("streaming %s/%s given up (%s): upload it whole", job.cid, job.path, job.error)
            return None
        self._streamed += 1
        return created

    async def cancel(self, spool: Spool) -> None:
        """``spool``'s content will not be uploaded as streamed: break its request off."""
        job, spool.job = spool.job, None
        if job is not None:
            await job.cancel()

    def _drop_unstarted(self, spool: Spool) -> None:
        if spool.job is not None and not spool.job.started:
            spool.job = None  # nothing was sent: no request to wait for

    def _may_stream(self, node: Node, spool: Spool) -> bool:
        return (
            self._after is not None
            and self._nursery is not None
            and node.cid is not None
            and spool is node.spool
            and spool.writers == 1
            and not (node.local_only or node.deferred or node.gone)
        )
