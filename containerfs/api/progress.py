"""Transfers in flight: the uploads and downloads the API client is carrying out, with their
progress counted as the bytes move and a recent rate.

An upload's progress is counted as its request body reads the file (``ProgressFile``: httpx
reads the next 64 KiB only once the previous chunk went to the socket, so the count follows
what the server consumes, not what was queued); a download's as its chunks arrive. The
client registers each transfer for as long as it runs (``Transfers.track``) and
``Transfers.snapshot`` gives frozen ``TransferStats`` for the status. Plain data and one file
wrapper; no httpx. Layer: API client.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from containerfs.models import ContainerId
from containerfs.snapshots import TransferStats

#: The rate is the bytes moved over about the last this many seconds.
RATE_WINDOW = 5.0
# progress samples at most this often: a sample per 64 KiB read would cost more than it tells
_SAMPLE_EVERY = 0.25


class Transfer:
    """The progress of one upload or download, moved by whoever carries it out."""

    def __init__(
        self,
        direction: str,
        container_id: ContainerId,
        name: str,
        *,
        total: int | None,
        done: int,
        clock: Callable[[], float],
    ) -> None:
        self.direction = direction
        self.container_id = container_id
        self.name = name
        self.total = total
        self.done = done
        self._clock = clock
        self._total_of: Callable[[], int | None] | None = None
        self._started = clock()
        # (time, done) at most every _SAMPLE_EVERY: enough of them to span the rate window
        self._samples: deque[tuple[float, int]] = deque(
            [(self._started, done)], maxlen=int(RATE_WINDOW / _SAMPLE_EVERY) + 2
        )

    def add(self, n: int) -> None:
        """``n`` more bytes moved."""
        self.done += n
        now = self._clock()
        if now - self._samples[-1][0] >= _SAMPLE_EVERY:
            self._samples.append((now, self.done))

    def total_from(self, source: Callable[[], int | None]) -> None:
        """The total is learnt later (a body sent while it is written): ask ``source``."""
        self._total_of = source

    def restart(self, done: int) -> None:
        """A new attempt: the bytes move again from ``done`` (the rate starts afresh)."""
        self.done = done
        self._samples.clear()
        self._samples.append((self._clock(), done))

    def rate(self, now: float) -> float:
        """Bytes per second since the last sample at least RATE_WINDOW old (or the oldest):
        a transfer that stalls shows its rate falling to 0 within the window."""
        since = now - RATE_WINDOW
        when, done = self._samples[0]
        for sample in reversed(self._samples):
            if sample[0] <= since:
                when, done = sample
                break
        return (self.done - done) / (now - when) if now > when else 0.0

    def stats(self) -> TransferStats:
        now = self._clock()
        return TransferStats(
            direction=self.direction,
            container_id=str(self.container_id),
            name=self.name,
            done=self.done,
            total=self.total if self._total_of is None else self._total_of(),
            rate=self.rate(now),
            elapsed=now - self._started,
        )


class Transfers:
    """The transfers in flight, oldest first."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._live: dict[Transfer, None] = {}  # insertion-ordered set

    @contextmanager
    def track(
        self,
        direction: str,
        container_id: ContainerId,
        name: str,
        *,
        total: int | None = None,
        done: int = 0,
    ) -> Iterator[Transfer]:
        """A transfer shown in the snapshots while the ``with`` block runs."""
        transfer = Transfer(
            direction, container_id, name, total=total, done=done, clock=self._clock
        )
        self._live[transfer] = None
        try:
            yield transfer
        finally:
            del self._live[transfer]

    def snapshot(self) -> tuple[TransferStats, ...]:
        return tuple(t.stats() for t in self._live)


class ProgressFile(io.FileIO):
    """A file opened for reading whose reads move ``transfer``: an upload's request body.

    A seek (httpx seeks back to 0 before each attempt's body) restarts the count there.
    """

    def __init__(self, path: str | os.PathLike[str], transfer: Transfer) -> None:
        super().__init__(path, "rb")
        self._transfer = transfer

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        if data:
            self._transfer.add(len(data))
        return data

    def seek(self, pos: int, whence: int = os.SEEK_SET, /) -> int:
        where = super().seek(pos, whence)
        self._transfer.restart(where)
        return where
