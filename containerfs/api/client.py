"""API client: ``ApiClient``, the endpoints of the Containers API, under trio.

The lowest containerfs layer. It owns pagination (``checks.paginate``, one helper for every
listing), retries with the one backoff policy (``retrying.py``, in ``calls.Caller``), and the
duplicate rules for creates whose answer was lost (``adoption.py``); every answer is checked
before it is believed (``models`` ``from_json`` and ``checks``: ids, list answers, sizes).
The calls that carry a file's bytes are carried out in ``content.py``. Requests go through
``Transport`` (transport.py), the only code that touches httpx and where every failure
becomes a typed error of ``containerfs.errors``. Knows nothing about FUSE, inodes or caches.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, aclosing
from types import MappingProxyType
from typing import Any

import trio

from containerfs.api import checks
from containerfs.api.adoption import Adopter
from containerfs.api.calls import Caller
from containerfs.api.content import ContentCalls
from containerfs.api.progress import Transfers
from containerfs.api.retrying import Backoff, Patience
from containerfs.api.transport import (
    Download,
    HttpTransport,
    Transport,
    json_body,
)
from containerfs.config import ApiConfig
from containerfs.models import (
    ApiFile,
    Container,
    ContainerFile,
    ContainerId,
    FileId,
    NetworkPolicy,
    Page,
)
from containerfs.snapshots import ClientStats, TransferStats

__all__ = ["ApiClient", "ApiConfig", "ClientStats", "Download"]


class ApiClient:
    """The Containers API, under trio, over one ``Transport``.

    Every call is retried (backoff with full jitter, or the server's ``retry-after-ms`` /
    ``retry-after``) on 408/409/429/5xx answers and on connection failures and timeouts, up
    to ``max_retries``, and never past its ``Patience``: a call (a download with its resumes,
    an upload with its recovery) that goes two io-timeouts without progress gives up, its
    retries and their delays included; a transfer that makes progress is never cut.
    Creates (``create_container``, ``upload_file``) are not idempotent: they are sent again
    freely when the server said it did not process them (429, 409) or nothing was sent
    (connect failure), but after an *ambiguous* failure — a timeout or broken connection once
    the request was sent, or a 408/5xx answer, which a server or gateway can give after the
    work was done — the client first looks for what the attempt created and
    adopts it (see ``upload_file``). A ``DELETE`` whose retry after an ambiguous failure
    answers 404 counts as done.
    """

    def __init__(
        self,
        config: ApiConfig,
        *,
        transport: HttpTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = trio.sleep,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
        wallclock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._wallclock = wallclock or time.time
        self._transport = Transport(
            config, transport=transport, sleep=sleep, clock=clock, wallclock=self._wallclock
        )
        self._calls = Caller(
            self._transport,
            max_retries=config.max_retries,
            backoff=Backoff(config.backoff_base, config.backoff_max),
            sleep=sleep,
            rng=rng or random.Random(),
            patience=self.patience,
        )
        self._adopter = Adopter(skew=lambda: self._transport.skew, wallclock=self._wallclock)
        self._transfers = Transfers(clock=clock)
        self._content = ContentCalls(
            self._transport,
            self._calls,
            transfers=self._transfers,
            adopter=self._adopter,
            patience=self.patience,
            list_files=self.list_files,
        )

    def __repr__(self) -> str:
        return f"<ApiClient {self.config.base_url}>"

    async def aclose(self) -> None:
        await self._transport.aclose()

    def abort(self) -> None:
        """The mount is ending: cancel every request in flight (they fail with
        ``ApiAborted``, EIO) and refuse new ones."""
        self._transport.abort()

    @property
    def aborted(self) -> bool:
        return self._transport.aborted

    def patience(self) -> Patience:
        """A fresh progress deadline for one logical call (see ``ProgressPolicy``); pass it to
        the calls that make it up (a download's resumes) so that they share one budget."""
        return Patience(self.config.progress, clock=self._clock)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def has_spare_requests(self) -> bool:
        """Whether a request now would not wait for the rate limit (always, without one)."""
        return self._transport.limiter_idle()

    def statistics(self) -> ClientStats:
        waits, waited = self._transport.rate_limit_waits
        return ClientStats(
            requests=MappingProxyType(dict(self._transport.requests)),
            bytes_up=self._transport.bytes_up,
            bytes_down=self._transport.bytes_down,
            retries=self._calls.retries,
            errors=MappingProxyType(dict(self._calls.errors)),
            adopted=self._calls.adopted,
            rate_limit_waits=waits,
            rate_limit_wait_seconds=waited,
        )

    def transfers(self) -> tuple[TransferStats, ...]:
        """The uploads and downloads in flight, with their progress, oldest first."""
        return self._transfers.snapshot()

    # -- containers ---------------------------------------------------------------------

    async def list_containers(
        self, *, name: str | None = None, order: str = "asc", patience: Patience | None = None
    ) -> AsyncGenerator[Container, None]:
        """Every container (optionally only those named ``name``), following ``after``. Each
        page is a call of its own, unless they share the caller's ``patience``.

        A caller that stops early should close the generator (``contextlib.aclosing``).
        """

        async def page(after: str | None) -> Page[Container]:
            return await self.list_containers_page(
                after=after, order=order, name=name, patience=patience
            )

        async with aclosing(checks.paginate(page, max_pages=self.config.max_pages)) as items:
            async for item in items:
                yield item

    async def list_containers_page(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        order: str = "asc",
        name: str | None = None,
        patience: Patience | None = None,
    ) -> Page[Container]:
        params = _params(limit=limit, after=after, order=order, name=name)
        page = await self._calls.call(
            "list_containers",
            lambda: self._transport.request("GET", "containers", params=params),
            lambda r: Page.from_json(json_body(r), Container.from_json),
            patience=patience,
        )
        self._calls.reject("list_containers", page.rejected)
        self._adopter.note(*(c.id for c in page.data))
        return page

    async def create_container(
        self,
        name: str,
        *,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        network_policy: NetworkPolicy | None = None,
        file_ids: Sequence[str] = (),
        skills: Sequence[str] = (),
    ) -> Container:
        """Create a container, with Files-API files copied in (``file_ids``) and skills
        referenced by id. After an ambiguous failure, a container named ``name`` created
        since the call started (server clock, ``ADOPT_MARGIN`` slack) that this client had not
        seen before and has not returned for another create is adopted instead of re-sent.
        """
        body: dict[str, Any] = {"name": name}
        if expires_after_minutes is not None:
            body["expires_after"] = {"anchor": "last_active_at", "minutes": expires_after_minutes}
        if memory_limit is not None:
            body["memory_limit"] = memory_limit
        if network_policy is not None:
            body["network_policy"] = network_policy.to_json()
        if file_ids:
            body["file_ids"] = list(file_ids)
        if skills:
            body["skills"] = [{"type": "skill_reference", "skill_id": s} for s in skills]
        attempt = self._adopter.begin()
        patience = self.patience()  # the recovery's listing included

        async def recover() -> Container | None:
            listing = self.list_containers(name=name, patience=patience)
            return await self._adopter.container(listing, name, attempt)

        container = await self._calls.call(
            "create_container",
            lambda: self._transport.request("POST", "containers", json=body),
            lambda r: Container.from_json(json_body(r)),
            idempotent=False,
            recover=recover,
            patience=patience,
        )
        self._adopter.claim(container.id)
        return container

    async def retrieve_container(self, container_id: ContainerId) -> Container:
        data = await self._calls.json(
            "retrieve_container", "GET", checks.url("containers", container_id)
        )
        container = checks.parsed("retrieve_container", lambda: Container.from_json(data))
        self._adopter.note(container.id)
        return container

    async def delete_container(self, container_id: ContainerId) -> None:
        await self._calls.json(
            "delete_container", "DELETE", checks.url("containers", container_id), gone_ok=True
        )

    # -- files --------------------------------------------------------------------------

    async def list_files(
        self, container_id: ContainerId, *, order: str = "asc", patience: Patience | None = None
    ) -> AsyncGenerator[ContainerFile, None]:
        """Every file of a container, following ``after``. Each page is a call of its own
        (a page is smaller than a window's quota: pages are not progress of one another),
        unless they share the caller's ``patience``.

        A caller that stops early should close the generator (``contextlib.aclosing``).
        """

        async def page(after: str | None) -> Page[ContainerFile]:
            return await self.list_files_page(
                container_id, after=after, order=order, patience=patience
            )

        async with aclosing(checks.paginate(page, max_pages=self.config.max_pages)) as items:
            async for item in items:
                yield item

    async def list_files_page(
        self,
        container_id: ContainerId,
        *,
        limit: int = 100,
        after: str | None = None,
        order: str = "asc",
        patience: Patience | None = None,
    ) -> Page[ContainerFile]:
        url = checks.url("containers", container_id, "files")
        params = _params(limit=limit, after=after, order=order)

        def item(data: Mapping[str, Any]) -> ContainerFile:
            return checks.in_container(ContainerFile.from_json(data), container_id)

        page = await self._calls.call(
            "list_files",
            lambda: self._transport.request("GET", url, params=params),
            lambda r: Page.from_json(json_body(r), item),
            patience=patience,
        )
        self._calls.reject("list_files", page.rejected)
        self._adopter.note(*(f.id for f in page.data))
        return page

    async def holds_files(self, container_id: ContainerId) -> bool:
        """Whether a fresh answer shows any file in the container: the check made right
        before deleting it. An item set aside as bad counts as a file (the server holds
        something there); a malformed answer raises ``MalformedAnswer``, never "empty"."""
        page = await self.list_files_page(container_id, limit=1)
        return bool(page.data or page.rejected or page.has_more)

    async def upload_file(
        self, container_id: ContainerId, source: str | os.PathLike[str], *, filename: str
    ) -> ContainerFile:
        """Upload the file at ``source`` as multipart ``file`` named ``filename`` (a path
        relative to the container root), streamed from disk. The returned ``path`` says where
        the server stored it.

        No duplicate after an ambiguous failure (a timeout, the connection broken after the
        request was sent, or a 408/5xx answer): before sending again, the container's files
        are listed and a file that the lost attempt made is adopted (``Adopter.upload``).
        """
        return await self._content.upload_file(container_id, source, filename=filename)

    async def upload_stream(
        self,
        container_id: ContainerId,
        body: Callable[[], AsyncIterable[bytes]],
        *,
        filename: str,
        size: Callable[[], int | None],
    ) -> ContainerFile:
        """Upload the bytes ``body()`` yields as multipart ``file`` named ``filename``, sent
        while they are still being produced (chunked; no size needed up front).

        Every attempt calls ``body()`` afresh, so a retry sends the content from its start.
        ``size()`` is the content's size once the body has ended (None before): an
        ambiguous failure adopts a file the lost attempt created as ``upload_file`` does. An
        exception raised by the body (``StreamAborted``) breaks the request off and is raised
        as is: a body that never ended creates nothing on the server.
        """
        return await self._content.upload_stream(container_id, body, filename=filename, size=size)

    async def find_upload(
        self, container_id: ContainerId, filename: str, *, size: int, since: float, old: str | None
    ) -> ContainerFile | None:
        """The file an upload of ``size`` bytes named ``filename``, begun at wall-clock time
        ``since``, may have created though its answer never came (the daemon was killed):
        the rules of an ambiguous ``upload_file``, ``old`` (the file it replaces) excluded."""
        return await self._content.find_upload(
            container_id, filename, size=size, since=since, old=old
        )

    async def create_file_from_id(self, container_id: ContainerId, file_id: str) -> ContainerFile:
        """Copy the Files-API file ``file_id`` into the container: one call, no bytes sent.
        The answer's ``path`` says where the server put it (its choice, from the filename)."""
        url = checks.url("containers", container_id, "files")
        # not idempotent and nothing to recognise the copy by: no resend after an ambiguous failure
        body = {"file_id": file_id}
        data = await self._calls.json("upload_file", "POST", url, json=body, idempotent=False)
        created = checks.parsed(
            "upload_file", lambda: checks.in_container(ContainerFile.from_json(data), container_id)
        )
        self._adopter.claim(created.id)
        return created

    async def retrieve_api_file(self, file_id: str) -> ApiFile:
        """A Files-API file's metadata (``GET /files/{id}``): its ``filename`` and size."""
        data = await self._calls.json("retrieve_api_file", "GET", checks.url("files", file_id))
        return checks.parsed("retrieve_api_file", lambda: ApiFile.from_json(data))

    async def retrieve_file(self, container_id: ContainerId, file_id: FileId) -> ContainerFile:
        url = checks.url("containers", container_id, "files", file_id)
        data = await self._calls.json("retrieve_file", "GET", url)
        found = checks.parsed(
            "retrieve_file",
            lambda: checks.in_container(ContainerFile.from_json(data), container_id),
        )
        self._adopter.note(found.id)
        return found

    async def delete_file(self, container_id: ContainerId, file_id: FileId) -> None:
        url = checks.url("containers", container_id, "files", file_id)
        await self._calls.json("delete_file", "DELETE", url, gone_ok=True)

    def download(
        self,
        container_id: ContainerId,
        file_id: FileId,
        *,
        offset: int = 0,
        end: int | None = None,
        patience: Patience | None = None,
    ) -> AbstractAsyncContextManager[Download]:
        """``async with client.download(c, f, offset=n) as dl: async for b in dl.chunks()``.

        With ``offset`` > 0 a ``Range: bytes=offset-`` is sent (``bytes=offset-(end-1)`` with
        ``end``, even from 0); ``dl.start`` and ``dl.end`` say whether the server honoured it
        (206) or sent the whole file (200, ``start == 0``, ``end`` its length). The body's
        reads wait at most what ``patience`` allows (a fresh one if None).
        """
        return self._content.download(
            container_id, file_id, offset=offset, end=end, patience=patience or self.patience()
        )


def _params(**values: str | int | None) -> dict[str, str | int]:
    return {k: v for k, v in values.items() if v is not None}
