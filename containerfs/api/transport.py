"""The httpx edge of the API layer: the one ``httpx.AsyncClient``, request counters, the
client-side rate limit, the server's clock skew, streaming download bodies, the progress
deadlines of every request (``Deadlines``, deadlines.py, around each body and answer), and the
one boundary (``_api_errors``) where every httpx failure and error answer becomes a typed error
of ``containerfs.errors`` (keeping the original as ``__cause__``).

The only module of containerfs that imports httpx; ``ApiClient`` (client.py) builds requests
through it and never sees an httpx type at run time. Knows nothing about FUSE, inodes or caches.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
)
from contextlib import contextmanager
from typing import Any, TypeVar

import httpcore
import httpx
import trio

from containerfs.api import checks
from containerfs.api.answers import download_window, status_error, suspect
from containerfs.api.deadlines import Deadlines
from containerfs.api.multipart import multipart_body
from containerfs.api.retrying import Patience, RateLimiter, parse_http_date
from containerfs.config import ENDPOINTS, ApiConfig
from containerfs.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeout,
    MalformedAnswer,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What the client passes around without looking inside.
Request = httpx.Request
Response = httpx.Response
#: A replacement transport (tests: ``httpx.MockTransport``, ``httpx.ASGITransport``).
HttpTransport = httpx.AsyncBaseTransport

#: Bytes per socket read for HTTP/1.1 responses. httpcore reads 64 KiB at a time, and the
#: per-read cost then caps a streaming download near 0.7 GB/s on loopback; 1 MiB reads about
#: double that (scripts/bench_client.py). httpcore has no per-connection option for it, so
#: ``ApiClient`` raises its class attribute (never lowers it; a no-op if httpcore drops it).
READ_SIZE = 1 << 20

# httpx failure -> (our class, worth retrying, request may have been carried out).
# First match wins, so the specific classes come before their bases.
_TRANSPORT_ERRORS: tuple[tuple[type[httpx.TransportError], type[ApiError], bool, bool], ...] = (
    (httpx.ConnectTimeout, ApiTimeout, True, False),
    (httpx.PoolTimeout, ApiTimeout, True, False),
    (httpx.TimeoutException, ApiTimeout, True, True),  # read/write timeout: sent, maybe done
    (httpx.ConnectError, ApiConnectionError, True, False),
    (httpx.UnsupportedProtocol, ApiConnectionError, False, False),
    (httpx.LocalProtocolError, ApiConnectionError, False, False),
    (httpx.TransportError, ApiConnectionError, True, True),  # reset, peer closed, proxy
)


@contextmanager
def _api_errors(endpoint: str, *, now: Callable[[], float]) -> Iterator[None]:
    """The one boundary where httpx failures become ``ApiError``s (``raise ... from exc``)."""
    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise _status_error(exc.response, now=now()) from exc
    except httpx.TransportError as exc:
        api_class, retryable, ambiguous = next(
            (c, r, a) for h, c, r, a in _TRANSPORT_ERRORS if isinstance(exc, h)
        )
        detail = str(exc) or type(exc).__name__
        err = api_class(f"{endpoint}: {type(exc).__name__}: {detail}")
        err.retryable, err.ambiguous = retryable, ambiguous
        raise err from exc


def _status_error(response: httpx.Response, *, now: float) -> ApiError:
    """The typed error for an error answer, from its envelope (or its text when not JSON)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return status_error(
        response.status_code,
        body,
        text=response.text,
        reason=response.reason_phrase,
        headers=response.headers,
        now=now,
    )


class _RequestBody(httpx.AsyncByteStream):
    """A request's body, counted as progress; each chunk sent moves the attempt's deadline,
    and is told to ``count`` as it goes (a large upload's bytes show up as they are sent,
    not all at once when it starts)."""

    def __init__(
        self, inner: Any, patience: Patience, *, count: Callable[[int], None] | None = None
    ) -> None:
        self._inner = inner
        self._patience = patience
        self._count = count
        self.scope: trio.CancelScope | None = None
        self.started = False  # connected, and the request is being sent
        self.done = False  # the whole request is sent: the answer is awaited

    def _renew(self) -> None:
        if self.scope is not None:
            self.scope.deadline = trio.current_time() + self._patience.time_left()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        chunks = aiter(self._inner)
        try:
            async for chunk in chunks:
                self._patience.sent(len(chunk))
                if self._count is not None:
                    self._count(len(chunk))
                self._renew()
                yield chunk
        finally:
            # a body abandoned halfway (the server answered early) is closed now, not by
            # the garbage collector
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        self.done = True
        self._patience.begin()  # the server has one window to start answering
        self._renew()


class _ResponseBody(httpx.AsyncByteStream):
    """An answer's body: each read waits at most what the call's patience allows."""

    def __init__(self, inner: Any, deadlines: Deadlines, patience: Patience) -> None:
        self._inner = inner
        self._deadlines = deadlines
        self._patience = patience

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._inner.__aiter__()
        try:
            while True:
                # the scope ends before the yield: a consumer's own awaits are not timed
                with self._deadlines.watch(self._patience) as scope:
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        return
                if scope.cancelled_caught:
                    raise self._deadlines.cut(self._patience, httpx.ReadTimeout, answered=True)
                self._patience.received(len(chunk))
                with self._patience.held():
                    yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def aclose(self) -> None:
        await self._inner.aclose()


class Download:
    """One streaming ``GET …/content``: where its body starts, the file's size, its chunks,
    and ``suspect``: why the body cannot vouch for itself (None when it can)."""

    def __init__(
        self,
        response: httpx.Response,
        *,
        start: int,
        size: int | None,
        on_bytes: Callable[[int], None],
        now: Callable[[], float],
        end: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.start = start
        self.end = end  # just past the body's last byte, when the answer said
        self.size = size
        self.suspect = suspect(
            response.headers,
            http_version=response.http_version,
            consumed=response.is_stream_consumed,
        )
        self._response = response
        self._on_bytes = on_bytes
        self._progress = progress
        self._now = now

    def _arrived(self, n: int) -> None:
        self._on_bytes(n)
        if self._progress is not None:
            self._progress(n)

    def __repr__(self) -> str:
        return f"<Download start={self.start} size={self.size}>"

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The raw body as it arrives; a broken stream raises ApiConnectionError/ApiTimeout."""
        if self._response.is_stream_consumed:  # a transport that answered with bytes in hand
            if self._response.content:
                self._arrived(len(self._response.content))
                yield self._response.content
            return
        with _api_errors("file_content", now=self._now):
            async for chunk in self._response.aiter_raw():
                self._arrived(len(chunk))
                yield chunk


class Transport:
    """One API endpoint over ``httpx.AsyncClient``: sends requests, counts them, maps errors."""

    def __init__(
        self,
        config: ApiConfig,
        *,
        transport: HttpTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = trio.sleep,
        clock: Callable[[], float] = trio.current_time,
        wallclock: Callable[[], float] | None = None,
    ) -> None:
        self._wallclock = wallclock or time.time
        self._limiter = (
            RateLimiter(config.rate_limit_per_minute, clock=clock, sleep=sleep)
            if config.rate_limit_per_minute
            else None
        )
        _raise_read_size(READ_SIZE)
        # httpx logs every request at INFO
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # httpx's own timeouts are a backstop; Deadlines cuts a stall or a trickle first
        io = config.io_timeout
        timeout = httpx.Timeout(connect=min(config.connect_timeout, io), read=io, write=io, pool=io)
        self._deadlines = Deadlines()
        self._http = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=checks.request_headers(config),
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=16, keepalive_expiry=30.0
            ),
            transport=transport,
        )
        self.requests: Counter[str] = Counter(dict.fromkeys(ENDPOINTS, 0))
        self.bytes_up = 0
        self.bytes_down = 0
        self.skew = 0.0  # server clock minus ours, from the Date header

    async def aclose(self) -> None:
        await self._http.aclose()

    def abort(self) -> None:
        """Cancel every request in flight (they fail with ``ApiAborted``) and refuse new ones."""
        self._deadlines.abort()

    @property
    def aborted(self) -> bool:
        return self._deadlines.aborted

    @property
    def rate_limit_waits(self) -> tuple[int, float]:
        """Waits for the rate limiter, and the seconds waited."""
        if self._limiter is None:
            return 0, 0.0
        stats = self._limiter.statistics()
        return stats.waits, stats.waited_seconds

    def limiter_idle(self) -> bool:
        """Whether a request now would go without waiting for the rate limiter."""
        return self._limiter is None or self._limiter.idle()

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        files: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        return self._http.build_request(
            method, url, params=params, json=json, files=files, headers=headers
        )

    def multipart_request(
        self, method: str, url: str, *, field: str, filename: str, body: AsyncIterable[bytes]
    ) -> Request:
        """A multipart request whose one file part is ``body``, sent as it comes: no
        Content-Length (chunked), so the part may still be growing while it is sent."""
        headers, content = multipart_body(field, filename, body, on_bytes=self._count_up)
        return self._http.build_request(method, url, headers=headers, content=content)

    async def send(
        self, endpoint: str, request: Request, *, stream: bool, patience: Patience
    ) -> Response:
        """One attempt within ``patience``; an error answer or a transport failure (a cut
        included) raises its ``ApiError``."""
        if self._limiter is not None:
            await self._limiter.acquire()
        self.requests[endpoint] += 1
        count: Callable[[int], None] | None = self._count_up  # a streamed body (a file)
        if isinstance(request.stream, httpx.ByteStream):  # in memory: handed over at once
            length = request.headers.get("content-length")
            self.bytes_up += int(length) if length and length.isdigit() else 0
            count = None
        body = _RequestBody(request.stream, patience, count=count)
        request.stream = body
        patience.begin(attempt=True)
        with _api_errors(endpoint, now=self._wallclock):
            with self._deadlines.watch(patience) as scope:
                body.scope = scope
                response = await self._http.send(request, stream=True)
            if scope.cancelled_caught:
                # nothing sent yet: safe to send again; else the server may have acted on it
                kind: type[httpx.TimeoutException] = httpx.ConnectTimeout
                if body.started:
                    kind = httpx.ReadTimeout if body.done else httpx.WriteTimeout
                raise self._deadlines.cut(patience, kind, answered=False)
            patience.begin()  # the answer came: its body gets a window of its own
            response.stream = _ResponseBody(response.stream, self._deadlines, patience)
            self._note_date(response)
            log.debug(
                "%s %s %s -> %d", endpoint, request.method, request.url.path, response.status_code
            )
            if not stream or not response.is_success:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                self.bytes_down += len(response.content)
            response.raise_for_status()
        return response

    @staticmethod
    def parse(endpoint: str, response: Response, parse: Callable[[Response], T]) -> T:
        """``parse(response)``; a malformed answer becomes an ``ApiError``."""
        try:
            return parse(response)
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedAnswer(
                f"{endpoint}: malformed answer: {exc}",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from exc

    def download(
        self, response: Response, offset: int, *, progress: Callable[[int], None] | None = None
    ) -> Download:
        """The body of a content answer to a request for the bytes from ``offset``;
        ``progress`` is told each chunk's size as it arrives."""
        start, end, size = download_window(response.status_code, response.headers, offset)
        return Download(
            response,
            start=start,
            end=end,
            size=size,
            on_bytes=self._count_down,
            now=self._wallclock,
            progress=progress,
        )

    def _note_date(self, response: Response) -> None:
        date = response.headers.get("date")
        when = parse_http_date(date) if date else None
        if when is not None:
            self.skew = when - self._wallclock()

    def _count_down(self, n: int) -> None:
        self.bytes_down += n

    def _count_up(self, n: int) -> None:
        self.bytes_up += n


def _raise_read_size(size: int) -> None:
    conn = getattr(httpcore, "AsyncHTTP11Connection", None)
    current = getattr(conn, "READ_NUM_BYTES", None)
    if isinstance(current, int) and current < size:
        conn.READ_NUM_BYTES = size  # type: ignore[union-attr]


def json_body(response: Response) -> Any:
    """The JSON object of an answer (ValueError when it is not one)."""
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data
