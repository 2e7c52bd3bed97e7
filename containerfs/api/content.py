"""The calls that carry a file's bytes (``api``, the lowest layer, used by ``ApiClient``
only): an upload streamed from disk, an upload streamed while its body is still being
produced, the file a lost upload may have made, and a download of a file's content from an
offset. Each is shown as a transfer while it runs; after an ambiguous upload failure the
container is listed and what the lost attempt created is adopted rather than uploaded twice
(``adoption.py``). Knows nothing about httpx, FUSE, inodes or caches.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

from containerfs.api import checks
from containerfs.api.adoption import Adopter, Attempt
from containerfs.api.calls import Caller
from containerfs.api.progress import ProgressFile, Transfer, Transfers
from containerfs.api.retrying import Patience
from containerfs.api.transport import Download, Request, Response, Transport, json_body
from containerfs.models import ContainerFile, ContainerId, FileId

log = logging.getLogger("containerfs.api.client")  # the client's log, as before the split


class FileLister(Protocol):
    """``ApiClient.list_files``: every file of a container, page after page."""

    def __call__(
        self, container_id: ContainerId, *, patience: Patience | None = None
    ) -> AsyncGenerator[ContainerFile, None]: ...


class ContentCalls:
    """The content calls of one client, over its transport, retrying caller, transfers and
    adopter; ``list_files`` is the client's own listing (a recovery lists the container)."""

    def __init__(
        self,
        transport: Transport,
        calls: Caller,
        *,
        transfers: Transfers,
        adopter: Adopter,
        patience: Callable[[], Patience],
        list_files: FileLister,
    ) -> None:
        self._transport = transport
        self._calls = calls
        self._transfers = transfers
        self._adopter = adopter
        self._patience = patience
        self._list_files = list_files

    async def upload_file(
        self, container_id: ContainerId, source: str | os.PathLike[str], *, filename: str
    ) -> ContainerFile:
        """``ApiClient.upload_file``: the file at ``source``, streamed from disk."""
        url = checks.url("containers", container_id, "files")
        attempt_of, patience = self._adopter.begin(), self._patience()  # recovery included
        began = time.monotonic()
        with (
            self._transfers.track("upload", container_id, filename) as transfer,
            ProgressFile(source, transfer) as fh,
        ):
            size = transfer.total = os.fstat(fh.fileno()).st_size

            async def recover() -> ContainerFile | None:
                listing = self._list_files(container_id, patience=patience)
                return await self._adopter.upload(listing, filename, size=size, attempt=attempt_of)

            def attempt() -> Request:
                transfer.restart(0)  # each attempt sends the whole body again
                return self._transport.request("POST", url, files={"file": (filename, fh)})

            # httpx streams the file object (64 KiB reads; Content-Length from fstat) and
            # seeks it back to 0 for every attempt; its reads are the upload's progress
            created = await self._calls.call(
                "upload_file",
                attempt,
                self._created_in(container_id),
                idempotent=False,
                recover=recover,
                patience=patience,
            )
        self._adopter.claim(created.id)
        self._log("uploaded", filename, size, began, created)
        return created

    async def upload_stream(
        self,
        container_id: ContainerId,
        body: Callable[[], AsyncIterable[bytes]],
        *,
        filename: str,
        size: Callable[[], int | None],
    ) -> ContainerFile:
        """``ApiClient.upload_stream``: the bytes ``body()`` yields, sent as they come."""
        url = checks.url("containers", container_id, "files")
        began = time.monotonic()
        with self._transfers.track("upload", container_id, filename) as transfer:
            transfer.total_from(size)  # known once the body ends (the file is closed)
            created = await self._send_stream(url, container_id, body, filename, size, transfer)
        self._adopter.claim(created.id)
        self._log("streamed", filename, size(), began, created)
        return created

    async def _send_stream(
        self,
        url: str,
        container_id: ContainerId,
        body: Callable[[], AsyncIterable[bytes]],
        filename: str,
        size: Callable[[], int | None],
        transfer: Transfer,
    ) -> ContainerFile:
        attempt_of = self._adopter.begin()

        async def recover() -> ContainerFile | None:
            sent = size()
            if sent is None:  # the body never ended: the server cannot have stored it
                return None
            listing = self._list_files(container_id)
            return await self._adopter.upload(listing, filename, size=sent, attempt=attempt_of)

        def attempt() -> Request:
            source = body()  # raises StreamAborted for a second attempt: nothing is sent
            transfer.restart(0)
            return self._transport.multipart_request(
                "POST", url, field="file", filename=filename, body=_counted(source, transfer.add)
            )

        return await self._calls.call(
            "upload_file",
            attempt,
            self._created_in(container_id),
            idempotent=False,
            recover=recover,
        )

    async def find_upload(
        self, container_id: ContainerId, filename: str, *, size: int, since: float, old: str | None
    ) -> ContainerFile | None:
        """``ApiClient.find_upload``: what an upload begun at ``since`` made, if anything."""
        # seen in listings since, surely; only never returned by a create of ours (mark 0)
        listing = self._list_files(container_id)
        found = await self._adopter.upload(
            listing, filename, size=size, attempt=Attempt(0, since), old=old
        )
        if found is not None:
            self._adopter.claim(found.id)
        return found

    @asynccontextmanager
    async def download(
        self,
        container_id: ContainerId,
        file_id: FileId,
        *,
        offset: int,
        end: int | None,
        patience: Patience,
    ) -> AsyncIterator[Download]:
        """``ApiClient.download``: the content of a file from ``offset`` (to ``end``)."""
        url = checks.url("containers", container_id, "files", file_id, "content")
        # identity: aiter_raw() must yield the file's bytes, not a compressed encoding
        headers = {"Accept-Encoding": "identity", "Accept": "*/*"}
        if end is not None and end > offset:
            headers["Range"] = f"bytes={offset}-{end - 1}"
        elif offset > 0:
            headers["Range"] = f"bytes={offset}-"
        # shown from the request on: a server slow to answer is what a user wants to see
        with self._transfers.track("download", container_id, file_id, done=offset) as transfer:
            response = await self._calls.call(
                "file_content",
                lambda: self._transport.request("GET", url, headers=headers),
                lambda r: r,
                stream=True,
                patience=patience,
            )
            try:
                download = self._transport.download(response, offset, progress=transfer.add)
                transfer.restart(download.start)
                transfer.total = download.size
                yield download
            finally:
                await response.aclose()

    @staticmethod
    def _created_in(container_id: ContainerId) -> Callable[[Response], ContainerFile]:
        def parse(response: Response) -> ContainerFile:
            return checks.in_container(ContainerFile.from_json(json_body(response)), container_id)

        return parse

    @staticmethod
    def _log(
        verb: str, filename: str, size: int | None, began: float, created: ContainerFile
    ) -> None:
        elapsed = time.monotonic() - began
        log.info(
            "%s %r (%s bytes) in %.2f s as %s %r",
            verb,
            filename,
            size,
            elapsed,
            created.id,
            created.path,
        )


async def _counted(
    chunks: AsyncIterable[bytes], on_bytes: Callable[[int], None]
) -> AsyncIterator[bytes]:
    """``chunks``, each counted as sent: the progress of a streamed upload."""
    async for chunk in chunks:
        on_bytes(len(chunk))
        yield chunk
