"""The containers as the mount shows them: one cached, paginated container listing, the
directory name of each, containers looked up by id, and the ones seen expired (``ns``, the
namespace layer; ``Namespace`` is the facade the layers above call).

A container created here is shown at once, without listing again: it joins the cached listing,
or, when a listing is being fetched at that moment, is added to its result.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cachetools import TTLCache

from containerfs import paths as names
from containerfs.aio import FetchGate
from containerfs.errors import ContainerFsError, NotFound
from containerfs.models import Container, ContainerId, NetworkPolicy


class ContainerSource(Protocol):
    def list_containers(self) -> Any: ...  # AsyncIterator[Container]
    def list_files(self, container_id: ContainerId) -> Any: ...  # AsyncIterator[ContainerFile]
    async def retrieve_container(self, container_id: ContainerId) -> Container: ...
    async def create_container(
        self,
        name: str,
        *,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        network_policy: NetworkPolicy | None = None,
        file_ids: Sequence[str] = (),
        skills: Sequence[str] = (),
    ) -> Container: ...
    async def delete_container(self, container_id: ContainerId) -> None: ...
    async def holds_files(self, container_id: ContainerId) -> bool: ...


class Containers:
    """Directory name -> container, by the naming rules of ``paths``, cached for ``ttl``."""

    def __init__(
        self,
        client: ContainerSource,
        *,
        ttl: float,
        show_expired: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._show_expired = show_expired
        self._cached: TTLCache[str, dict[str, Container]] = TTLCache(1, ttl, timer=clock)
        self._by_id: TTLCache[ContainerId, Container | None] = TTLCache(1024, ttl, timer=clock)
        # the containers last seen expired, kept past the TTL: asked for every stat
        self._expired: set[ContainerId] = set()
        # the directory each container showed as at its last listing (kept past the TTL)
        self._dir_names: dict[ContainerId, str] = {}
        # one listing call at a time per key; a failed one fails its waiters too
        self._fetching = FetchGate()
        # containers created here while the container listing is fetched (kept in it)
        self._created_meanwhile: dict[ContainerId, Container] | None = None
        self._listed: list[Container] = []  # the containers of the cached listing, expired too
        self.listings = 0  # container listing calls made

    async def by_name(self) -> dict[str, Container]:
        """Directory name -> container, from one cached, paginated listing."""
        async with self._fetching("containers"):
            cached = self._cached.get("all")
            if cached is not None:
                return cached
            # containers created here while the listing is fetched may be missing from it
            self._created_meanwhile = {}
            try:
                listed = [c async for c in self._client.list_containers()]
            finally:
                made, self._created_meanwhile = self._created_meanwhile, None
            listed += [c for c in made.values() if c.id not in {x.id for x in listed}]
            self.listings += 1
            self._listed = listed
            named = self._named(listed)
            self._cached["all"] = named
            self._dir_names = {c.id: name for name, c in named.items()}
            for c in listed:
                self.saw(c.id, c)
            return named

    def saw(self, cid: ContainerId, c: Container | None) -> None:
        """What the server says container ``cid`` is now (None: there is none)."""
        self._by_id[cid] = c
        if c is not None and c.expired:
            self._expired.add(cid)
        else:
            self._expired.discard(cid)

    def is_expired(self, cid: ContainerId | None) -> bool:
        return cid in self._expired

    def invalidate(self) -> None:
        self._cached.pop("all", None)

    def changed(self, cid: ContainerId) -> None:
        """The server says the container changed: ask again before trusting it or its name."""
        self._by_id.pop(cid, None)
        self.invalidate()

    def _named(self, listed: list[Container]) -> dict[str, Container]:
        # named among all listed: a container's name does not change as others expire
        return {
            name: c
            for name, c in names.container_dir_names(listed).items()
            if self._show_expired or not c.expired
        }

    def learn(self, c: Container) -> None:
        """Show a container created here without listing again: the cached listing, if any,
        gains it (names recomputed by the usual rules; its expiry time is kept)."""
        self.saw(c.id, c)
        if self._created_meanwhile is not None:
            self._created_meanwhile[c.id] = c
        cached = self._cached.get("all")
        if cached is not None:
            self._listed = [*self._listed, c]
            renamed = self._named(self._listed)
            cached.clear()  # in place: the cached listing keeps its expiry time
            cached.update(renamed)
            self._dir_names = {c.id: name for name, c in renamed.items()}

    async def dir_name(self, cid: ContainerId) -> str:
        """The directory name a container is shown under (its id if it is not listed)."""
        for name, c in (await self.by_name()).items():
            if c.id == cid:
                return name
        return cid

    def last_dir_name(self, cid: ContainerId) -> str:
        """The directory the container showed as at its last listing, else its id (cached
        answers only)."""
        return self._dir_names.get(cid, str(cid))

    async def get(self, cid: ContainerId) -> Container | None:
        """A container by id, listed or not (a ``cntr_…`` name always resolves)."""
        if cid in self._by_id:
            return self._by_id[cid]
        async with self._fetching(("container", cid)):
            if cid in self._by_id:
                return self._by_id[cid]
            try:
                found: Container | None = await self._client.retrieve_container(cid)
            except NotFound:
                found = None
            self.saw(cid, found)
            return found

    async def named(self, name: str) -> Container | None:
        """The container shown as directory ``name``: by its listed name, or by its id (no
        directory is named like another container's id: an id always resolves to its own
        container, listed or not)."""
        c = (await self.by_name()).get(name)
        if c is None and names.looks_like_container_id(name):
            c = await self.get(ContainerId(name))
            if c is not None and c.expired and not self._show_expired:
                c = None
        return c

    async def delete(self, cid: ContainerId) -> None:
        """Delete an empty container; ENOTEMPTY while the server shows it holding files."""
        # deleting a container deletes its files: only on a fresh, well-formed answer that
        # shows none (a file the listing skipped as malformed still counts)
        if await self._client.holds_files(cid):
            raise ContainerFsError.with_errno(errno.ENOTEMPTY, f"{cid} still holds files")
        with contextlib.suppress(NotFound):
            await self._client.delete_container(cid)
        self.saw(cid, None)
        self.invalidate()
