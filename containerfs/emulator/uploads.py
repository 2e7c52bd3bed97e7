"""Streaming multipart parser for uploads: the ``file`` part goes straight to a disk file.

Request bytes are parsed as they arrive (python-multipart's push parser) and the ``file``
part's data is written to an ``incoming`` file in worker threads, in batches of about
1 MiB: an upload never sits whole in memory. Other small fields (``file_id``) are kept.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from containerfs.emulator.errors import ApiError, bad_request

log = logging.getLogger(__name__)

FILE_FIELD = "file"
_FLUSH_BYTES = 1 << 20
_MAX_FIELD_BYTES = 64 << 10


@dataclass
class Upload:
    """The parsed request: the stored ``file`` part (if any) and the other fields."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    blob: Path | None = None
    size: int = 0


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _Receiver:
    """Collects parser callbacks; the async side drains :attr:`pending` to disk."""

    def __init__(self) -> None:
        self.part = _Part()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.file_part_seen = False
        self.in_file_part = False
        self.pending = bytearray()
        self.upload = Upload()
        self.error: ApiError | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self.header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.header_value.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_end(self) -> None:
        name = bytes(self.header_field).decode("latin-1").lower()
        self.part.headers[name] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition = self.part.headers.get("content-disposition", b"").decode("latin-1")
        _, options = parse_options_header(disposition)
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        if raw_filename is not None:
            self.part.filename = raw_filename.decode("utf-8", "replace")
        # Only the first ``file`` part is stored; later ones are parsed and dropped.
        self.in_file_part = self.part.name == FILE_FIELD and not self.file_part_seen
        if self.in_file_part:
            self.file_part_seen = True
            self.upload.filename = self.part.filename

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file_part:
            self.pending += data[start:end]
        elif len(self.part.data) + end - start <= _MAX_FIELD_BYTES:
            self.part.data += data[start:end]
        else:
            self.error = bad_request(f"Form field {self.part.name!r} is too large.")

    def on_part_end(self) -> None:
        if not self.in_file_part and self.part.name and self.part.filename is None:
            self.upload.fields[self.part.name] = self.part.data.decode("utf-8", "replace")
        self.in_file_part = False


def multipart_boundary(content_type: str) -> bytes:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise bad_request("Missing multipart boundary in Content-Type.")
    return boundary


async def receive_multipart(
    chunks: AsyncIterator[bytes], *, boundary: bytes, blob: Path, max_bytes: int
) -> Upload:
    """Parse a multipart body; the ``file`` part is written to ``blob``.

    On any failure (client gone, malformed body, too large) ``blob`` is removed.
    """
    receiver = _Receiver()
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    out: BinaryIO = await anyio.to_thread.run_sync(open, blob, "wb")
    size = 0
    try:
        async for chunk in chunks:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise bad_request(f"Malformed multipart body: {exc}.") from exc
            if receiver.error:
                raise receiver.error
            if len(receiver.pending) >= _FLUSH_BYTES:
                size += await _flush(out, receiver)
                if size > max_bytes:
                    raise ApiError(413, "The uploaded file is too large.", param=FILE_FIELD)
        parser.finalize()
        if parser.state != MultipartState.END:
            # a body cut short (its final boundary missing) is an upload that never completed:
            # the service stores nothing of it, and neither does the emulator
            raise bad_request("Malformed multipart body: it ends before its final boundary.")
        size += await _flush(out, receiver)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_discard, out, blob)
        raise
    await anyio.to_thread.run_sync(out.close)
    upload = receiver.upload
    upload.size = size
    if receiver.file_part_seen:
        upload.blob = blob
    else:
        await anyio.to_thread.run_sync(_discard, None, blob)
    return upload


async def _flush(out: BinaryIO, receiver: _Receiver) -> int:
    data, receiver.pending = receiver.pending, bytearray()
    if data:
        await anyio.to_thread.run_sync(out.write, data)
    return len(data)


def _discard(out: BinaryIO | None, blob: Path) -> None:
    if out is not None:
        out.close()
    blob.unlink(missing_ok=True)
