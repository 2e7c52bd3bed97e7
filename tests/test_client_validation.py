"""The API client refuses to believe what breaks the API's rules (issue 12), unit level.

Every answer here comes from an ``httpx.MockTransport`` handler, so a test controls exactly
what the "server" says: ids that are no plain tokens, a 200 with an error envelope where a
list belongs, pagination that never ends, absurd sizes. The mount-level rows are in
``test_hostile_server.py``.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from containerfs.api.client import ApiClient, ApiConfig
from containerfs.errors import MalformedAnswer, ServerError, UnsafeId
from containerfs.models import MAX_LISTED_BYTES, ContainerFile, ContainerId, FileId, Page

CID = ContainerId("cntr_" + "a" * 48)
OTHER = "cntr_" + "b" * 48


async def _no_sleep(seconds: float) -> None:
    await trio.lowlevel.checkpoint()


def make_client(handler: Callable[[httpx.Request], httpx.Response], **cfg: Any) -> ApiClient:
    config = ApiConfig(base_url="https://api.test/v1", api_key="sk-test", **cfg)
    return ApiClient(
        config, transport=httpx.MockTransport(handler), sleep=_no_sleep, rng=random.Random(1)
    )


def file_json(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "id": f"cfile_{n:032x}",
        "object": "container.file",
        "container_id": CID,
        "path": f"/mnt/data/f{n}.txt",
        "bytes": n,
        "created_at": 1_700_000_000,
        "source": "user",
    } | overrides


def page(items: list[Any], *, has_more: bool = False, **extra: Any) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": has_more} | extra


class Recording:
    """A handler that answers ``answer(request)`` and records every request."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


# -- ids ----------------------------------------------------------------------------------

UNSAFE_IDS = ["..", ".", "", "a/b", "a%2Fb", "a?b", "a#b", "x" * 129, "cfile_1 ", "é"]


@pytest.mark.parametrize("bad", UNSAFE_IDS)
async def test_no_request_is_built_with_an_id_that_is_not_a_plain_token(bad: str) -> None:
    server = Recording(lambda r: httpx.Response(200, json={"id": "x", "deleted": True}))
    async with make_client(server) as client:
        for call in (
            client.delete_file(CID, FileId(bad)),
            client.retrieve_file(CID, FileId(bad)),
            client.delete_container(ContainerId(bad)),
            client.retrieve_container(ContainerId(bad)),
        ):
            with pytest.raises(UnsafeId) as caught:
                await call
            assert caught.value.errno == errno.EIO
        with pytest.raises(UnsafeId):
            async with client.download(CID, FileId(bad)):
                pass
        with pytest.raises(UnsafeId):
            [f async for f in client.list_files(ContainerId(bad))]
    assert server.requests == []


async def test_a_file_listed_with_id_dotdot_is_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = [file_json(1), file_json(2, id=".."), file_json(3)]
    server = Recording(lambda r: httpx.Response(200, json=page(items)))
    caplog.set_level(logging.WARNING, logger="containerfs.api.client")
    async with make_client(server) as client:
        first = [f.id async for f in client.list_files(CID)]
        second = [f.id async for f in client.list_files(CID)]
        errors = client.statistics().errors
    assert first == second == [file_json(1)["id"], file_json(3)["id"]]
    warned = [r for r in caplog.records if "'..'" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]
    assert errors["BadItem"] == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"bytes": 1e30},
        {"bytes": -1},
        {"bytes": MAX_LISTED_BYTES + 1},
        {"bytes": 2.5},
        {"bytes": "10"},
        {"bytes": True},
        {"path": None},
        {"path": 7},
        {"id": None},
        {"created_at": "yesterday"},
        {"created_at": 1e30},
        {"container_id": OTHER},
        {"container_id": ".."},
    ],
    ids=repr,
)
async def test_one_bad_item_spoils_only_itself(bad: dict[str, Any]) -> None:
    items = [file_json(1), file_json(2) | bad, "not an object", file_json(3)]
    server = Recording(lambda r: httpx.Response(200, json=page(items)))
    async with make_client(server) as client:
        listed = [f async for f in client.list_files(CID)]
    assert [f.id for f in listed] == [file_json(1)["id"], file_json(3)["id"]]
    assert all(f.container_id == CID for f in listed)


async def test_null_or_integral_sizes_and_a_missing_container_id_are_accepted() -> None:
    items = [file_json(1, bytes=None), file_json(2, bytes=5.0), file_json(3, container_id="")]
    server = Recording(lambda r: httpx.Response(200, json=page(items)))
    async with make_client(server) as client:
        listed = [f async for f in client.list_files(CID)]
    assert [f.bytes for f in listed] == [None, 5, 3]
    assert {f.container_id for f in listed} == {CID}


async def test_a_retrieved_file_of_another_container_is_malformed() -> None:
    server = Recording(lambda r: httpx.Response(200, json=file_json(1, container_id=OTHER)))
    async with make_client(server) as client:
        with pytest.raises(MalformedAnswer):
            await client.retrieve_file(CID, FileId(file_json(1)["id"]))


# -- list answers -------------------------------------------------------------------------

ENVELOPE = {"error": {"message": "internal", "type": "server_error", "param": None, "code": None}}


@pytest.mark.parametrize(
    "answer",
    [
        ENVELOPE,
        {"object": "list", "has_more": False},
        {"object": "list", "data": None, "has_more": False},
        {"object": "list", "data": {"0": file_json(1)}, "has_more": False},
        page([file_json(1)], has_more="false"),  # type: ignore[arg-type]
        page([file_json(1)], has_more=True, last_id="../x"),
        [file_json(1)],
    ],
    ids=[
        "error-envelope",
        "no-data",
        "null-data",
        "object-data",
        "string-has-more",
        "unsafe-cursor",
        "bare-list",
    ],
)
async def test_a_list_answer_without_a_list_is_malformed_never_empty(answer: Any) -> None:
    server = Recording(lambda r: httpx.Response(200, json=answer))
    async with make_client(server) as client:
        with pytest.raises(MalformedAnswer) as caught:
            [f async for f in client.list_files(CID)]
        with pytest.raises(MalformedAnswer):
            [c async for c in client.list_containers()]
    assert caught.value.errno == errno.EIO
    assert len(server.requests) == 2  # a malformed answer is not retried as if transient


async def test_an_error_envelope_with_an_error_status_stays_a_server_error() -> None:
    server = Recording(lambda r: httpx.Response(500, json=ENVELOPE))
    async with make_client(server, max_retries=1) as client:
        with pytest.raises(ServerError):
            [f async for f in client.list_files(CID)]
    assert len(server.requests) == 2


async def test_endless_pagination_with_alternating_cursors_ends_in_eio() -> None:
    cursors = iter(["cfile_aaaa", "cfile_bbbb"] * 1000)

    def forever(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page([file_json(1)], has_more=True, last_id=next(cursors)))

    server = Recording(forever)
    async with make_client(server) as client:
        with pytest.raises(MalformedAnswer, match="did not advance") as caught:
            [f async for f in client.list_files(CID)]
    assert caught.value.errno == errno.EIO
    assert [r.url.params.get("after") for r in server.requests] == [
        None,
        "cfile_aaaa",
        "cfile_bbbb",
    ]


async def test_pagination_past_the_page_bound_ends_in_eio() -> None:
    counter = iter(range(1, 1_000_000))

    def fresh_cursor_each_time(request: httpx.Request) -> httpx.Response:
        n = next(counter)
        return httpx.Response(200, json=page([file_json(n)], has_more=True))

    server = Recording(fresh_cursor_each_time)
    async with make_client(server, max_pages=5) as client:
        seen: list[ContainerFile] = []
        with pytest.raises(MalformedAnswer, match="5 pages"):
            async for f in client.list_files(CID):
                seen.append(f)
    assert len(server.requests) == 5 and len(seen) == 5


async def test_a_page_of_only_bad_items_still_continues_from_its_last_item() -> None:
    pages = iter(
        [
            page([file_json(1, bytes=-1), file_json(2, bytes=-1)], has_more=True),
            page([file_json(3)]),
        ]
    )
    server = Recording(lambda r: httpx.Response(200, json=next(pages)))
    async with make_client(server) as client:
        listed = [f.id async for f in client.list_files(CID)]
    assert listed == [file_json(3)["id"]]
    assert server.requests[1].url.params["after"] == file_json(2)["id"]


def test_page_from_json_sets_bad_items_aside_with_their_reason() -> None:
    parsed = Page.from_json(page([file_json(1), file_json(2, bytes=1e30)]), ContainerFile.from_json)
    assert [f.id for f in parsed.data] == [file_json(1)["id"]]
    assert len(parsed.rejected) == 1 and "bytes" in parsed.rejected[0]
