"""What the headers and envelope of an answer say, read without httpx (``api``, the lowest
layer; the transport hands in an answer's parts): the typed error an error answer stands for
(from its envelope's fields), whether a content answer can vouch for its body, and where a
ranged body starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from containerfs.api.retrying import parse_retry_after
from containerfs.errors import ApiError, error_class_for

_CONTENT_RANGE = re.compile(r"bytes\s+(?P<start>\d+)-(?P<end>\d+)/(?P<total>\d+|\*)")

# Content types of an error page or error envelope: file content is served as
# application/octet-stream, so a body of these types may be a proxy's or gateway's page.
_ERROR_PAGE_TYPES = ("text/html", "application/json", "application/problem+json")


def error_fields(
    body: Any, *, text: str, reason: str
) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, param, code) of an error answer, from its envelope (or from its
    ``text`` and ``reason`` phrase when it has none)."""
    message, etype, param, code = "", None, None, None
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict):
        message = str(envelope.get("message") or "")
        etype, param, code = (
            str(v) if v is not None else None
            for v in (envelope.get("type"), envelope.get("param"), envelope.get("code"))
        )
    elif isinstance(envelope, str):  # some proxies answer {"error": "text"}
        message = envelope
    if not message:
        text = " ".join(text.split())[:200]
        reason = reason or "error"
        message = f"{reason}: {text}" if text else reason
    return message, etype, param, code


def status_error(
    status: int, body: Any, *, text: str, reason: str, headers: Mapping[str, str], now: float
) -> ApiError:
    """The typed error for an error answer: its class from the status (and message), its
    fields from the envelope ``body`` (None when the answer was not JSON), its retry-after
    from ``headers`` (an HTTP date measured against ``now``, Unix seconds)."""
    message, etype, param, code = error_fields(body, text=text, reason=reason)
    cls = error_class_for(status, message)
    return cls(
        message,
        status=status,
        type=etype,
        param=param,
        code=code,
        request_id=headers.get("x-request-id"),
        retry_after=parse_retry_after(headers, now=now),
    )


def suspect(headers: Mapping[str, str], *, http_version: str, consumed: bool) -> str | None:
    """Why a content answer cannot vouch for its body, or None: served as an error page
    would be, or with no framing that would show a truncated body (no Content-Length, not
    chunked: the body simply ends when the connection closes). ``headers`` as the answer's
    own (case-insensitive) mapping."""
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media in _ERROR_PAGE_TYPES:
        return f"served as {media}"
    framed = (
        "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()
    )
    if http_version.startswith("HTTP/1") and not framed and not consumed:
        return "no length and no chunked framing"
    return None


def download_window(
    status: int, headers: Mapping[str, str], offset: int
) -> tuple[int, int | None, int | None]:
    """(start, end, size) of a content answer: 206 honours our Range, 200 starts at byte 0.
    ``end`` is the offset just past the body (None when not said)."""
    length = headers.get("content-length")
    body = int(length) if length and length.isdigit() else None
    if status == 206:
        match = _CONTENT_RANGE.fullmatch(headers.get("content-range", "").strip())
        if match:
            total = match["total"]
            return (
                int(match["start"]),
                int(match["end"]) + 1,
                int(total) if total != "*" else None,
            )
        return offset, None, (body + offset if body is not None else None)
    return 0, body, body
