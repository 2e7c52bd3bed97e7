"""ApiClient against ``httpx.MockTransport``: pagination, error mapping, retries, rate limit,
headers, streaming upload, duplicate-free recovery of ambiguous creates, downloads."""

from __future__ import annotations

import errno
import itertools
import json
import logging
import random
import re
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from containerfs.api.client import ApiClient, ApiConfig
from containerfs.api.retrying import Backoff, RateLimiter, parse_retry_after
from containerfs.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeout,
    AuthenticationError,
    BadRequest,
    ConfigError,
    Conflict,
    ContainerExpired,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unprocessable,
    UnsafeId,
)
from containerfs.models import ApiFile, Container, ContainerId, FileId, NetworkPolicy, Page
from containerfs.paths import upload_path_matches

KEY = "sk-test-SECRET-0123456789"
CID = ContainerId("cntr_" + "a" * 48)

Handler = Callable[[httpx.Request], Any]


class Recorder:
    """A fake ``sleep`` that records delays and a fake clock it advances."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 1000.0

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds
        await trio.lowlevel.checkpoint()

    def clock(self) -> float:
        return self.now


class FakeApi:
    """An in-memory Containers API behind a MockTransport, with a hook to inject failures."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.containers: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.fault: Callable[[httpx.Request, int], httpx.Response | None] | None = None
        self.date = False  # send a Date header (the server's clock) with every answer
        self._ids = itertools.count(1)

    def file(self, path: str, size: int, *, created_at: int | None = None) -> dict[str, Any]:
        fid = f"cfile_{next(self._ids):032x}"
        obj = {
            "id": fid,
            "object": "container.file",
            "container_id": CID,
            "path": path,
            "bytes": size,
            "created_at": created_at if created_at is not None else int(time.time()),
            "source": "user",
        }
        self.files[fid] = obj
        return obj

    async def handler(self, request: httpx.Request) -> httpx.Response:
        response = await self._handle(request)
        if self.date:
            response.headers["date"] = formatdate(time.time(), usegmt=True)
        return response

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        n = len(self.requests)
        if self.fault is not None:
            injected = self.fault(request, n)
            if injected is not None:
                return injected
        path = request.url.path
        if request.method == "POST" and path.endswith("/files"):
            body = await request.aread()
            m = re.search(rb'filename="([^"]*)"', body)
            assert m is not None
            name = m.group(1).decode()
            content = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
            return httpx.Response(200, json=self.file(f"/mnt/data/{name}", len(content)))
        if request.method == "GET" and path.endswith("/files"):
            return httpx.Response(200, json=_page(list(self.files.values()), request))
        if request.method == "POST" and path.endswith("/containers"):
            name = json.loads(await request.aread())["name"]
            cid = f"cntr_{next(self._ids):048x}"
            obj = {"id": cid, "name": name, "created_at": int(time.time()), "status": "running"}
            self.containers[cid] = obj
            return httpx.Response(200, json=obj)
        if request.method == "GET" and path.endswith("/containers"):
            return httpx.Response(200, json=_page(list(self.containers.values()), request))
        return httpx.Response(404, json=_envelope("No such object", "invalid_request_error"))


def _envelope(
    message: str, type_: str = "invalid_request_error", param: Any = None, code: Any = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _page(items: list[dict[str, Any]], request: httpx.Request) -> dict[str, Any]:
    limit = int(request.url.params.get("limit", "20"))
    after = request.url.params.get("after")
    ids = [i["id"] for i in items]
    start = ids.index(after) + 1 if after else 0
    chunk = items[start : start + limit]
    return {
        "object": "list",
        "data": chunk,
        "first_id": chunk[0]["id"] if chunk else None,
        "last_id": chunk[-1]["id"] if chunk else None,
        "has_more": start + limit < len(items),
    }


def make_client(
    handler: Handler,
    rec: Recorder | None = None,
    *,
    wallclock: Callable[[], float] | None = None,
    **cfg: Any,
) -> ApiClient:
    rec = rec or Recorder()
    config = ApiConfig(base_url="https://api.test/v1", api_key=KEY, **cfg)
    return ApiClient(
        config,
        transport=httpx.MockTransport(handler),
        sleep=rec.sleep,
        clock=rec.clock,
        rng=random.Random(7),
        wallclock=wallclock,
    )


def answer(status: int, body: Any = None, **headers: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body if body is not None else {}, headers=headers)

    return handler


def sequence(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler playing ``responses`` in order (exceptions are raised), then the last again."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses[min(len(seen), len(responses)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def container_json(i: int) -> dict[str, Any]:
    return {
        "id": f"cntr_{i:048x}",
        "name": f"c{i}",
        "created_at": 1700000000 + i,
        "status": "running",
    }


# -- pagination -------------------------------------------------------------------------


async def test_listing_follows_after_cursor_with_limit_100() -> None:
    items = [container_json(i) for i in range(250)]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_page(items, request))

    async with make_client(handler) as client:
        got = [c async for c in client.list_containers()]
    assert [c.id for c in got] == [i["id"] for i in items]
    assert [r.url.params.get("limit") for r in seen] == ["100"] * 3
    assert [r.url.params.get("after") for r in seen] == [None, items[99]["id"], items[199]["id"]]
    assert all(r.url.params["order"] == "asc" for r in seen)
    assert client.statistics().requests["list_containers"] == 3


async def test_listing_stops_at_empty_page_even_if_has_more() -> None:
    pages = [
        {
            "object": "list",
            "data": [container_json(1)],
            "first_id": "x",
            "last_id": container_json(1)["id"],
            "has_more": True,
        },
        {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": True},
    ]
    handler, seen = sequence(*(httpx.Response(200, json=p) for p in pages))
    async with make_client(handler) as client:
        got = [c async for c in client.list_containers()]
    assert len(got) == 1 and len(seen) == 2


async def test_listing_that_does_not_advance_is_an_error_not_a_loop() -> None:
    page = {
        "object": "list",
        "data": [container_json(1)],
        "first_id": "a",
        "last_id": "a",
        "has_more": True,
    }
    handler, seen = sequence(httpx.Response(200, json=page))
    async with make_client(handler) as client:
        with pytest.raises(ApiError, match="did not advance"):
            [c async for c in client.list_containers()]
    assert len(seen) == 2


async def test_list_files_follows_cursor_and_tolerates_null_bytes() -> None:
    api = FakeApi()
    for i in range(205):
        api.file(f"/mnt/data/f{i}.txt", i)
    api.files[next(iter(api.files))]["bytes"] = None
    async with make_client(api.handler) as client:
        files = [f async for f in client.list_files(CID)]
    assert len(files) == 205 and files[0].bytes is None and files[1].bytes == 1
    assert [r.url.params.get("after") is None for r in api.requests] == [True, False, False]


async def test_container_name_filter_and_order_go_on_the_wire() -> None:
    handler, seen = sequence(
        httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
    )
    async with make_client(handler) as client:
        assert [c async for c in client.list_containers(name="my box", order="desc")] == []
    assert seen[0].url.params["name"] == "my box" and seen[0].url.params["order"] == "desc"


def test_page_from_json_tolerates_extra_fields() -> None:
    page = Page.from_json(
        {"data": [container_json(1) | {"extra": 1}], "has_more": False, "new": 2}, dict
    )
    assert page.has_more is False and page.first_id is None and len(page.data) == 1


# -- error mapping ----------------------------------------------------------------------

STATUS_CASES = [
    (
        400,
        _envelope(
            "Invalid 'limit': must be <= 100.", param="limit", code="integer_above_max_value"
        ),
        BadRequest,
        errno.EINVAL,
    ),
    (400, _envelope("Container is expired."), ContainerExpired, errno.EROFS),
    (
        401,
        _envelope("Incorrect API key provided.", code="invalid_api_key"),
        AuthenticationError,
        errno.EACCES,
    ),
    (403, _envelope("Not allowed", "permission_error"), PermissionDenied, errno.EACCES),
    (404, _envelope("No container found with id 'x'."), NotFound, errno.ENOENT),
    (409, _envelope("Conflict"), Conflict, errno.EBUSY),
    (422, _envelope("Unprocessable"), Unprocessable, errno.EINVAL),
    (
        429,
        _envelope("Rate limit reached", "rate_limit_error", code="rate_limit_exceeded"),
        RateLimited,
        errno.EAGAIN,
    ),
    (500, _envelope("The server had an error", "server_error"), ServerError, errno.EIO),
    (503, _envelope("Overloaded", "server_error"), ServerError, errno.EIO),
    (418, _envelope("I'm a teapot"), ApiError, errno.EIO),
]


@pytest.mark.parametrize(
    ("status", "body", "cls", "err_no"),
    STATUS_CASES,
    ids=[f"{c[0]}-{c[2].__name__}" for c in STATUS_CASES],
)
async def test_error_answers_map_to_typed_errors(
    status: int, body: dict[str, Any], cls: type[ApiError], err_no: int
) -> None:
    handler = answer(status, body, **{"x-request-id": "req_123"})
    async with make_client(handler, max_retries=0) as client:
        with pytest.raises(ApiError) as info:
            await client.retrieve_container(CID)
    err = info.value
    assert type(err) is cls and err.errno == err_no
    assert err.status == status and err.request_id == "req_123"
    assert err.message == body["error"]["message"] and err.type == body["error"]["type"]
    assert err.param == body["error"]["param"] and err.code == body["error"]["code"]
    assert isinstance(err.__cause__, httpx.HTTPStatusError)
    assert err.__cause__.response.status_code == status
    assert client.statistics().errors == {cls.__name__: 1}


async def test_non_json_error_body_still_gives_a_message() -> None:
    async with make_client(
        answer(502, "<html><body>Bad   gateway\n from proxy</body></html>"), max_retries=0
    ) as client:
        with pytest.raises(ServerError) as info:
            await client.retrieve_container(CID)
    assert info.value.status == 502
    assert "Bad Gateway" in info.value.message and "Bad gateway from proxy" in info.value.message
    assert str(info.value).startswith("HTTP 502: ")


@pytest.mark.parametrize(
    ("exc", "cls", "ambiguous"),
    [
        (httpx.ReadTimeout("read timed out"), ApiTimeout, True),
        (httpx.WriteTimeout("write timed out"), ApiTimeout, True),
        (httpx.ConnectTimeout("connect timed out"), ApiTimeout, False),
        (httpx.PoolTimeout("pool"), ApiTimeout, False),
        (httpx.ConnectError("[Errno 111] Connection refused"), ApiConnectionError, False),
        (httpx.ReadError("connection reset"), ApiConnectionError, True),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            ApiConnectionError,
            True,
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
async def test_transport_failures_map_to_timeout_and_connection_errors(
    exc: Exception, cls: type[ApiError], ambiguous: bool
) -> None:
    handler, _seen = sequence(exc)
    async with make_client(handler, max_retries=0) as client:
        with pytest.raises(cls) as info:
            await client.retrieve_container(CID)
    assert info.value.__cause__ is exc
    assert info.value.ambiguous is ambiguous and info.value.retryable
    # a timeout is ETIMEDOUT; a refused or broken connection EIO, never a routing errno
    assert info.value.errno == (errno.ETIMEDOUT if cls is ApiTimeout else errno.EIO)


async def test_malformed_success_answer_is_an_api_error() -> None:
    async with make_client(answer(200, "not json")) as client:
        with pytest.raises(ApiError, match="malformed") as info:
            await client.retrieve_container(CID)
    assert isinstance(info.value.__cause__, ValueError)


# -- retries ----------------------------------------------------------------------------


async def test_server_errors_are_retried_with_jittered_backoff() -> None:
    rec = Recorder()
    handler, seen = sequence(
        httpx.Response(503, json=_envelope("busy")),
        httpx.Response(500, json=_envelope("oops")),
        httpx.Response(200, json=container_json(1)),
    )
    async with make_client(handler, rec, backoff_base=0.5) as client:
        container = await client.retrieve_container(CID)
    assert container.name == "c1" and len(seen) == 3
    assert len(rec.delays) == 2 and 0 <= rec.delays[0] <= 0.5 and 0 <= rec.delays[1] <= 1.0
    stats = client.statistics()
    assert stats.retries == 2 and stats.requests["retrieve_container"] == 3 and stats.errors == {}


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ],
)
async def test_retry_after_headers_are_honoured(headers: dict[str, str], delay: float) -> None:
    rec = Recorder()
    handler, _seen = sequence(
        httpx.Response(429, json=_envelope("slow down"), headers=headers),
        httpx.Response(200, json=container_json(1)),
    )
    async with make_client(handler, rec) as client:
        await client.retrieve_container(CID)
    assert rec.delays == [delay]


async def test_retry_after_http_date_is_measured_against_the_wall_clock() -> None:
    rec = Recorder()
    now = 1_750_000_000.0
    headers = {"retry-after": formatdate(now + 12, usegmt=True)}
    handler, _ = sequence(
        httpx.Response(503, headers=headers, json={}), httpx.Response(200, json=container_json(1))
    )
    async with make_client(handler, rec, wallclock=lambda: now) as client:
        await client.retrieve_container(CID)
    assert rec.delays == [12.0]


async def test_absurd_retry_after_falls_back_to_capped_backoff() -> None:
    rec = Recorder()
    handler, _ = sequence(
        httpx.Response(429, headers={"retry-after": "3600"}, json={}),
        httpx.Response(200, json=container_json(1)),
    )
    async with make_client(handler, rec, backoff_base=2.0, backoff_max=30.0) as client:
        await client.retrieve_container(CID)
    assert len(rec.delays) == 1 and rec.delays[0] <= 2.0


class MaxRandom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base=1.0, cap=4.0)
    assert [backoff.delay(n, MaxRandom()) for n in range(6)] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert backoff.delay(10_000, MaxRandom()) == 4.0
    assert all(0 <= backoff.delay(n, random.Random(n)) <= 4.0 for n in range(50))


async def test_retries_stop_after_max_retries() -> None:
    rec = Recorder()
    handler, seen = sequence(httpx.Response(500, json=_envelope("down")))
    async with make_client(
        handler, rec, max_retries=3, backoff_base=1.0, backoff_max=2.0
    ) as client:
        with pytest.raises(ServerError):
            await client.retrieve_container(CID)
    assert len(seen) == 4 and len(rec.delays) == 3 and max(rec.delays) <= 2.0
    stats = client.statistics()
    assert stats.retries == 3 and stats.errors == {"ServerError": 1}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    handler, seen = sequence(httpx.Response(status, json=_envelope("no")))
    async with make_client(handler) as client:
        with pytest.raises(ApiError):
            await client.retrieve_container(CID)
    assert len(seen) == 1


@pytest.mark.parametrize("status", [408, 409])
async def test_408_and_409_are_retried(status: int) -> None:
    handler, seen = sequence(
        httpx.Response(status, json=_envelope("again")), httpx.Response(200, json=container_json(1))
    )
    async with make_client(handler) as client:
        await client.retrieve_container(CID)
    assert len(seen) == 2


async def test_connection_errors_are_retried() -> None:
    handler, seen = sequence(
        httpx.ConnectError("refused"),
        httpx.ReadError("reset"),
        httpx.Response(200, json=container_json(1)),
    )
    async with make_client(handler) as client:
        await client.retrieve_container(CID)
    assert len(seen) == 3 and client.statistics().retries == 2


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "20"}, now=0) == 0.02
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "3"}, now=0) == 3.0
    assert (
        parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0)
        == 10.0
    )
    assert (
        parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412490.0) == 0.0
    )
    assert parse_retry_after({"retry-after": "soon"}, now=0) is None
    assert parse_retry_after({}, now=0) is None


# -- rate limit -------------------------------------------------------------------------


async def test_rate_limiter_allows_a_burst_then_spaces_requests() -> None:
    rec = Recorder()
    limiter = RateLimiter(60, burst=3, clock=rec.clock, sleep=rec.sleep)
    for _ in range(6):
        await limiter.acquire()
    # 3 at once, then one a second (the fake sleep advances the fake clock)
    assert rec.delays == [1.0, 1.0, 1.0]
    rec.now += 10  # idle time refills the bucket up to the burst
    for _ in range(3):
        await limiter.acquire()
    assert rec.delays == [1.0, 1.0, 1.0]
    await limiter.acquire()
    assert rec.delays[-1] == pytest.approx(1.0)
    assert limiter.statistics().waits == 4


async def test_rate_limit_applies_to_every_request_including_retries(
    autojump_clock: trio.abc.Clock,
) -> None:
    handler, seen = sequence(
        httpx.Response(503, headers={"retry-after-ms": "0"}, json={}),
        httpx.Response(200, json=container_json(1)),
    )
    config = ApiConfig(
        base_url="https://api.test/v1", api_key=KEY, rate_limit_per_minute=6
    )  # 1 per 10 s, burst 1
    async with ApiClient(config, transport=httpx.MockTransport(handler)) as client:
        start = trio.current_time()
        await client.retrieve_container(CID)
        await client.retrieve_container(CID)
        elapsed = trio.current_time() - start
    assert len(seen) == 3 and elapsed == pytest.approx(20.0)
    assert client.statistics().rate_limit_waits == 2


# -- configuration, headers, secrecy ----------------------------------------------------


def test_config_from_env_reads_the_sdk_variables() -> None:
    env = {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1/",
        "OPENAI_ORG_ID": "org-1",
        "OPENAI_PROJECT_ID": "proj_1",
    }
    cfg = ApiConfig.from_env(env, io_timeout=5.0)
    assert (cfg.base_url, cfg.api_key, cfg.organization, cfg.project) == (
        "http://127.0.0.1:9/v1",
        KEY,
        "org-1",
        "proj_1",
    )
    assert cfg.io_timeout == 5.0
    default = ApiConfig.from_env({"OPENAI_API_KEY": "k"})
    assert default.base_url == "https://api.openai.com/v1" and default.organization is None


def test_config_without_key_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY") as info:
        ApiConfig.from_env({})
    assert "\n" not in str(info.value)
    assert ApiConfig.from_env({}, api_key="given").api_key == "given"
    with pytest.raises(ConfigError, match="unknown"):
        ApiConfig.from_env({"OPENAI_API_KEY": "k"}, nonsense=1)


async def test_requests_carry_auth_org_project_and_user_agent() -> None:
    handler, seen = sequence(httpx.Response(200, json=container_json(1)))
    async with make_client(handler, organization="org-42", project="proj_9") as client:
        await client.retrieve_container(CID)
    headers = seen[0].headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-42" and headers["openai-project"] == "proj_9"
    assert re.fullmatch(r"containerfs/\d+\.\d+\.\d+.*", headers["user-agent"])
    assert seen[0].url == httpx.URL(f"https://api.test/v1/containers/{CID}")


async def test_org_and_project_headers_absent_when_unset() -> None:
    handler, seen = sequence(httpx.Response(200, json=container_json(1)))
    async with make_client(handler) as client:
        await client.retrieve_container(CID)
    assert "openai-organization" not in seen[0].headers and "openai-project" not in seen[0].headers


async def test_key_never_appears_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handler, _ = sequence(
        httpx.Response(401, json=_envelope("Incorrect API key provided.", code="invalid_api_key")),
    )
    cfg = ApiConfig(api_key=KEY)
    assert KEY not in repr(cfg) and KEY not in str(cfg)
    async with make_client(handler) as client:
        assert KEY not in repr(client)
        with pytest.raises(AuthenticationError) as info:
            await client.retrieve_container(CID)
    texts = [
        repr(info.value),
        str(info.value),
        repr(info.value.__cause__),
        str(info.value.__cause__),
        caplog.text,
    ]
    handler2, _ = sequence(
        httpx.ReadTimeout("timed out"), httpx.Response(200, json=container_json(1))
    )
    async with make_client(handler2) as client:
        await client.retrieve_container(CID)
    texts.append(caplog.text)
    assert caplog.records  # the client did log
    assert not any(KEY in t for t in texts)
    assert logging.getLogger("httpx").level == logging.WARNING


# -- containers and files: the plain calls ----------------------------------------------


async def test_container_calls_use_the_right_routes() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(
                200, json={"id": CID, "object": "container.deleted", "deleted": True}
            )
        return httpx.Response(200, json=container_json(1) | {"memory_limit": "4g"})

    async with make_client(handler) as client:
        created = await client.create_container("box", expires_after_minutes=30, memory_limit="4g")
        await client.retrieve_container(CID)
        await client.delete_container(CID)
    assert created.memory_limit == "4g"
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/v1/containers"),
        ("GET", f"/v1/containers/{CID}"),
        ("DELETE", f"/v1/containers/{CID}"),
    ]
    assert json.loads(seen[0].content) == {
        "name": "box",
        "expires_after": {"anchor": "last_active_at", "minutes": 30},
        "memory_limit": "4g",
    }
    stats = client.statistics()
    assert stats.requests["create_container"] == stats.requests["delete_container"] == 1
    assert stats.requests["upload_file"] == 0 and stats.bytes_up > 0 and stats.bytes_down > 0


async def test_file_calls_use_the_right_routes_and_refuse_ids_that_are_not_plain() -> None:
    seen: list[httpx.Request] = []
    file_json = {
        "id": "cfile_1",
        "container_id": CID,
        "path": "/mnt/data/a",
        "bytes": 1,
        "created_at": 1,
        "source": "user",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(
                200, json={"id": "x", "object": "container.file.deleted", "deleted": True}
            )
        return httpx.Response(200, json=file_json)

    async with make_client(handler) as client:
        await client.create_file_from_id(CID, "file-abc")
        await client.retrieve_file(CID, FileId("cfile_1"))
        with pytest.raises(UnsafeId):
            await client.delete_file(CID, FileId("odd/id"))
    assert [(r.method, r.url.raw_path.decode()) for r in seen] == [
        ("POST", f"/v1/containers/{CID}/files"),
        ("GET", f"/v1/containers/{CID}/files/cfile_1"),
    ]
    assert json.loads(seen[0].content) == {"file_id": "file-abc"}


# -- upload -----------------------------------------------------------------------------


async def test_upload_is_multipart_named_as_asked(tmp_path: Path) -> None:
    src = tmp_path / "x.txt"
    src.write_bytes(b"hello world")
    api = FakeApi()
    async with make_client(api.handler) as client:
        created = await client.upload_file(CID, src, filename="d/e/x.txt")
    body = api.requests[0].content
    assert b'name="file"; filename="d/e/x.txt"' in body and b"\r\n\r\nhello world\r\n" in body
    assert created.path == "/mnt/data/d/e/x.txt" and created.bytes == 11
    assert client.statistics().bytes_up == int(api.requests[0].headers["content-length"])


class StreamingSink(httpx.AsyncBaseTransport):
    """A transport that consumes the request body chunk by chunk, as a socket would
    (``MockTransport`` reads the whole body into memory before calling its handler)."""

    def __init__(self) -> None:
        self.received = 0
        self.largest_chunk = 0
        self.stream: object = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.stream = request.stream
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for chunk in request.stream:
            self.received += len(chunk)
            self.largest_chunk = max(self.largest_chunk, len(chunk))
        file_json = {
            "id": "cfile_1",
            "path": "/mnt/data/big.bin",
            "bytes": self.received,
            "created_at": 1,
        }
        return httpx.Response(200, json=file_json)


async def test_upload_streams_from_disk_with_flat_memory(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:
        fh.truncate(size)  # sparse: costs no disk
    sink = StreamingSink()
    config = ApiConfig(base_url="https://api.test/v1", api_key=KEY)
    async with ApiClient(config, transport=sink) as client:
        tracemalloc.start()
        try:
            await client.upload_file(CID, src, filename="big.bin")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert not isinstance(sink.stream, bytes | httpx.ByteStream)  # produced lazily from the file
    assert size < sink.received < size + 1024 and sink.largest_chunk <= 1024 * 1024
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while uploading {size}"
    assert client.statistics().bytes_up == sink.received


async def test_upload_answered_503_that_stored_nothing_is_sent_again_after_a_look(
    tmp_path: Path,
) -> None:
    """A 5xx does not say the upload was refused: the files are listed before a resend."""
    src = tmp_path / "x"
    src.write_bytes(b"abc")
    api = FakeApi()
    api.fault = lambda req, n: httpx.Response(503, json=_envelope("busy")) if n == 1 else None
    async with make_client(api.handler) as client:
        await client.upload_file(CID, src, filename="x")
    assert [r.method for r in api.requests] == ["POST", "GET", "POST"] and len(api.files) == 1
    assert client.statistics().adopted == 0


async def test_upload_answered_429_is_sent_again_without_a_look(tmp_path: Path) -> None:
    """A 429 says the request was not processed: no listing, just the resend."""
    src = tmp_path / "x"
    src.write_bytes(b"abc")
    api = FakeApi()
    api.fault = lambda req, n: httpx.Response(429, json=_envelope("slow down")) if n == 1 else None
    async with make_client(api.handler) as client:
        await client.upload_file(CID, src, filename="x")
    assert [r.method for r in api.requests] == ["POST", "POST"] and len(api.files) == 1


@pytest.mark.parametrize("status", [500, 502, 504, 408])
async def test_upload_stored_then_answered_with_an_error_status_is_adopted(
    tmp_path: Path, status: int
) -> None:
    src = write_src(tmp_path)
    api = FakeApi()
    store_then_fail(api, httpx.Response(status, json=_envelope("oops")))
    async with make_client(api.handler) as client:
        created = await client.upload_file(CID, src, filename="x.txt")
    assert list(api.files) == [created.id] and client.statistics().adopted == 1
    assert [r.method for r in api.requests] == ["POST", "GET"]


async def test_upload_is_resent_after_connect_error_without_listing(tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"abc")
    api = FakeApi()

    def fault(request: httpx.Request, n: int) -> None:
        if n == 1:
            raise httpx.ConnectError("refused")

    api.fault = fault
    async with make_client(api.handler) as client:
        created = await client.upload_file(CID, src, filename="x")
    assert [r.method for r in api.requests] == ["POST", "POST"] and list(api.files) == [created.id]
    # the resent body is complete: httpx rewinds the file for every attempt
    assert api.files[created.id]["bytes"] == 3


def store_then_fail(
    api: FakeApi,
    exc: Exception | httpx.Response,
    *,
    server_path: Callable[[str], str] | None = None,
) -> None:
    """The first upload is stored by the server, then the answer is lost (an exception) or
    is an error answer (a response)."""

    def fault(request: httpx.Request, n: int) -> httpx.Response | None:
        if n == 1:
            body = request.read()
            name = re.search(rb'filename="([^"]*)"', body).group(1).decode()  # type: ignore[union-attr]
            content = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
            api.file(server_path(name) if server_path else f"/mnt/data/{name}", len(content))
            if isinstance(exc, httpx.Response):
                return exc
            raise exc
        return None

    api.fault = fault


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_ambiguous_upload_failure_adopts_the_stored_file(
    tmp_path: Path, exc: Exception
) -> None:
    src = tmp_path / "x.txt"
    src.write_bytes(b"payload")
    api = FakeApi()
    store_then_fail(api, exc)
    async with make_client(api.handler) as client:
        created = await client.upload_file(CID, src, filename="d/x.txt")
    assert list(api.files) == [created.id] and created.path == "/mnt/data/d/x.txt"
    assert [(r.method, r.url.path.rsplit("/", 1)[1]) for r in api.requests] == [
        ("POST", "files"),
        ("GET", "files"),
    ]
    assert client.statistics().adopted == 1


async def test_ambiguous_upload_is_adopted_even_with_no_retries_left(tmp_path: Path) -> None:
    src = write_src(tmp_path)
    api = FakeApi()
    store_then_fail(api, httpx.ReadTimeout("timed out"))
    async with make_client(api.handler, max_retries=0) as client:
        created = await client.upload_file(CID, src, filename="x.txt")
    assert list(api.files) == [created.id]


async def test_ambiguous_upload_recovery_survives_a_skewed_local_clock(tmp_path: Path) -> None:
    """created_at is on the server's clock: the Date header of the listing corrects for skew."""
    src = write_src(tmp_path)
    api = FakeApi()
    api.date = True
    store_then_fail(api, httpx.ReadTimeout("timed out"))
    ahead = time.time() + 3600  # our clock an hour fast
    async with make_client(api.handler, wallclock=lambda: ahead) as client:
        created = await client.upload_file(CID, src, filename="x.txt")
    assert list(api.files) == [created.id] and client.statistics().adopted == 1


def write_src(tmp_path: Path, data: bytes = b"payload") -> Path:
    src = tmp_path / "x.txt"
    src.write_bytes(data)
    return src


async def test_ambiguous_upload_adopts_a_server_prefixed_path(tmp_path: Path) -> None:
    src = tmp_path / "x.txt"
    src.write_bytes(b"payload")
    api = FakeApi()
    store_then_fail(
        api,
        httpx.ReadTimeout("t"),
        server_path=lambda name: f"/mnt/data/{'0f' * 16}-{name.rsplit('/', 1)[-1]}",
    )
    async with make_client(api.handler) as client:
        created = await client.upload_file(CID, src, filename="d/x.txt")
    assert list(api.files) == [created.id] and created.path.endswith("-x.txt")


async def test_ambiguous_upload_that_stored_nothing_is_sent_again(tmp_path: Path) -> None:
    src = tmp_path / "x.txt"
    src.write_bytes(b"payload")
    api = FakeApi()

    def fault(request: httpx.Request, n: int) -> None:
        if n == 1:
            raise httpx.WriteTimeout("gave up mid-body")

    api.fault = fault
    async with make_client(api.handler) as client:
        created = await client.upload_file(CID, src, filename="x.txt")
    assert list(api.files) == [created.id]
    assert [r.method for r in api.requests] == ["POST", "GET", "POST"]
    assert client.statistics().adopted == 0


async def test_ambiguous_upload_never_adopts_the_file_it_replaces(tmp_path: Path) -> None:
    """An identical file (same path, size, second) that this client already knew is not ours."""
    src = tmp_path / "x.txt"
    src.write_bytes(b"payload")
    api = FakeApi()
    old = api.file("/mnt/data/x.txt", 7)
    async with make_client(api.handler) as client:
        assert [f.id async for f in client.list_files(CID)] == [old["id"]]

        def fault(request: httpx.Request, n: int) -> None:
            if n == 2:
                raise httpx.ReadTimeout("lost")

        api.fault = fault
        created = await client.upload_file(CID, src, filename="x.txt")
    assert created.id != old["id"] and set(api.files) == {old["id"], created.id}


async def test_ambiguous_upload_ignores_other_names_sizes_and_old_files(tmp_path: Path) -> None:
    src = tmp_path / "x.txt"
    src.write_bytes(b"payload")
    api = FakeApi()
    api.file("/mnt/data/y.txt", 7)  # other name
    api.file("/mnt/data/x.txt", 8)  # other size
    api.file("/mnt/data/x.txt", 7, created_at=int(time.time()) - 3600)  # long before
    api.fault = lambda req, n: (_ for _ in ()).throw(httpx.ReadTimeout("t")) if n == 1 else None
    async with make_client(api.handler) as client:
        created = await client.upload_file(CID, src, filename="x.txt")
    assert len(api.files) == 4 and client.statistics().adopted == 0
    assert api.files[created.id]["bytes"] == 7


async def test_ambiguous_container_create_adopts_the_created_container() -> None:
    api = FakeApi()
    api.containers["old"] = {
        "id": "cntr_old",
        "name": "box",
        "created_at": int(time.time()) - 7200,
        "status": "running",
    }

    def fault(request: httpx.Request, n: int) -> None:
        if n == 1:
            api.containers["new"] = {
                "id": "cntr_new",
                "name": "box",
                "created_at": int(time.time()),
                "status": "running",
            }
            raise httpx.ReadTimeout("t")

    api.fault = fault
    async with make_client(api.handler) as client:
        created = await client.create_container("box")
    assert created.id == "cntr_new" and len(api.containers) == 2
    assert api.requests[1].url.params["name"] == "box"


async def test_container_create_answered_500_after_it_was_made_adopts_it() -> None:
    api = FakeApi()

    def fault(request: httpx.Request, n: int) -> httpx.Response | None:
        if n == 1:
            api.containers["new"] = {
                "id": "cntr_new",
                "name": "box",
                "created_at": int(time.time()),
                "status": "running",
            }
            return httpx.Response(500, json=_envelope("oops"))
        return None

    api.fault = fault
    async with make_client(api.handler) as client:
        created = await client.create_container("box")
    assert created.id == "cntr_new" and len(api.containers) == 1
    assert [r.method for r in api.requests] == ["POST", "GET"]


async def test_delete_gone_after_an_ambiguous_attempt_counts_as_done() -> None:
    handler, seen = sequence(
        httpx.ReadTimeout("t"), httpx.Response(404, json=_envelope("No such file"))
    )
    async with make_client(handler) as client:
        await client.delete_file(CID, FileId("cfile_1"))
    assert len(seen) == 2


async def test_delete_of_a_missing_file_is_not_found() -> None:
    async with make_client(answer(404, _envelope("No such file"))) as client:
        with pytest.raises(NotFound):
            await client.delete_file(CID, FileId("cfile_1"))


async def test_create_from_file_id_is_not_resent_after_an_ambiguous_failure() -> None:
    handler, seen = sequence(httpx.ReadTimeout("t"))
    async with make_client(handler) as client:
        with pytest.raises(ApiTimeout):
            await client.create_file_from_id(CID, "file-1")
    assert len(seen) == 1


def test_upload_path_matches() -> None:
    hexp = "0123456789abcdef" * 2
    assert upload_path_matches("/mnt/data/d/x.txt", "d/x.txt")
    assert upload_path_matches(f"/mnt/data/{hexp}-x.txt", "d/x.txt")
    assert upload_path_matches(f"/mnt/data/d/{hexp}-x.txt", "d/x.txt")
    assert upload_path_matches(f"/mnt/data/{hexp}-x.txt", "x.txt")
    assert not upload_path_matches(f"/mnt/data/e/{hexp}-x.txt", "d/x.txt")
    assert not upload_path_matches(f"/mnt/data/{hexp}-y.txt", "x.txt")
    assert not upload_path_matches("/mnt/data/x.txt", "d/x.txt")
    assert not upload_path_matches(f"/mnt/data/{hexp[:-1]}-x.txt", "x.txt")


# -- download ---------------------------------------------------------------------------


class Chunks(httpx.AsyncByteStream):
    def __init__(self, *parts: bytes | Exception) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if isinstance(part, Exception):
                raise part
            yield part


async def test_download_streams_chunks_and_counts_bytes() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-length": "6"}, stream=Chunks(b"abc", b"def"))

    async with make_client(handler) as client:
        async with client.download(CID, FileId("cfile_1")) as dl:
            data = b"".join([c async for c in dl.chunks()])
        assert (dl.start, dl.size, data) == (0, 6, b"abcdef")
        assert client.statistics().bytes_down == 6
        assert client.statistics().requests["file_content"] == 1
    assert seen[0].url.path == f"/v1/containers/{CID}/files/cfile_1/content"
    assert "range" not in seen[0].headers and seen[0].headers["accept-encoding"] == "identity"


async def test_download_with_offset_honoured_by_206() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"content-range": "bytes 4-9/10", "content-length": "6"}
        return httpx.Response(206, headers=headers, content=b"456789")

    async with make_client(handler) as client, client.download(CID, FileId("f"), offset=4) as dl:
        data = b"".join([c async for c in dl.chunks()])
    assert seen[0].headers["range"] == "bytes=4-"
    assert (dl.start, dl.size, data) == (4, 10, b"456789")


async def test_download_with_offset_ignored_by_server_starts_at_zero() -> None:
    async with (
        make_client(answer(200, "0123456789")) as client,
        client.download(CID, FileId("f"), offset=4) as dl,
    ):
        data = b"".join([c async for c in dl.chunks()])
    assert (dl.start, dl.size, data) == (0, 10, b"0123456789")


async def test_download_size_unknown_without_length() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks(b"xy"))

    async with make_client(handler) as client, client.download(CID, FileId("f")) as dl:
        assert dl.size is None and b"".join([c async for c in dl.chunks()]) == b"xy"


async def test_broken_download_stream_raises_connection_error() -> None:
    broken = httpx.RemoteProtocolError(
        "peer closed connection without sending complete message body"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "100"}, stream=Chunks(b"abc", broken))

    async with make_client(handler) as client, client.download(CID, FileId("f")) as dl:
        got = []
        with pytest.raises(ApiConnectionError) as info:
            async for chunk in dl.chunks():
                got.append(chunk)
    assert got == [b"abc"] and info.value.__cause__ is broken


async def test_download_timeout_mid_stream_raises_api_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks(b"abc", httpx.ReadTimeout("slow")))

    async with make_client(handler) as client, client.download(CID, FileId("f")) as dl:
        with pytest.raises(ApiTimeout):
            [c async for c in dl.chunks()]


async def test_download_error_answer_is_mapped_and_retried() -> None:
    handler, seen = sequence(
        httpx.Response(503, json=_envelope("busy")),
        httpx.Response(404, json=_envelope("No such file")),
    )
    async with make_client(handler) as client:
        with pytest.raises(NotFound) as info:
            async with client.download(CID, FileId("f")):
                pass
    assert len(seen) == 2 and info.value.message == "No such file"


async def test_container_expired_on_file_calls() -> None:
    async with make_client(answer(400, _envelope("Container is expired."))) as client:
        with pytest.raises(ContainerExpired) as info:
            [f async for f in client.list_files(CID)]
    assert info.value.errno == errno.EROFS and info.value.status == 400


def test_client_module_is_the_only_httpx_importer() -> None:
    root = Path(__file__).resolve().parents[1] / "containerfs"
    importers = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "emulator" not in p.parts and re.search(r"^\s*(import|from) httpx", p.read_text(), re.M)
    )
    assert importers == ["api/transport.py"]


# -- containers with options, and the Files API ------------------------------------------


async def test_create_container_sends_files_network_policy_and_skills() -> None:
    seen: list[httpx.Request] = []
    policy = {"type": "allowlist", "allowed_domains": ["pypi.org", "example.com"]}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=container_json(1) | {"network_policy": policy})

    async with make_client(handler) as client:
        created = await client.create_container(
            "box",
            network_policy=NetworkPolicy("allowlist", ("pypi.org", "example.com")),
            file_ids=("file-a", "file-b"),
            skills=("skill_1",),
        )
    assert json.loads(seen[0].content) == {
        "name": "box",
        "network_policy": policy,
        "file_ids": ["file-a", "file-b"],
        "skills": [{"type": "skill_reference", "skill_id": "skill_1"}],
    }
    assert created.network_policy == NetworkPolicy("allowlist", ("pypi.org", "example.com"))
    assert created.network_policy.describe() == "allowlist:pypi.org,example.com"


@pytest.mark.parametrize(
    ("shown", "parsed"),
    [
        ({"type": "disabled"}, NetworkPolicy("disabled")),
        (
            {"type": "allowlist", "allowed_domains": ["a.io", 3]},
            NetworkPolicy("allowlist", ("a.io",)),
        ),
        ({"type": "allowlist", "allowed_domains": "a.io"}, NetworkPolicy("allowlist")),
        ({"allowed_domains": ["a.io"]}, None),
        ("disabled", None),
        (None, None),
    ],
)
def test_a_container_network_policy_is_parsed_or_left_out(shown: Any, parsed: Any) -> None:
    assert (
        Container.from_json(container_json(1) | {"network_policy": shown}).network_policy == parsed
    )


async def test_retrieve_api_file_reads_the_files_api_and_checks_the_answer() -> None:
    seen: list[httpx.Request] = []
    answers = [
        {"id": "file-abc", "object": "file", "bytes": 12, "created_at": 5, "filename": "in.csv",
         "purpose": "user_data"},
        {"id": "file-abc", "object": "file"},  # no filename: malformed
    ]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answers[len(seen) - 1])

    async with make_client(handler) as client:
        found = await client.retrieve_api_file("file-abc")
        with pytest.raises(ApiError, match="malformed"):
            await client.retrieve_api_file("file-abc")
    assert found == ApiFile("file-abc", "in.csv", 12, "user_data", 5)
    assert [(r.method, r.url.path) for r in seen] == [("GET", "/v1/files/file-abc")] * 2
    assert client.statistics().requests["retrieve_api_file"] == 2
