"""Retry policy for the API client: backoff with full jitter, `retry-after` parsing, a
client-side request-rate limiter, what counts as progress and how long a call may go without
it (``ProgressPolicy``, ``Patience``). Pure policy over injected clocks; no HTTP, no FUSE.
What an ambiguous create left on the server is recognised in ``adoption.py``.
"""

from __future__ import annotations

import email.utils
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: A server's `retry-after` is honoured up to this many seconds; a longer (or nonsensical)
#: hint falls back to our own backoff rather than stalling a FUSE operation for minutes.
RETRY_AFTER_MAX = 60.0


def parse_http_date(value: str) -> float | None:
    """An HTTP date (``Date``, ``Retry-After``) as Unix seconds, or None."""
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds to wait according to `retry-after-ms` or `retry-after` (seconds or HTTP date).

    `now` is the wall-clock time (Unix seconds) that an HTTP date is measured against.
    Returns None when neither header is present or parseable, or when the hint is negative.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = -1.0
        if ms >= 0:
            return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        when = parse_http_date(raw)
        if when is None:
            return None
        seconds = max(0.0, when - now)
    return seconds if seconds >= 0 else None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n)).

    A server hint (`retry_after`) within `RETRY_AFTER_MAX` is used as is instead.
    """

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random, *, retry_after: float | None = None) -> float:
        if retry_after is not None and 0 <= retry_after <= RETRY_AFTER_MAX:
            return retry_after
        ceiling = min(self.cap, self.base * (2.0 ** min(attempt, 62)))
        return rng.uniform(0.0, ceiling)

    def next_delay(self, last: float | None) -> float:
        """Without jitter, for work that retries in the background rather than a request in
        flight: ``base`` after the first failure, then doubling up to ``cap``."""
        if last is None:
            return self.base
        return min(max(last, self.base) * 2, self.cap)


@dataclass(frozen=True)
class ProgressPolicy:
    """What counts as progress, and how long a call may go without it.

    A transfer makes progress while at least ``window * min_rate`` bytes move (up or down) in
    every ``window`` seconds: a server that sends nothing is cut after ``window`` seconds, and
    so is one that trickles (1 byte every 20 s never fills a window), while a transfer of any
    size at any rate above ``min_rate`` is never cut. A rate over a window, rather than an
    overall deadline proportional to the size, because the size is often unknown (files
    listed with ``bytes: null``) and a deadline sized for a slow link would let a stall on a
    fast one run for ever.

    ``budget``: how long one call, its retries and their delays included, may go without
    progress before it gives up, so that retries never multiply the wait.
    """

    window: float
    min_rate: float  # bytes a second
    budget: float

    @property
    def quota(self) -> int:
        """Bytes that must move in one window."""
        return max(1, int(self.window * self.min_rate))


class Patience:
    """The progress deadline of one logical call: a request with its retries, a download with
    its resumes, an upload with the listing that looks for what a lost attempt left. Used by
    one task at a time.

    Time runs in periods. A period that moves a quota of bytes was productive: a new period
    starts, and the budget is renewed when the bytes were new (an answer's, or a request's
    beyond what an earlier attempt already sent: a resent upload keeps its attempt alive but
    is no progress of the call). A period that ends otherwise (an attempt cut, an answer
    arriving, a delay before a retry) was spent waiting: it counts against the budget.
    """

    def __init__(self, policy: ProgressPolicy, *, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._period = clock()  # the start of the current period
        self._moved = 0  # bytes moved in the current period
        self._waited = 0.0  # time spent without progress in earlier periods
        self._sent = 0  # request bytes the attempt in flight has sent
        self._sent_before = 0  # the most an earlier attempt sent

    def begin(self, *, attempt: bool = False) -> None:
        """A new period: an ``attempt`` starts, its request was sent, or its answer came."""
        now = self._clock()
        self._waited += now - self._period
        self._period, self._moved = now, 0
        if attempt:
            self._sent_before = max(self._sent_before, self._sent)
            self._sent = 0

    def sent(self, n: int) -> None:
        self._sent += n
        self._count(n, new=self._sent > self._sent_before)

    def received(self, n: int) -> None:
        self._count(n, new=True)

    def _count(self, n: int, *, new: bool) -> None:
        self._moved += n
        if self._moved >= self.policy.quota:
            self._period, self._moved = self._clock(), 0
            if new:
                self._waited = 0.0

    @contextmanager
    def held(self) -> Iterator[None]:
        """The caller holds the transfer (a chunk waits for the disk): that time is neither
        the server's nor a wait, and the current period is moved on by it."""
        start = self._clock()
        try:
            yield
        finally:
            self._period += self._clock() - start

    def time_left(self) -> float:
        """Seconds the attempt in flight may wait for its next quota of bytes."""
        allowed = min(self.policy.window, self.policy.budget - self._waited)
        return allowed - (self._clock() - self._period)

    def remaining(self) -> float:
        """Seconds left of the budget (<= 0: the call gives up)."""
        return self.policy.budget - self._waited - (self._clock() - self._period)


@dataclass(frozen=True)
class LimiterStats:
    acquired: int
    waits: int
    waited_seconds: float


class RateLimiter:
    """A token bucket of `per_minute` requests with a burst of `burst` (GCRA form).

    Each `acquire()` reserves the next free slot synchronously and then sleeps until it, so
    concurrent callers are served in call order without a lock, and a fake `clock`/`sleep`
    pair gives exact, deterministic delays in tests.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self._interval = 60.0 / per_minute
        # default burst: a tenth of a minute's allowance (10 for the service's 100/min)
        self._burst = max(1.0, burst if burst is not None else per_minute / 10.0)
        self._tolerance = (self._burst - 1.0) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._tat: float | None = None  # theoretical arrival time of the next request
        self._acquired = 0
        self._waits = 0
        self._waited = 0.0

    async def acquire(self) -> None:
        now = self._clock()
        tat = now if self._tat is None else max(self._tat, now)
        wait = tat - self._tolerance - now
        self._tat = tat + self._interval
        self._acquired += 1
        if wait > 0:
            self._waits += 1
            self._waited += wait
            log.debug("rate limit: waiting %.3f s", wait)
            await self._sleep(wait)

    def idle(self) -> bool:
        """Whether a request now would be sent at once (no wait): optional work, such as a
        prefetch, takes only the allowance nobody else is using."""
        return self._tat is None or self._tat - self._tolerance <= self._clock()

    def statistics(self) -> LimiterStats:
        return LimiterStats(self._acquired, self._waits, self._waited)
