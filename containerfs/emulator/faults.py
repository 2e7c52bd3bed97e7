"""Fault injection: rules set at run time (``POST /_emulator/faults``) and how they act.

A rule matches a route name (or ``"*"``) and optionally a method, and fires ``count`` times
(``null`` for every matching request). Actions:

- ``error``: answer ``status`` (default 500) in the error envelope.
- ``throttle``: answer 429 with ``retry-after`` (seconds) and optionally ``retry-after-ms``.
- ``stall``: sleep ``seconds`` before answering.
- ``drop``: send the response headers (with ``Content-Length``) and part of the body, then
  break the connection. ``drop_after_bytes`` sets how much of the body is sent (default half).

With ``after_body: true`` the real operation is performed first (the upload is stored, the
file deleted, ...) and the fault then applies to its answer. Without it, ``error``,
``throttle`` and ``drop`` replace the operation - except that ``drop`` on a read-only (GET)
route always truncates the real answer, which is what a dropped download looks like.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from containerfs.emulator.errors import bad_request

log = logging.getLogger(__name__)

Action = Literal["error", "throttle", "stall", "drop"]
ACTIONS: tuple[Action, ...] = ("error", "throttle", "stall", "drop")
ROUTES = (
    "list_containers",
    "create_container",
    "retrieve_container",
    "delete_container",
    "list_files",
    "upload_file",
    "retrieve_file",
    "delete_file",
    "file_content",
)

_RULE_KEYS = {
    "route",
    "method",
    "action",
    "status",
    "retry_after",
    "retry_after_ms",
    "seconds",
    "count",
    "after_body",
    "drop_after_bytes",
    "message",
}


class ConnectionDropped(Exception):
    """Raised mid-response on purpose: the server then closes the connection.

    uvicorn closes the transport when an application raises after the response started, so
    the client sees a body shorter than its ``Content-Length``. Over ``httpx.ASGITransport``
    the exception reaches the caller instead.
    """


@dataclass
class FaultRule:
    route: str
    action: Action
    method: str | None = None
    status: int = 500
    retry_after: float | None = 1.0
    retry_after_ms: int | None = None
    seconds: float = 10.0
    count: int | None = 1
    after_body: bool = False
    drop_after_bytes: int | None = None
    message: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> FaultRule:
        if not isinstance(raw, Mapping):
            raise bad_request("Each fault rule must be an object.", param="rules")
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise bad_request(f"Unknown fault rule keys: {sorted(unknown)}.", param="rules")
        route = raw.get("route", "*")
        if route != "*" and route not in ROUTES:
            raise bad_request(f"Unknown route {route!r}; one of {ROUTES} or '*'.", param="route")
        action = raw.get("action")
        if action not in ACTIONS:
            raise bad_request(f"'action' must be one of {ACTIONS}.", param="action")
        method = raw.get("method")
        count = raw.get("count", 1)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise bad_request("'count' must be a positive integer or null.", param="count")
        try:
            return cls(
                route=route,
                action=action,
                method=str(method).upper() if method is not None else None,
                status=int(raw.get("status", 429 if action == "throttle" else 500)),
                retry_after=_opt_float(raw.get("retry_after", 1.0)),
                retry_after_ms=_opt_int(raw.get("retry_after_ms")),
                seconds=float(raw.get("seconds", 10.0)),
                count=count,
                after_body=bool(raw.get("after_body", False)),
                drop_after_bytes=_opt_int(raw.get("drop_after_bytes")),
                message=raw.get("message"),
            )
        except (TypeError, ValueError) as exc:
            raise bad_request(f"Invalid fault rule: {exc}.", param="rules") from exc

    def matches(self, route: str, method: str, *, after_body: bool) -> bool:
        return (
            self.after_body == after_body
            and self.route in ("*", route)
            and self.method in (None, method)
            and (self.count is None or self.count > 0)
        )

    def throttle_headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["retry-after"] = _number(self.retry_after)
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
        return headers

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FaultSet:
    """The active rules; the first matching rule with ``count`` left fires."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def set(self, rules: list[FaultRule]) -> None:
        self.rules = rules

    def clear(self) -> None:
        self.rules = []

    def take(self, route: str, method: str, *, after_body: bool) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(route, method, after_body=after_body):
                if rule.count is not None:
                    rule.count -= 1
                log.info("fault %s on %s %s", rule.action, method, route)
                return rule
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [rule.to_json() for rule in self.rules]


class DroppedResponse(Response):
    """Wraps a response: passes its headers and ``keep`` body bytes, then drops the line."""

    def __init__(self, inner: Response, *, keep: int | None) -> None:
        self.inner = inner
        self.keep = keep
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        keep = self.keep
        sent = 0

        async def truncating_send(message: Message) -> None:
            nonlocal keep, sent
            if message["type"] == "http.response.start":
                if keep is None:
                    length = _content_length(message)
                    keep = length // 2 if length else 0
                await send(message)
                return
            body: bytes = message.get("body", b"")
            assert keep is not None
            room = keep - sent
            if len(body) >= room:
                await send({"type": "http.response.body", "body": body[:room], "more_body": True})
                raise ConnectionDropped(f"dropped after {keep} body bytes")
            sent += len(body)
            await send({**message, "more_body": True})

        await self.inner(scope, receive, truncating_send)
        raise ConnectionDropped(f"dropped after {sent} body bytes")


class DroppedLogFilter(logging.Filter):
    """Keeps the server's log free of tracebacks for connections dropped on purpose, and
    for requests (stalled ones) cancelled when the server stops."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped | asyncio.CancelledError)


def _content_length(message: Message) -> int:
    for name, value in message.get("headers", []):
        if name.lower() == b"content-length":
            return int(value)
    return 0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
