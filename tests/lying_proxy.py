"""A lying HTTP proxy for tests: real HTTP on loopback in front of the emulator.

The emulator is a faithful server; the proxy is how a test makes the server answer wrongly
or not at all. Requests are forwarded unchanged; a request that matches a :class:`Rule`
(method and a regular expression on the URL path) gets its answer rewritten by the rule's
action instead:

- :class:`Rewrite`: forward, then pass the decoded JSON answer through a function.
- :class:`Answer`: do not forward; answer a fixed status, content type and body.
- :class:`Reply`: do not forward; answer 200 with the JSON ``make()`` returns each time.
- :class:`Stall`: accept the request and never answer (until the proxy stops).
- :class:`Trickle`: forward, send the real headers, then one body byte every ``interval`` s.
- :class:`ShortBody`: forward, announce and send only the first ``keep`` body bytes, close.
- :class:`Drop`: close the connection without answering.

The proxy runs in threads (``http.server``), never on the caller's trio loop, and records
every request it saw as ``(method, path)`` so a test can check what a client sent.
``stop()`` releases every stalled or trickling request, so a teardown never waits on it.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True)
class Upstream:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Rewrite:
    """Forward, then replace the JSON answer by ``edit(answer)`` (status kept)."""

    edit: Callable[[Any], Any]


@dataclass
class Answer:
    """Answer without forwarding."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


@dataclass
class Reply:
    """Answer without forwarding: 200 with ``make()`` as JSON (a new answer each time)."""

    make: Callable[[], Any]


@dataclass
class Stall:
    """Never answer."""


@dataclass
class Trickle:
    """The real headers at once, then one body byte every ``interval`` seconds."""

    interval: float


@dataclass
class ShortBody:
    """Announce ``Content-Length: keep`` and send that many bytes of the real body."""

    keep: int


@dataclass
class Drop:
    """Close the connection without an answer."""


Action = Rewrite | Answer | Reply | Stall | Trickle | ShortBody | Drop


@dataclass
class Rule:
    """``action`` for requests whose path matches ``path`` (``re.search``), ``count`` times
    (``None``: every time)."""

    path: str
    action: Action
    method: str | None = None
    count: int | None = None
    hits: int = field(default=0)

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        return self.method in (None, method) and re.search(self.path, path) is not None


class LyingProxy:
    """``LyingProxy(upstream_root)``; ``base_url`` ends in ``/v1`` like the emulator's."""

    def __init__(self, upstream_root: str) -> None:
        parts = urlsplit(upstream_root)
        assert parts.hostname and parts.port, upstream_root
        self.upstream = (parts.hostname, parts.port)
        self.requests: list[tuple[str, str]] = []
        self.stopping = threading.Event()
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        port = self._server.server_address[1]
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root_url}/v1"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def seen(self, method: str, path: str) -> bool:
        with self._lock:
            return (method, path) in self.requests

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- used by the request handler -------------------------------------------------------

    def take(self, method: str, path: str) -> Action | None:
        with self._lock:
            self.requests.append((method, path))
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule.action
        return None

    def forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Upstream:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"{self.upstream[0]}:{self.upstream[1]}")
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return Upstream(response.status, kept, data)
        finally:
            conn.close()


class _QuietServer(ThreadingHTTPServer):
    # clients hang up on stalled and short answers on purpose: no tracebacks for that
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def _handler_for(proxy: LyingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _any(self) -> None:
            method, target = self.command, self.path
            path = urlsplit(target).path
            body = self._body()
            action = proxy.take(method, path)
            if isinstance(action, Stall):
                proxy.stopping.wait()
                self.close_connection = True
                return
            if isinstance(action, Drop):
                self.close_connection = True
                return
            if isinstance(action, Answer):
                self._send(action.status, [("Content-Type", action.content_type)], action.body)
                return
            if isinstance(action, Reply):
                answer = json.dumps(action.make()).encode()
                self._send(200, [("Content-Type", "application/json")], answer)
                return
            up = proxy.forward(method, target, list(self.headers.items()), body)
            if isinstance(action, Rewrite):
                edited = json.dumps(action.edit(json.loads(up.body))).encode()
                headers = [(k, v) for k, v in up.headers if k.lower() != "content-type"]
                self._send(up.status, [*headers, ("Content-Type", "application/json")], edited)
            elif isinstance(action, ShortBody):
                self.send_response(up.status)
                for name, value in up.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(action.keep))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(up.body[: action.keep])
                self.close_connection = True
            elif isinstance(action, Trickle):
                self.send_response(up.status)
                for name, value in up.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(up.body)))
                self.end_headers()
                self.wfile.flush()
                for i in range(len(up.body)):
                    if proxy.stopping.wait(action.interval):
                        break
                    self.wfile.write(up.body[i : i + 1])
                    self.wfile.flush()
                self.close_connection = True
            else:
                self._send(up.status, up.headers, up.body)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _any

    return Handler
