"""Sizes of server files listed without one (``bytes: null``), learned before anyone sees them.

Part of the FUSE adapter's package, between it and the read path; knows nothing about FUSE
or HTTP (no pyfuse3 import). Many tools copy
exactly ``st_size`` bytes (rsync, tar, zip, Python's ``shutil``, ``cp -a``, ``mmap``), so a 0
shown for an unknown size is silent data loss: ``operations`` asks ``ensure`` before it answers
``lookup``, ``getattr``, ``setattr`` or ``open`` for such a file, and ``ensure_all`` for every
file of a directory it is about to list with attributes (readdirplus).

Where a size comes from, cheapest first:

1. the node's ``size_hint``: learned earlier on this mount, for this file id;
2. ``Reader.known_size``: a complete disk-cache entry (also from an earlier mount), a download
   that ended or whose response announced the size, or an earlier announcement;
3. ``Reader.learn_size``: the content GET, waited for only until its headers
   (``Content-Length``/``Content-Range``); its body goes on into the disk cache for the read
   that usually follows. Only a server that announces no size makes this a whole download.

The requests of step 3 for a listing run concurrently, at most ``concurrency`` at a time (the
client's rate limiter paces them further), and for at most ``give_up_after`` seconds in all
(the client's budget for one call: a stalled server must not cost one budget per round of
``concurrency`` files); what is not learned by then stays unknown, and a ``stat`` of it asks
again. A single ``ensure`` (one ``stat``) does not queue behind a listing's requests. A size
that cannot be learned is an error (``EIO``; ``ENOENT`` when the file is gone), remembered for
``failure_ttl`` seconds so that the ``stat`` calls of one ``ls -l`` do not each wait for the
server again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import trio
from cachetools import TTLCache

from containerfs.config import DEFAULT_PROGRESS
from containerfs.errors import ContainerFsError, NotFound
from containerfs.errors import SizeUnknown as SizeUnknown
from containerfs.models import ContainerFile, ContainerId, FileId
from containerfs.ns.inodes import Kind, Node
from containerfs.snapshots import SizeStats

log = logging.getLogger(__name__)

# Concurrent content requests while learning the sizes of one listing: enough that `ls -l`
# of a directory of outputs costs about one round trip, half of the client's connection pool.
CONCURRENCY = 32
FAILURE_TTL = 5.0


class SizeSource(Protocol):
    """The part of ``Reader`` this module uses."""

    def known_size(self, file_id: FileId) -> int | None: ...
    def content_size(self, file_id: FileId) -> int | None: ...
    async def learn_size(self, container_id: ContainerId, file_id: FileId) -> int: ...


class Sizes:
    """Makes sure no file of unknown size is shown before its size is known."""

    def __init__(
        self,
        reader: SizeSource,
        *,
        concurrency: int = CONCURRENCY,
        failure_ttl: float = FAILURE_TTL,
        give_up_after: float = DEFAULT_PROGRESS.budget,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._limiter = trio.CapacityLimiter(concurrency)
        self._give_up_after = give_up_after
        self._failures: TTLCache[FileId, SizeUnknown] = TTLCache(4096, failure_ttl, timer=clock)
        self._learned = self._known = self._failed = self._corrected = 0

    @staticmethod
    def unknown(node: Node) -> ContainerFile | None:
        """The server file whose size ``node`` does not know yet, or None."""
        if node.kind is not Kind.FILE or node.spool is not None or node.size_hint is not None:
            return None
        remote = node.remote
        return remote if remote is not None and remote.bytes is None else None

    async def ensure(self, node: Node) -> None:
        """Learn the size of ``node`` if it is unknown; raises ``SizeUnknown`` if it cannot."""
        await self._ensure(node, None)

    async def _ensure(self, node: Node, limiter: trio.CapacityLimiter | None) -> None:
        remote = self.unknown(node)
        if remote is None:
            return
        size = self._reader.known_size(remote.id)
        if size is not None:
            self._known += 1
        else:
            failed = self._failures.get(remote.id)
            if failed is not None:
                raise failed
            if limiter is None:
                size = await self._learn(remote)
            else:
                async with limiter:
                    size = await self._learn(remote)
            self._learned += 1
        if node.remote is remote:  # still the version the size was learned for
            node.size_hint = size

    async def _learn(self, remote: ContainerFile) -> int:
        try:
            return await self._reader.learn_size(remote.container_id, remote.id)
        except ContainerFsError as err:
            self._failed += 1
            code = errno.ENOENT if isinstance(err, NotFound) else errno.EIO
            failure = SizeUnknown(f"size of {remote.id} unknown: {err}", errno_=code)
            self._failures[remote.id] = failure
            log.warning("%s", failure)
            raise failure from err

    async def ensure_all(self, nodes: Iterable[Node]) -> None:
        """``ensure`` every node concurrently, within ``give_up_after`` seconds; a failure, or
        the end of that time, leaves a node's size unknown."""
        pending = [node for node in nodes if self.unknown(node) is not None]
        if not pending:
            return

        async def one(node: Node) -> None:
            # already logged; lookup and getattr of this node will report it
            with contextlib.suppress(SizeUnknown):
                await self._ensure(node, self._limiter)

        # a cancelled wait leaves its download running in the reader: a later stat joins it
        with trio.move_on_after(self._give_up_after):
            async with trio.open_nursery() as nursery:
                for node in pending:
                    nursery.start_soon(one, node)

    def refresh(self, node: Node) -> bool:
        """Take a size the content proved (a download ended); True if a size shown changed.

        A listed size gives way only to the content itself (a download that ended whole by
        its own framing, ``content_size``), never to a size merely announced in headers.
        """
        remote = node.remote
        if remote is None or node.spool is not None:
            return False
        if remote.bytes is None:
            fresh = self._reader.known_size(remote.id)
        else:
            fresh = self._reader.content_size(remote.id)
        shown = node.size_hint if node.size_hint is not None else remote.bytes
        if fresh is None or fresh == shown:
            return False
        node.size_hint = fresh
        if shown is None:
            return False
        self._corrected += 1
        log.info("%s: shown as %d bytes, has %d", remote.id, shown, fresh)
        return True

    def statistics(self) -> SizeStats:
        return SizeStats(
            learned=self._learned, known=self._known, failed=self._failed, corrected=self._corrected
        )
