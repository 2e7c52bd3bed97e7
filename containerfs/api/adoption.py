"""The duplicate rule: what a create whose answer was lost may have left on the server, and
whether this client may adopt it rather than create it again (``api``, the lowest layer,
used by ``ApiClient`` only). Pure rules over the listings the client hands in and an
injected clock; no HTTP, no FUSE.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from containerfs.models import Container, ContainerFile
from containerfs.paths import upload_path_matches

#: Slack (seconds) when comparing a listed object's ``created_at`` with the start of an
#: ambiguous create: ``created_at`` and the ``Date`` header have one-second resolution.
ADOPT_MARGIN = 5.0
T = TypeVar("T")


class Sightings:
    """Ids this client has seen in answers (listings, retrieves, creates), stamped with a
    counter that only grows, and the ids already returned by a create: what an ambiguous
    create must not adopt. ``mark()`` before a create; ``adoptable(id, mark)`` after it.

    A listing of 100,000 files is 100,000 ids: they are kept in plain dicts (no second
    linked list per entry), the ids of one answer share one stamp, and past ``capacity``
    the older half is dropped at once (forgetting an id only makes it less adoptable).
    """

    def __init__(self, *, capacity: int = 200_000) -> None:
        self._first_seen: dict[str, int] = {}
        self._claimed: dict[str, None] = {}
        self._capacity = capacity
        self._tick = 0

    def mark(self) -> int:
        self._tick += 1
        return self._tick

    def note(self, *idents: str) -> None:
        """Ids seen together in one answer: one stamp for all of them."""
        tick = self.mark()
        first_seen = self._first_seen
        for ident in idents:
            first_seen.setdefault(ident, tick)
        self._first_seen = _bounded(first_seen, self._capacity)

    def claim(self, ident: str) -> None:
        self.note(ident)
        self._claimed[ident] = None
        self._claimed = _bounded(self._claimed, self._capacity)

    def adoptable(self, ident: str, mark: int) -> bool:
        """Not claimed, and first seen (if ever) after ``mark`` was taken."""
        seen = self._first_seen.get(ident)
        return ident not in self._claimed and (seen is None or seen > mark)


def _bounded(entries: dict[str, T], capacity: int) -> dict[str, T]:
    """``entries``, or its newer half once it holds more than ``capacity`` (a dict keeps
    insertion order; rebuilding once per half is cheaper than evicting one at a time)."""
    if len(entries) <= capacity:
        return entries
    keep = len(entries) - capacity // 2
    return dict(itertools.islice(entries.items(), keep, None))


@dataclass(frozen=True)
class Attempt:
    """When a create began: the ``Sightings`` mark taken just before it, and our wall-clock
    time (Unix seconds)."""

    mark: int
    wall: float


class Adopter:
    """Recognises what a lost create made, from a listing fetched after it: an object this
    client had not seen before the create began, has not returned for another create, and
    that was created since (server clock, ``ADOPT_MARGIN`` slack)."""

    def __init__(self, *, skew: Callable[[], float], wallclock: Callable[[], float]) -> None:
        self._sightings = Sightings()
        self._skew = skew  # server clock minus ours, from the latest ``Date`` header
        self._wallclock = wallclock

    def begin(self) -> Attempt:
        """Taken before a create is sent."""
        return Attempt(self._sightings.mark(), self._wallclock())

    def note(self, *idents: str) -> None:
        """Ids seen in an answer (a listing, a retrieve)."""
        self._sightings.note(*idents)

    def claim(self, ident: str) -> None:
        """An id returned by a create: never adopted for another one."""
        self._sightings.claim(ident)

    def created_since(self, created_at: int, wall: float) -> bool:
        """Whether a ``created_at`` (server clock) is no earlier than our wall-clock time
        ``wall``, within ``ADOPT_MARGIN``. The skew comes from the latest ``Date`` header,
        which the recovery listing itself has just refreshed.
        """
        return created_at >= wall + self._skew() - ADOPT_MARGIN

    async def container(
        self, listing: AsyncGenerator[Container, None], name: str, attempt: Attempt
    ) -> Container | None:
        """The container named ``name`` that a lost create made, from ``listing``."""
        async with aclosing(listing) as containers:
            async for c in containers:
                if (
                    c.name == name
                    and self.created_since(c.created_at, attempt.wall)
                    and self._sightings.adoptable(c.id, attempt.mark)
                ):
                    return c
        return None

    async def upload(
        self,
        listing: AsyncGenerator[ContainerFile, None],
        filename: str,
        *,
        size: int,
        attempt: Attempt,
        old: str | None = None,
    ) -> ContainerFile | None:
        """The file a lost upload attempt made, from ``listing``: one for which all of these
        hold.

        - its ``path`` is one the server gives such an upload (``upload_path_matches``:
          ``/mnt/data/<filename>``, or ``<32 hex>-<basename>`` in the root or the directory);
        - its ``bytes`` equal the size sent (or are null);
        - its ``created_at`` is no earlier than the upload's start on the server's clock
          (estimated from the ``Date`` header) minus ``ADOPT_MARGIN`` seconds;
        - this client had not seen its id before the upload started (in any listing,
          retrieve or create answer), and has not returned it from another create — so a
          file being replaced by an identical upload is never mistaken for the new one;
        - it is not ``old`` (the file the upload replaces).

        The first such file in ``created_at`` order wins; if none, the upload is sent again.
        Limits: two concurrent uploads of the same name and size into one container can
        cross-adopt, and a listing that lags behind the create would miss the file.
        """
        async with aclosing(listing) as files:
            async for f in files:
                if (
                    f.id != old
                    and upload_path_matches(f.path, filename)
                    and f.bytes in (size, None)
                    and self.created_since(f.created_at, attempt.wall)
                    and self._sightings.adoptable(f.id, attempt.mark)
                ):
                    return f
        return None
