"""The emulator app in-process (``httpx.ASGITransport``): what the SDK cannot show.

Id formats, request ids, validation params, upload-path policies, Range, fault rules,
counters, expiry, persistence and seeding. Behaviour that needs a real socket (dropped
connections, the command line) is tested against a subprocess at the end.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulator_proc import EmulatorProcess
from starlette.applications import Starlette

from containerfs.emulator import Emulator, EmulatorConfig, create_app
from containerfs.emulator.faults import ConnectionDropped
from containerfs.emulator.seed import apply_seed, load_seed

REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
CONTAINER_ID = re.compile(r"^cntr_[0-9a-f]{48}$")
FILE_ID = re.compile(r"^cfile_[0-9a-f]{32}$")
PREFIXED = re.compile(r"^/mnt/data/[0-9a-f]{32}-(.+)$")

MakeApp = Callable[..., Starlette]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    """``make_app(data_dir=None, **config)``: an app over its own (or the given) data dir."""
    apps: list[Starlette] = []

    def make(data_dir: Path | None = None, **settings: Any) -> Starlette:
        data_dir = data_dir or tmp_path / f"data{len(apps)}"
        data_dir.mkdir(exist_ok=True)
        app = create_app(EmulatorConfig(data_dir=data_dir, **settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.emulator.close()


def connect(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://emulator/v1",
        headers={"authorization": "Bearer sk-test"},
    )


@pytest.fixture
async def api(make_app: MakeApp) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(make_app()) as client:
        yield client


def emulator_of(client: httpx.AsyncClient) -> Emulator:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    emu: Emulator = transport.app.state.emulator  # type: ignore[attr-defined]
    return emu


async def new_container(api: httpx.AsyncClient, name: str = "c", **body: Any) -> str:
    response = await api.post("/containers", json={"name": name, **body})
    assert response.status_code == 200, response.text
    cid: str = response.json()["id"]
    return cid


async def upload(
    api: httpx.AsyncClient, cid: str, filename: str, content: bytes = b"data"
) -> dict[str, Any]:
    response = await api.post(f"/containers/{cid}/files", files={"file": (filename, content)})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_error(
    response: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


# -- objects, ids, envelope -------------------------------------------------------------------


async def test_objects_have_the_documented_shape_and_id_formats(api: httpx.AsyncClient) -> None:
    container = (await api.post("/containers", json={"name": "shape"})).json()
    assert CONTAINER_ID.match(container["id"])
    assert set(container) == {
        "id", "object", "name", "created_at", "status", "last_active_at",
        "expires_after", "memory_limit", "network_policy",
    }  # fmt: skip
    assert container["expires_after"] == {"anchor": "last_active_at", "minutes": 20}
    file = await upload(api, container["id"], "a.txt", b"abc")
    assert FILE_ID.match(file["id"])
    assert set(file) == {"id", "object", "container_id", "created_at", "bytes", "path", "source"}
    assert (file["object"], file["bytes"], file["source"]) == ("container.file", 3, "user")


async def test_every_response_has_a_request_id(api: httpx.AsyncClient) -> None:
    for response in [
        await api.get("/containers"),
        await api.get("/containers/cntr_nope"),
        await api.get("/no/such/route"),
        await api.get("http://emulator/_emulator/stats"),
    ]:
        assert REQUEST_ID.match(response.headers["x-request-id"])


async def test_unknown_routes_and_methods_answer_invalid_url(api: httpx.AsyncClient) -> None:
    error = assert_error(await api.get("/widgets"), 404)
    assert error["message"] == "Invalid URL (GET /v1/widgets)"
    assert error["type"] == "invalid_request_error"
    assert_error(await api.put("/containers"), 404)


async def test_unknown_ids_answer_404_in_the_envelope(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/containers/cntr_missing"), 404)
    assert_error(await api.delete("/containers/cntr_missing"), 404)
    assert_error(await api.get("/containers/cntr_missing/files"), 404)
    cid = await new_container(api)
    for method in ("GET", "DELETE"):
        assert_error(await api.request(method, f"/containers/{cid}/files/cfile_missing"), 404)
    assert_error(await api.get(f"/containers/{cid}/files/cfile_missing/content"), 404)


async def test_deletes_answer_deleted_objects(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    fid = (await upload(api, cid, "x"))["id"]
    response = await api.delete(f"/containers/{cid}/files/{fid}")
    assert response.json() == {"id": fid, "object": "container.file.deleted", "deleted": True}
    response = await api.delete(f"/containers/{cid}")
    assert response.json() == {"id": cid, "object": "container.deleted", "deleted": True}


async def test_deleting_a_container_removes_its_blobs(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    await upload(api, cid, "x")
    blobs = emulator_of(api).store.blob_dir
    assert len(list(blobs.iterdir())) == 1
    await api.delete(f"/containers/{cid}")
    assert list(blobs.iterdir()) == []


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "name", "missing_required_parameter"),
        ({"name": 3}, "name", "invalid_type"),
        ({"name": "x", "colour": "red"}, "colour", "unknown_parameter"),
        ({"name": "x", "memory_limit": "2g"}, "memory_limit", "invalid_value"),
        ({"name": "x", "expires_after": 5}, "expires_after", "invalid_type"),
        ({"name": "x", "expires_after": {"minutes": 5}}, "expires_after.anchor", None),
        ({"name": "x", "expires_after": {"anchor": "last_active_at"}}, "expires_after.minutes",
         None),
        ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 1441}},
         "expires_after.minutes", "integer_above_max_value"),
        ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": "5"}},
         "expires_after.minutes", "invalid_type"),
        ({"name": "x", "network_policy": {"type": "allowlist"}},
         "network_policy.allowed_domains", None),
        ({"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": []}},
         "network_policy.allowed_domains", None),
        ({"name": "x", "file_ids": "file-1"}, "file_ids", "invalid_type"),
    ],
)  # fmt: skip
async def test_create_container_validation_names_the_param(
    api: httpx.AsyncClient, body: dict[str, Any], param: str, code: str | None
) -> None:
    assert_error(await api.post("/containers", json=body), 400, param=param, code=code)


async def test_create_container_with_unknown_file_ids_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/containers", json={"name": "x", "file_ids": ["file-1"]})
    assert_error(response, 404, param="file_ids")


async def test_malformed_json_bodies_are_400(api: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    error = assert_error(await api.post("/containers", content=b"{nope", headers=headers), 400)
    assert "could not parse the JSON body" in error["message"]
    assert_error(await api.post("/containers", content=b"[1, 2]", headers=headers), 400)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("order=sideways", "order"),
        ("after=cntr_unknown", "after"),
    ],
)
async def test_list_parameters_are_validated(
    api: httpx.AsyncClient, query: str, param: str
) -> None:
    assert_error(await api.get(f"/containers?{query}"), 400, param=param)
    cid = await new_container(api)
    assert_error(await api.get(f"/containers/{cid}/files?{query}"), 400, param=param)


# -- listings ---------------------------------------------------------------------------------


async def test_empty_list_has_null_ids(api: httpx.AsyncClient) -> None:
    body = (await api.get("/containers")).json()
    assert body == {
        "object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False,
    }  # fmt: skip


async def test_order_is_stable_for_equal_timestamps(api: httpx.AsyncClient) -> None:
    ids = [await new_container(api, f"c{i}") for i in range(30)]
    desc = (await api.get("/containers?limit=100")).json()["data"]
    asc = (await api.get("/containers?limit=100&order=asc")).json()["data"]
    assert [c["id"] for c in asc] == ids
    assert [c["id"] for c in desc] == ids[::-1]
    assert len((await api.get("/containers")).json()["data"]) == 20  # default limit


async def test_listing_follows_after_cursor(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    ids = [(await upload(api, cid, f"f{i}"))["id"] for i in range(5)]
    seen, after, pages = [], None, 0
    while True:
        query = "limit=2&order=asc" + (f"&after={after}" if after else "")
        page = (await api.get(f"/containers/{cid}/files?{query}")).json()
        seen += [f["id"] for f in page["data"]]
        assert page["first_id"] == page["data"][0]["id"]
        assert page["last_id"] == page["data"][-1]["id"]
        pages += 1
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert (seen, pages) == (ids, 3)


async def test_cursor_of_a_deleted_object_keeps_its_place(api: httpx.AsyncClient) -> None:
    ids = [await new_container(api, f"c{i}") for i in range(4)]
    await api.delete(f"/containers/{ids[1]}")
    page = (await api.get(f"/containers?order=asc&after={ids[1]}")).json()
    assert [c["id"] for c in page["data"]] == ids[2:]


async def test_containers_filter_by_name(api: httpx.AsyncClient) -> None:
    a = await new_container(api, "alpha")
    await new_container(api, "beta")
    assert [c["id"] for c in (await api.get("/containers?name=alpha")).json()["data"]] == [a]


# -- uploads ----------------------------------------------------------------------------------


async def test_prefix_policy_keeps_only_the_basename(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    for filename in ("report.txt", "d/e/report.txt", "/abs/report.txt"):
        match = PREFIXED.match((await upload(api, cid, filename))["path"])
        assert match and match.group(1) == "report.txt"


@pytest.mark.parametrize(
    ("filename", "path"),
    [
        ("x.txt", "/mnt/data/x.txt"),
        ("d/e/x.txt", "/mnt/data/d/e/x.txt"),
        ("./d//x.txt", "/mnt/data/d/x.txt"),
        ("/mnt/data/out/./y.png", "/mnt/data/out/y.png"),
        ("/tmp/elsewhere.txt", "/tmp/elsewhere.txt"),
    ],
)
async def test_keep_policy_keeps_the_requested_path(
    make_app: MakeApp, filename: str, path: str
) -> None:
    async with connect(make_app(upload_paths="keep")) as api:
        cid = await new_container(api)
        assert (await upload(api, cid, filename))["path"] == path


@pytest.mark.parametrize("filename", ["../x.txt", "d/../../x", "/mnt/data/../etc/passwd", "d/"])
async def test_keep_policy_refuses_unusable_paths(make_app: MakeApp, filename: str) -> None:
    async with connect(make_app(upload_paths="keep")) as api:
        cid = await new_container(api)
        response = await api.post(f"/containers/{cid}/files", files={"file": (filename, b"x")})
        assert_error(response, 400, param="file")
        assert list(emulator_of(api).store.blob_dir.iterdir()) == []


async def test_keep_policy_never_overwrites(make_app: MakeApp) -> None:
    async with connect(make_app(upload_paths="keep")) as api:
        cid = await new_container(api)
        first = await upload(api, cid, "same.txt", b"one")
        second = await upload(api, cid, "same.txt", b"two!")
        assert first["id"] != second["id"] and first["path"] == second["path"]
        for file, content in ((first, b"one"), (second, b"two!")):
            got = await api.get(f"/containers/{cid}/files/{file['id']}/content")
            assert got.content == content


async def test_upload_without_a_file_is_400(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    url = f"/containers/{cid}/files"
    assert_error(await api.post(url, files={"other": ("x", b"x")}), 400, param="file")
    assert_error(await api.post(url, json={}), 400, param="file")
    assert_error(await api.post(url, data={"purpose": "x"}), 400, param="file")


async def test_upload_by_file_id_is_404(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    url = f"/containers/{cid}/files"
    assert_error(await api.post(url, json={"file_id": "file-abc"}), 404, param="file_id")
    response = await api.post(url, data={"file_id": "file-abc"}, files={"other": ("x", b"")})
    assert_error(response, 404, param="file_id")


async def test_upload_memory_stays_bounded(api: httpx.AsyncClient, tmp_path: Path) -> None:
    cid = await new_container(api)
    source = tmp_path / "big.bin"
    size = 32 << 20
    with source.open("wb") as f:
        f.truncate(size)
    tracemalloc.start()
    try:
        with source.open("rb") as f:
            response = await api.post(f"/containers/{cid}/files", files={"file": ("big", f)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.json()["bytes"] == size
    assert peak < 8 << 20, f"peak {peak} bytes while uploading {size}"


# -- content ----------------------------------------------------------------------------------


async def test_content_has_length_and_ignores_range_by_default(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    fid = (await upload(api, cid, "r.bin", b"0123456789"))["id"]
    url = f"/containers/{cid}/files/{fid}/content"
    response = await api.get(url, headers={"range": "bytes=2-5"})
    assert response.status_code == 200
    assert response.content == b"0123456789"
    assert response.headers["content-length"] == "10"
    assert "content-range" not in response.headers


@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        ("bytes=2-5", 206, b"2345", "bytes 2-5/10"),
        ("bytes=7-", 206, b"789", "bytes 7-9/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
        ("bytes=0-1,4-5", 200, b"0123456789", None),
        ("lines=1-2", 200, b"0123456789", None),
        ("bytes=10-", 416, None, "bytes */10"),
    ],
)
async def test_range_requests_when_enabled(
    make_app: MakeApp, header: str, status: int, body: bytes | None, content_range: str | None
) -> None:
    async with connect(make_app(range_requests=True)) as api:
        cid = await new_container(api)
        fid = (await upload(api, cid, "r.bin", b"0123456789"))["id"]
        response = await api.get(
            f"/containers/{cid}/files/{fid}/content", headers={"range": header}
        )
        assert response.status_code == status
        assert response.headers.get("content-range") == content_range
        if body is not None:
            assert response.content == body
            assert response.headers["content-length"] == str(len(body))
            assert response.headers["accept-ranges"] == "bytes"


async def test_range_can_be_switched_on_at_run_time(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    fid = (await upload(api, cid, "r.bin", b"0123456789"))["id"]
    await api.post("http://emulator/_emulator/config", json={"range": True})
    response = await api.get(
        f"/containers/{cid}/files/{fid}/content", headers={"range": "bytes=1-1"}
    )
    assert (response.status_code, response.content) == (206, b"1")


# -- expiry -----------------------------------------------------------------------------------


async def test_expired_container_keeps_metadata_and_loses_files(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    fid = (await upload(api, cid, "x"))["id"]
    expired = await api.post(f"http://emulator/_emulator/containers/{cid}/expire")
    assert expired.json()["status"] == "expired"
    assert list(emulator_of(api).store.blob_dir.iterdir()) == []
    assert (await api.get(f"/containers/{cid}")).json()["status"] == "expired"
    for method, url in [
        ("GET", f"/containers/{cid}/files"),
        ("GET", f"/containers/{cid}/files/{fid}"),
        ("GET", f"/containers/{cid}/files/{fid}/content"),
        ("DELETE", f"/containers/{cid}/files/{fid}"),
    ]:
        error = assert_error(await api.request(method, url), 400)
        assert error["message"] == "Container is expired."
    response = await api.post(f"/containers/{cid}/files", files={"file": ("y", b"y")})
    assert_error(response, 400)
    assert (await api.delete(f"/containers/{cid}")).status_code == 200


async def test_any_container_call_refreshes_last_active_at(api: httpx.AsyncClient) -> None:
    cid = await new_container(api, expires_after={"anchor": "last_active_at", "minutes": 1})
    before = (await api.get(f"/containers/{cid}")).json()["last_active_at"]
    for url in (f"/containers/{cid}/files", f"/containers/{cid}"):
        emulator_of(api).config.clock.advance(50)
        body = (await api.get(url)).json()
        assert "error" not in body
    container = (await api.get(f"/containers/{cid}")).json()
    assert container["status"] == "running"
    assert container["last_active_at"] >= before + 100
    await api.post("http://emulator/_emulator/clock", json={"advance_seconds": 60})
    assert (await api.get(f"/containers/{cid}")).json()["status"] == "expired"


async def test_listing_containers_does_not_refresh_them(api: httpx.AsyncClient) -> None:
    cid = await new_container(api, expires_after={"anchor": "last_active_at", "minutes": 1})
    for _ in range(3):
        emulator_of(api).config.clock.advance(25)
        await api.get("/containers")
    assert (await api.get(f"/containers/{cid}")).json()["status"] == "expired"


# -- auth -------------------------------------------------------------------------------------


async def test_missing_and_wrong_keys_get_the_two_401s(make_app: MakeApp) -> None:
    app = make_app(api_key="sk-proj-correct-horse")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://emulator/v1"
    ) as api:
        missing = assert_error(await api.get("/containers"), 401)
        assert missing["code"] is None and "didn't provide an API key" in missing["message"]
        wrong = await api.get("/containers", headers={"authorization": "Bearer sk-proj-wrongkey"})
        error = assert_error(wrong, 401, code="invalid_api_key")
        assert "sk-proj-wrongkey" not in error["message"]
        assert "Incorrect API key provided: sk-*********gkey." in error["message"]
        right = {"authorization": "Bearer sk-proj-correct-horse"}
        assert (await api.get("/containers", headers=right)).status_code == 200
        assert (await api.get("http://emulator/_emulator/stats")).status_code == 200


async def test_any_key_or_none_is_accepted_by_default(make_app: MakeApp) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app()), base_url="http://emulator/v1"
    ) as api:
        assert (await api.get("/containers")).status_code == 200


# -- faults and counters ----------------------------------------------------------------------


async def set_faults(api: httpx.AsyncClient, rules: list[dict[str, Any]]) -> None:
    response = await api.post("http://emulator/_emulator/faults", json=rules)
    assert response.status_code == 200, response.text


async def test_error_rule_fires_count_times(api: httpx.AsyncClient) -> None:
    await set_faults(api, [{"route": "list_containers", "action": "error", "status": 503,
                            "count": 2}])  # fmt: skip
    statuses = [(await api.get("/containers")).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert (await api.post("/containers", json={"name": "x"})).status_code == 200


async def test_throttle_rule_sends_retry_after(api: httpx.AsyncClient) -> None:
    await set_faults(api, [{"route": "*", "action": "throttle", "retry_after": 2,
                            "retry_after_ms": 1500}])  # fmt: skip
    response = await api.get("/containers")
    error = assert_error(response, 429, code="rate_limit_exceeded")
    assert error["type"] == "requests"
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "1500"


async def test_rule_method_filter_and_unlimited_count(api: httpx.AsyncClient) -> None:
    await set_faults(api, [{"route": "*", "method": "post", "action": "error", "count": None}])
    for _ in range(3):
        assert (await api.post("/containers", json={"name": "x"})).status_code == 500
    assert (await api.get("/containers")).status_code == 200
    await api.delete("http://emulator/_emulator/faults")
    assert (await api.post("/containers", json={"name": "x"})).status_code == 200


async def test_after_body_error_still_stores_the_upload(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    await set_faults(api, [{"route": "upload_file", "action": "error", "after_body": True}])
    response = await api.post(f"/containers/{cid}/files", files={"file": ("a.txt", b"abc")})
    assert_error(response, 500)
    state = (await api.get("http://emulator/_emulator/state")).json()
    [container] = state["containers"]
    assert [PREFIXED.match(f["path"]).group(1) for f in container["files"]] == ["a.txt"]  # type: ignore[union-attr]


async def test_error_before_body_does_not_store_the_upload(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    await set_faults(api, [{"route": "upload_file", "action": "error"}])
    response = await api.post(f"/containers/{cid}/files", files={"file": ("a.txt", b"abc")})
    assert_error(response, 500)
    assert (await api.get(f"/containers/{cid}/files")).json()["data"] == []


async def test_stall_delays_the_answer(api: httpx.AsyncClient) -> None:
    await set_faults(api, [{"route": "list_containers", "action": "stall", "seconds": 0.05}])
    assert (await api.get("/containers")).status_code == 200
    assert (await api.get("http://emulator/_emulator/stats")).json()["faults_applied"] == 1


async def test_drop_in_process_raises_connection_dropped(api: httpx.AsyncClient) -> None:
    await set_faults(api, [{"route": "list_containers", "action": "drop"}])
    with pytest.raises(ConnectionDropped):
        await api.get("/containers")


@pytest.mark.parametrize(
    "rule",
    [
        {"route": "nope", "action": "error"},
        {"route": "*", "action": "explode"},
        {"route": "*", "action": "error", "count": 0},
        {"route": "*", "action": "error", "colour": "red"},
    ],
)
async def test_bad_fault_rules_are_refused(api: httpx.AsyncClient, rule: dict[str, Any]) -> None:
    response = await api.post("http://emulator/_emulator/faults", json=[rule])
    assert response.status_code == 400


async def test_random_failures_follow_the_configured_rates(api: httpx.AsyncClient) -> None:
    await api.post("http://emulator/_emulator/config", json={"fail_rate": 1.0})
    assert (await api.get("/containers")).status_code == 500
    config = {"fail_rate": 0, "throttle_rate": 1, "throttle_retry_after": 3}
    await api.post("http://emulator/_emulator/config", json=config)
    response = await api.get("/containers")
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")
    bad = await api.post("http://emulator/_emulator/config", json={"fail_rate": 2})
    assert_error(bad, 400, param="fail_rate")


async def test_stats_count_requests_by_route(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    fid = (await upload(api, cid, "a", b"12345"))["id"]
    await api.get(f"/containers/{cid}/files/{fid}/content")
    await api.get("/containers")
    await api.get("/containers")
    await api.get("/bogus")
    stats = (await api.get("http://emulator/_emulator/stats")).json()
    assert stats["requests"] == {
        "create_container": 1, "upload_file": 1, "file_content": 1, "list_containers": 2,
        "unknown_route": 1,
    }  # fmt: skip
    assert stats["total"] == 6
    assert (stats["bytes_uploaded"], stats["bytes_downloaded"]) == (5, 5)
    log = (await api.get("http://emulator/_emulator/requests")).json()["requests"]
    assert [r["route"] for r in log][:2] == ["create_container", "upload_file"]
    assert all("authorization" not in r["headers"] for r in log)
    await api.post("http://emulator/_emulator/reset-stats")
    stats = (await api.get("http://emulator/_emulator/stats")).json()
    assert (stats["requests"], stats["total"]) == ({}, 0)


async def test_admin_can_add_assistant_files(api: httpx.AsyncClient) -> None:
    cid = await new_container(api)
    body = {"path": "/mnt/data/out/plot.png", "content_base64": base64.b64encode(b"\x89P").decode(),
            "report_bytes": False}  # fmt: skip
    added = (await api.post(f"http://emulator/_emulator/containers/{cid}/files", json=body)).json()
    assert (added["source"], added["bytes"], added["path"]) == (
        "assistant", None, "/mnt/data/out/plot.png"
    )  # fmt: skip
    content = await api.get(f"/containers/{cid}/files/{added['id']}/content")
    assert content.content == b"\x89P"


# -- persistence and seeds --------------------------------------------------------------------


async def test_state_survives_a_restart(make_app: MakeApp, tmp_path: Path) -> None:
    data_dir = tmp_path / "persist"
    data_dir.mkdir()
    first = make_app(data_dir)
    async with connect(first) as api:
        cid = await new_container(api, "kept")
        fid = (await upload(api, cid, "k.txt", b"kept bytes"))["id"]
    first.state.emulator.close()
    async with connect(make_app(data_dir)) as api:
        assert (await api.get(f"/containers/{cid}")).json()["name"] == "kept"
        content = await api.get(f"/containers/{cid}/files/{fid}/content")
        assert content.content == b"kept bytes"
        # New objects still sort after the old ones.
        newer = await new_container(api, "newer")
        assert (await api.get("/containers?limit=1")).json()["data"][0]["id"] == newer


def write_seed(tmp_path: Path, seed: dict[str, Any]) -> Path:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    return path


SEED = {
    "containers": [
        {
            "name": "analysis",
            "files": [
                {"path": "/mnt/data/out/chart.png", "content": "text", "source": "assistant",
                 "report_bytes": False},
                {"path": "in/raw.bin", "content_base64": base64.b64encode(b"\0\1\2").decode()},
            ],
        },
        {"name": "empty", "memory_limit": "4g"},
    ]
}  # fmt: skip


async def test_seed_file_is_loaded_once(make_app: MakeApp, tmp_path: Path) -> None:
    seed = load_seed(str(write_seed(tmp_path, SEED)))
    app = make_app()
    emu: Emulator = app.state.emulator
    assert apply_seed(emu.store, seed) is True
    assert apply_seed(emu.store, seed) is False
    async with connect(app) as api:
        containers = (await api.get("/containers?order=asc")).json()["data"]
        assert [(c["name"], c["memory_limit"]) for c in containers] == [
            ("analysis", "1g"), ("empty", "4g")
        ]  # fmt: skip
        cid = containers[0]["id"]
        files = (await api.get(f"/containers/{cid}/files?order=asc")).json()["data"]
        assert [(f["path"], f["bytes"], f["source"]) for f in files] == [
            ("/mnt/data/out/chart.png", None, "assistant"),
            ("/mnt/data/in/raw.bin", 3, "user"),
        ]
        chart = files[0]["id"]
        assert (await api.get(f"/containers/{cid}/files/{chart}")).json()["bytes"] is None
        content = await api.get(f"/containers/{cid}/files/{chart}/content")
        assert content.content == b"text"


def test_demo_seed_has_the_documented_sample() -> None:
    demo = load_seed("demo")
    [analysis, scratch] = demo.containers
    assert (analysis.name, scratch.name) == ("analysis", "scratch")
    assert [(f.filename, f.purpose) for f in demo.files] == [("cities.csv", "user_data")]
    paths = {f.path: f for f in analysis.files}
    assert any(PREFIXED.match(p) and p.endswith("-data.csv") for p in paths)
    assert paths["/mnt/data/out/chart.png"].source == "assistant"
    assert paths["/mnt/data/out/summary.md"].report_bytes is False
    assert [f.path for f in scratch.files] == ["/mnt/data/notes.txt"]


# -- Files API --------------------------------------------------------------------------------

API_FILE_ID = re.compile(r"^file-[A-Za-z0-9]{22}$")


async def api_upload(
    api: httpx.AsyncClient,
    filename: str = "in.txt",
    content: bytes = b"input",
    **fields: str,
) -> httpx.Response:
    return await api.post(
        "/files", files={"file": (filename, content)}, data={"purpose": "user_data", **fields}
    )


async def new_api_file(api: httpx.AsyncClient, filename: str, content: bytes) -> str:
    response = await api_upload(api, filename, content)
    assert response.status_code == 200, response.text
    fid: str = response.json()["id"]
    return fid


async def test_files_api_objects_have_the_documented_shape(api: httpx.AsyncClient) -> None:
    created = (await api_upload(api, "in.csv", b"a,b\n")).json()
    assert API_FILE_ID.match(created["id"])
    assert set(created) == {
        "id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status",
        "status_details",
    }  # fmt: skip
    assert (created["object"], created["bytes"], created["filename"]) == ("file", 4, "in.csv")
    listed = (await api.get("/files")).json()
    assert set(listed) == {"object", "data", "first_id", "last_id", "has_more"}
    assert listed["object"] == "list" and listed["has_more"] is False
    assert listed["first_id"] == listed["last_id"] == created["id"]
    content = await api.get(f"/files/{created['id']}/content")
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.content == b"a,b\n"
    deleted = (await api.delete(f"/files/{created['id']}")).json()
    assert deleted == {"id": created["id"], "object": "file", "deleted": True}


@pytest.mark.parametrize(
    ("request_kwargs", "param", "code"),
    [
        ({"files": {"file": ("a.txt", b"a")}}, "purpose", "missing_required_parameter"),
        ({"data": {"purpose": "user_data"}, "files": {"other": ("a.txt", b"a")}}, "file",
         "missing_required_parameter"),
        ({"data": {"purpose": "batch_output"}, "files": {"file": ("a.txt", b"a")}}, "purpose",
         "invalid_value"),
        ({"data": {"purpose": "user_data", "colour": "red"}, "files": {"file": ("a", b"a")}},
         "colour", "unknown_parameter"),
        ({"data": {"purpose": "user_data", "expires_after[anchor]": "last_active_at",
                   "expires_after[seconds]": "3600"}, "files": {"file": ("a", b"a")}},
         "expires_after.anchor", "invalid_value"),
        ({"data": {"purpose": "user_data", "expires_after[anchor]": "created_at",
                   "expires_after[seconds]": "soon"}, "files": {"file": ("a", b"a")}},
         "expires_after.seconds", "invalid_type"),
        ({"json": {"purpose": "user_data"}}, "file", None),
    ],
)  # fmt: skip
async def test_file_upload_validation_names_the_param(
    api: httpx.AsyncClient, request_kwargs: dict[str, Any], param: str, code: str | None
) -> None:
    response = await api.post("/files", **request_kwargs)
    assert_error(response, 400, param=param, code=code)
    assert (await api.get("/files")).json()["data"] == []
    emu = emulator_of(api)
    assert list(emu.store.blob_dir.iterdir()) == [] and list(emu.store.incoming_dir.iterdir()) == []


async def test_files_list_bounds_and_cursor(api: httpx.AsyncClient) -> None:
    ids = [await new_api_file(api, f"f{i}", b"x") for i in range(3)]
    assert [f["id"] for f in (await api.get("/files")).json()["data"]] == ids[::-1]
    assert_error(await api.get("/files?limit=10001"), 400, param="limit")
    assert_error(await api.get("/files?limit=0"), 400, param="limit")
    assert_error(await api.get("/files?after=file-nothere"), 400, param="after")
    page = (await api.get(f"/files?order=asc&limit=1&after={ids[0]}")).json()
    assert [f["id"] for f in page["data"]] == [ids[1]] and page["has_more"] is True


async def test_file_past_its_expiry_is_gone(api: httpx.AsyncClient) -> None:
    fields = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    fid = (await api_upload(api, "in.txt", b"input", **fields)).json()["id"]
    kept = await new_api_file(api, "kept.txt", b"kept")
    emu = emulator_of(api)
    emu.config.clock.advance(3601)
    assert_error(await api.get(f"/files/{fid}"), 404, param="id")
    assert not emu.store.blob_path(fid).exists()  # its bytes went with it
    assert [f["id"] for f in (await api.get("/files")).json()["data"]] == [kept]
    cid = await new_container(api)
    response = await api.post(f"/containers/{cid}/files", json={"file_id": fid})
    assert_error(response, 404, param="file_id")


async def test_file_ids_copy_bytes_in_without_counting_uploads(api: httpx.AsyncClient) -> None:
    data = bytes(range(256)) * 1000
    fid = await new_api_file(api, "table.bin", data)
    emu = emulator_of(api)
    uploaded = emu.stats.bytes_uploaded
    response = await api.post("/containers", json={"name": "made", "file_ids": [fid, fid]})
    assert response.status_code == 200, response.text
    cid = response.json()["id"]
    files = (await api.get(f"/containers/{cid}/files?order=asc")).json()["data"]
    assert [(f["path"], f["bytes"], f["source"]) for f in files] == [
        ("/mnt/data/table.bin", len(data), "user")
    ] * 2
    assert len({f["id"] for f in files}) == 2
    assert emu.stats.bytes_uploaded == uploaded  # nothing crossed the wire
    await api.delete(f"/files/{fid}")
    assert not emu.store.blob_path(fid).exists()
    for f in files:
        assert (await api.get(f"/containers/{cid}/files/{f['id']}/content")).content == data


async def test_unknown_file_id_at_creation_leaves_nothing_behind(api: httpx.AsyncClient) -> None:
    fid = await new_api_file(api, "a.txt", b"a")
    response = await api.post("/containers", json={"name": "x", "file_ids": [fid, "file-no"]})
    assert_error(response, 404, param="file_ids")
    assert (await api.get("/containers")).json()["data"] == []
    assert [p.name for p in emulator_of(api).store.blob_dir.iterdir()] == [fid]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"file_id": 7}, "file_id", "invalid_type"),
        ({"file_id": "file-x", "path": "/mnt/data/x"}, "path", "unknown_parameter"),
        ({}, "file", "missing_required_parameter"),
    ],
)
async def test_file_id_body_validation(
    api: httpx.AsyncClient, body: dict[str, Any], param: str, code: str
) -> None:
    cid = await new_container(api)
    response = await api.post(f"/containers/{cid}/files", json=body)
    assert_error(response, 400, param=param, code=code)


async def test_file_id_as_a_multipart_field_copies_too(api: httpx.AsyncClient) -> None:
    fid = await new_api_file(api, "form.txt", b"from a form")
    cid = await new_container(api)
    # A plain form field (no filename) in a multipart body, as some clients send it.
    response = await api.post(f"/containers/{cid}/files", files=[("file_id", (None, fid))])
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "/mnt/data/form.txt"


async def test_file_id_into_an_expired_container_is_refused(api: httpx.AsyncClient) -> None:
    fid = await new_api_file(api, "a.txt", b"a")
    cid = await new_container(api)
    await api.post(f"/containers/{cid}/files", json={"file_id": fid})
    await api.post(f"http://emulator/_emulator/containers/{cid}/expire")
    response = await api.post(f"/containers/{cid}/files", json={"file_id": fid})
    assert_error(response, 400)
    assert response.json()["error"]["message"] == "Container is expired."
    assert [p.name for p in emulator_of(api).store.blob_dir.iterdir()] == [fid]


async def test_creation_options_are_stored_and_secrets_are_not(api: httpx.AsyncClient) -> None:
    fid = await new_api_file(api, "a.txt", b"a")
    skills = [
        {"type": "skill_reference", "skill_id": "skill_1", "version": "3"},
        {"type": "inline", "name": "n", "description": "d",
         "source": {"type": "base64", "media_type": "application/zip", "data": "UEsFBg=="}},
    ]  # fmt: skip
    policy = {
        "type": "allowlist",
        "allowed_domains": ["a.com"],
        "domain_secrets": [{"domain": "a.com", "name": "KEY", "value": "hunter2"}],
    }
    body = {"name": "opts", "file_ids": [fid], "skills": skills, "network_policy": policy}
    response = await api.post("/containers", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["network_policy"] == {"type": "allowlist", "allowed_domains": ["a.com"]}
    assert "hunter2" not in response.text
    state = (await api.get("http://emulator/_emulator/state")).json()
    (container,) = state["containers"]
    assert container["created_with"] == {
        "file_ids": [fid],
        "skills": [skills[0], {"type": "inline", "name": "n", "description": "d"}],
    }
    assert "hunter2" not in json.dumps(state)
    assert [f["id"] for f in state["files"]] == [fid]


async def test_bad_inline_skill_payload_is_refused(api: httpx.AsyncClient) -> None:
    source = {"type": "base64", "media_type": "application/zip", "data": "not base64!"}
    skill = {"type": "inline", "name": "n", "description": "d", "source": source}
    response = await api.post("/containers", json={"name": "x", "skills": [skill]})
    assert_error(response, 400, param="skills[0].source.data")


async def test_files_api_survives_a_restart(make_app: MakeApp, tmp_path: Path) -> None:
    data_dir = tmp_path / "persist-files"
    data_dir.mkdir()
    first = make_app(data_dir)
    async with connect(first) as api:
        fid = await new_api_file(api, "keep.txt", b"kept")
    first.state.emulator.close()
    async with connect(make_app(data_dir)) as api:
        assert (await api.get(f"/files/{fid}")).json()["filename"] == "keep.txt"
        assert (await api.get(f"/files/{fid}/content")).content == b"kept"


async def test_seed_files_are_copied_into_seed_containers(
    make_app: MakeApp, tmp_path: Path
) -> None:
    seed = {
        "files": [
            {"id": "file-inputs1", "filename": "inputs.csv", "content": "a,b\n"},
            {"filename": "loose.bin", "purpose": "assistants", "content_base64": "AAE="},
        ],
        "containers": [{"name": "made", "file_ids": ["file-inputs1"],
                        "files": [{"path": "out.txt", "content": "o"}]}],
    }  # fmt: skip
    app = make_app()
    assert apply_seed(app.state.emulator.store, load_seed(str(write_seed(tmp_path, seed))))
    async with connect(app) as api:
        files = (await api.get("/files?order=asc")).json()["data"]
        assert [(f["filename"], f["purpose"], f["bytes"]) for f in files] == [
            ("inputs.csv", "user_data", 4), ("loose.bin", "assistants", 2)
        ]  # fmt: skip
        assert files[0]["id"] == "file-inputs1"
        (container,) = (await api.get("/containers")).json()["data"]
        listed = (await api.get(f"/containers/{container['id']}/files?order=asc")).json()
        assert [f["path"] for f in listed["data"]] == ["/mnt/data/inputs.csv", "/mnt/data/out.txt"]
        copy = listed["data"][0]["id"]
        content = await api.get(f"/containers/{container['id']}/files/{copy}/content")
        assert content.content == b"a,b\n"


# -- live server: sockets, signals, the command line ------------------------------------------


def test_drop_breaks_the_connection_mid_body(emulator: EmulatorProcess) -> None:
    with httpx.Client(base_url=emulator.base_url) as client:
        cid = client.post("/containers", json={"name": "drop"}).json()["id"]
        data = bytes(range(256)) * 4096
        fid = client.post(f"/containers/{cid}/files", files={"file": ("d", data)}).json()["id"]
        emulator.faults([{"route": "file_content", "action": "drop"}])
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"/containers/{cid}/files/{fid}/content")
        again = client.get(f"/containers/{cid}/files/{fid}/content")
        assert again.content == data
        client.delete(f"/containers/{cid}")
    assert "Traceback" not in emulator.stderr


def test_drop_after_body_stores_the_upload(emulator: EmulatorProcess) -> None:
    with httpx.Client(base_url=emulator.base_url) as client:
        cid = client.post("/containers", json={"name": "ambiguous"}).json()["id"]
        emulator.faults([{"route": "upload_file", "action": "drop", "after_body": True}])
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(f"/containers/{cid}/files", files={"file": ("u.txt", b"uploaded")})
        files = client.get(f"/containers/{cid}/files").json()["data"]
        assert len(files) == 1 and files[0]["path"].endswith("-u.txt")
        client.delete(f"/containers/{cid}")


def test_stall_lets_a_client_time_out(emulator: EmulatorProcess) -> None:
    emulator.faults([{"route": "list_containers", "action": "stall", "seconds": 2}])
    with httpx.Client(base_url=emulator.base_url, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/containers")
        emulator.clear_faults()
        assert client.get("/containers").status_code == 200


def test_restart_keeps_state(
    emulator_factory: Callable[..., EmulatorProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "kept"
    first = emulator_factory("--data-dir", str(data_dir), "--seed", "demo")
    before = first.state()["containers"]
    assert sorted(c["name"] for c in before) == ["analysis", "scratch"]
    assert first.stop() == 0
    second = emulator_factory("--data-dir", str(data_dir), "--seed", "demo")
    assert second.state()["containers"] == before  # kept, and not seeded a second time


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_server_cleanly(
    emulator_factory: Callable[..., EmulatorProcess], sig: signal.Signals
) -> None:
    emu = emulator_factory()
    emu.proc.send_signal(sig)
    assert emu.proc.wait(timeout=10) == 0
    assert emu.proc.stdout is not None and emu.proc.stdout.read() == ""
    assert emu.stderr == ""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "containerfs", "emulator", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "cannot read seed file"), ("{not json", "not valid JSON"),
     ('{"containers": [{"files": []}]}', "containers[0].name"),
     ('{"containers": [{"name": "c", "file_ids": ["file-x"]}]}', "containers[0].file_ids"),
     ('{"files": [{"filename": "a", "purpose": "fun"}]}', "files[0].purpose"),
     ('{"files": [{"id": "cfile_1", "filename": "a"}]}', "files[0].id")],
)  # fmt: skip
def test_bad_seed_is_a_one_line_error(tmp_path: Path, content: str | None, expected: str) -> None:
    seed = tmp_path / "seed.json"
    if content is not None:
        seed.write_text(content)
    result = run_cli("--seed", str(seed), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and expected in result.stderr


def test_stop_does_not_wait_for_a_stalled_request(
    emulator_factory: Callable[..., EmulatorProcess],
) -> None:
    emu = emulator_factory()
    emu.faults([{"route": "list_containers", "action": "stall", "seconds": 60}])
    outcomes: list[object] = []

    def call() -> None:
        try:
            outcomes.append(httpx.get(f"{emu.base_url}/containers", timeout=30).status_code)
        except httpx.HTTPError as exc:
            outcomes.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while emu.requests().get("list_containers", 0) == 0:
        time.sleep(0.01)
    started = time.monotonic()
    emu.proc.send_signal(signal.SIGTERM)
    assert emu.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    caller.join(timeout=10)
    assert outcomes and outcomes[0] != 200  # a 500 or a closed connection
    assert "Traceback" not in emu.stderr
