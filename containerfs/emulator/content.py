"""Streaming file content from the blob store, with optional single-range support.

Reads happen in worker threads in 1 MiB chunks, so a large download never blocks the event
loop nor sits whole in memory.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from containerfs.emulator.errors import ApiError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` for a single satisfiable byte range, else ``None``.

    Raises a 416 :class:`ApiError` for a well-formed range that starts past the end.
    Malformed and multi-range headers are ignored (the whole file is sent), as HTTP allows.
    """
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "Requested range not satisfiable.",
        param="range",
        headers={"content-range": f"bytes */{size}"},
    )


class BlobResponse(Response):
    """``start..end`` of a blob file, streamed.

    The file is opened only when the response is sent, so a response that is built and then
    discarded (a fault rule replaced it) holds no file open.
    """

    def __init__(
        self,
        path: Path,
        *,
        start: int,
        end: int,
        size: int,
        partial: bool,
        accept_ranges: bool,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.start, self.end = start, end
        self.on_bytes = on_bytes
        self.background = None
        self.status_code = 206 if partial else 200
        headers = {
            "content-type": "application/octet-stream",
            "content-length": str(end - start),
        }
        if accept_ranges:
            headers["accept-ranges"] = "bytes"
        if partial:
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            file: BinaryIO = await anyio.to_thread.run_sync(open, self.path, "rb")
        except FileNotFoundError:  # deleted since the response was built
            response = ApiError(404, "No such file.").response()
            await response(scope, receive, send)
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            await self._send_body(file, send)
        except OSError as exc:  # the client went away (uvicorn's ClientDisconnected)
            log.debug("content stream ended early: %s", exc)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(file.close)

    async def _send_body(self, file: BinaryIO, send: Send) -> None:
        position = self.start
        if position:
            await anyio.to_thread.run_sync(file.seek, position, os.SEEK_SET)
        while position < self.end:
            want = min(CHUNK_SIZE, self.end - position)
            chunk = await anyio.to_thread.run_sync(file.read, want)
            if not chunk:  # the blob shrank under us: end short, the client will notice
                break
            position += len(chunk)
            if self.on_bytes:
                self.on_bytes(len(chunk))
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": position < self.end}
            )
        if position == self.start:
            await send({"type": "http.response.body", "body": b""})
