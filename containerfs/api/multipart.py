"""The ``multipart/form-data`` body of an upload streamed while it is produced: one file part,
sent chunk by chunk with no Content-Length (chunked), so the part may still be growing while
it is sent. Part of the API layer, used by the transport; plain bytes, no httpx.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable

# how httpx writes a form parameter (HTML5 form encoding), so both upload paths name a file alike
_FORM_ESCAPES = {'"': "%22", "\\": "\\\\"} | {chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}
_FORM_ESCAPE = re.compile("|".join(re.escape(c) for c in _FORM_ESCAPES))


def _form_param(name: str, value: str) -> bytes:
    escaped = _FORM_ESCAPE.sub(lambda m: _FORM_ESCAPES[m.group(0)], value)
    return f'{name}="{escaped}"'.encode()


async def _multipart_stream(
    boundary: str,
    field: str,
    filename: str,
    body: AsyncIterable[bytes],
    *,
    on_bytes: Callable[[int], None],
) -> AsyncIterator[bytes]:
    yield b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b"Content-Disposition: form-data; ",
            _form_param("name", field),
            b"; ",
            _form_param("filename", filename),
            b"\r\nContent-Type: application/octet-stream\r\n\r\n",
        ]
    )
    async for chunk in body:
        on_bytes(len(chunk))
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def multipart_body(
    field: str, filename: str, body: AsyncIterable[bytes], *, on_bytes: Callable[[int], None]
) -> tuple[dict[str, str], AsyncIterator[bytes]]:
    """The request headers and the body of a form whose one file part ``field`` named
    ``filename`` holds ``body``; ``on_bytes`` is told each chunk's size as it is sent."""
    boundary = secrets.token_hex(16)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return headers, _multipart_stream(boundary, field, filename, body, on_bytes=on_bytes)
