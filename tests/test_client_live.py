"""ApiClient end to end against a live emulator subprocess on loopback."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from emulator_proc import EmulatorProcess

from containerfs.api.client import ApiClient, ApiConfig
from containerfs.errors import (
    ApiConnectionError,
    AuthenticationError,
    ContainerExpired,
    NotFound,
)
from containerfs.models import Container, ContainerId

HEX_PREFIXED = re.compile(r"/mnt/data/[0-9a-f]{32}-(?P<base>.+)")

Factory = Callable[..., EmulatorProcess]


class RecordingSleep:
    """Sleeps for real but briefly, recording the delays the client asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await trio.sleep(min(seconds, 0.01))


def make_client(em: EmulatorProcess, **cfg: Any) -> ApiClient:
    sleep = cfg.pop("sleep", None)
    settings: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05} | cfg
    config = ApiConfig(base_url=em.base_url, api_key=settings.pop("api_key", "sk-live"), **settings)
    return ApiClient(config, sleep=sleep) if sleep else ApiClient(config)


@pytest.fixture
async def client(emulator: EmulatorProcess) -> AsyncIterator[ApiClient]:
    async with make_client(emulator) as c:
        yield c


async def new_container(client: ApiClient, **kwargs: Any) -> Container:
    return await client.create_container(f"live-{uuid.uuid4().hex[:8]}", **kwargs)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def files_in(em: EmulatorProcess, container_id: str) -> list[dict[str, Any]]:
    for c in em.state()["containers"]:
        if c["id"] == container_id:
            files: list[dict[str, Any]] = c["files"]
            return files
    raise AssertionError(f"{container_id} not in the emulator's state")


async def download_all(
    client: ApiClient, cid: ContainerId, fid: Any, offset: int = 0
) -> tuple[int, int | None, bytes]:
    async with client.download(cid, fid, offset=offset) as dl:
        data = b"".join([chunk async for chunk in dl.chunks()])
    return dl.start, dl.size, data


async def test_every_endpoint_end_to_end(client: ApiClient, tmp_path: Path) -> None:
    box = await new_container(client, expires_after_minutes=30, memory_limit="4g")
    assert box.id.startswith("cntr_") and box.status == "running" and box.memory_limit == "4g"
    assert box.expires_after is not None and box.expires_after.minutes == 30
    assert (await client.retrieve_container(box.id)).name == box.name
    assert [c.id async for c in client.list_containers(name=box.name)] == [box.id]
    assert box.id in [c.id async for c in client.list_containers()]

    uploaded = await client.upload_file(
        box.id, write(tmp_path, "a.txt", b"alpha\n"), filename="a.txt"
    )
    assert uploaded.id.startswith("cfile_") and uploaded.bytes == 6 and uploaded.source == "user"
    assert uploaded.container_id == box.id
    assert [f.id async for f in client.list_files(box.id)] == [uploaded.id]
    assert await client.retrieve_file(box.id, uploaded.id) == uploaded
    assert (await download_all(client, box.id, uploaded.id))[2] == b"alpha\n"
    with pytest.raises(NotFound):
        await client.create_file_from_id(box.id, "file-does-not-exist")

    await client.delete_file(box.id, uploaded.id)
    with pytest.raises(NotFound):
        await client.retrieve_file(box.id, uploaded.id)
    await client.delete_container(box.id)
    with pytest.raises(NotFound) as info:
        await client.retrieve_container(box.id)
    assert info.value.request_id and info.value.type == "invalid_request_error"


async def test_client_counters_agree_with_the_server(
    emulator_factory: Factory, tmp_path: Path
) -> None:
    em = emulator_factory()
    async with make_client(em) as client:
        box = await new_container(client)
        f = await client.upload_file(box.id, write(tmp_path, "x", b"12345"), filename="x")
        [x async for x in client.list_files(box.id)]
        await download_all(client, box.id, f.id)
        await client.retrieve_file(box.id, f.id)
        stats = client.statistics()
    server = em.requests()
    assert {k: v for k, v in stats.requests.items() if v} == {k: v for k, v in server.items() if v}
    assert stats.bytes_down >= 5 and stats.retries == 0 and stats.errors == {}


async def test_listing_pages_over_more_than_100_files(
    emulator_factory: Factory, tmp_path: Path
) -> None:
    em = emulator_factory()
    src = write(tmp_path, "f", b"x")
    async with make_client(em) as client:
        box = await new_container(client)
        uploaded: set[str] = set()

        async def upload_some(first: int) -> None:
            for i in range(first, 230, 10):
                uploaded.add((await client.upload_file(box.id, src, filename=f"f{i:03}.txt")).id)

        async with trio.open_nursery() as nursery:  # concurrent uploads share the pool
            for first in range(10):
                nursery.start_soon(upload_some, first)
        em.reset_stats()
        listed = [f async for f in client.list_files(box.id)]
        desc = [f.id async for f in client.list_files(box.id, order="desc")]
    assert {f.id for f in listed} == uploaded and len(listed) == 230
    assert desc == [f.id for f in reversed(listed)]
    assert em.requests()["list_files"] == 6  # 3 pages of 100, each way


@pytest.mark.parametrize("policy", ["prefix", "keep"])
async def test_upload_download_round_trip(
    emulator_factory: Factory, tmp_path: Path, policy: str
) -> None:
    em = emulator_factory("--upload-paths", policy)
    data = os.urandom(3 * 1024 * 1024 + 17)
    async with make_client(em) as client:
        box = await new_container(client)
        f = await client.upload_file(box.id, write(tmp_path, "blob", data), filename="d/e/x.bin")
        if policy == "keep":
            assert f.path == "/mnt/data/d/e/x.bin"
        else:
            match = HEX_PREFIXED.fullmatch(f.path)
            assert match and match["base"] == "x.bin"
        assert f.bytes == len(data)
        start, size, got = await download_all(client, box.id, f.id)
        assert (start, size) == (0, len(data)) and got == data
        # without --range the server ignores Range: the whole file, from 0
        start, size, got = await download_all(client, box.id, f.id, offset=1000)
        assert (start, size) == (0, len(data)) and got == data


async def test_ranged_download_when_the_server_supports_it(
    emulator_factory: Factory, tmp_path: Path
) -> None:
    em = emulator_factory("--range")
    data = os.urandom(100_000)
    async with make_client(em) as client:
        box = await new_container(client)
        f = await client.upload_file(box.id, write(tmp_path, "blob", data), filename="r.bin")
        start, size, got = await download_all(client, box.id, f.id, offset=12_345)
    assert (start, size) == (12_345, len(data)) and got == data[12_345:]


@pytest.mark.parametrize("policy", ["prefix", "keep"])
async def test_upload_answer_dropped_after_storing_leaves_one_file(
    emulator_factory: Factory, tmp_path: Path, policy: str
) -> None:
    em = emulator_factory("--upload-paths", policy)
    async with make_client(em) as client:
        box = await new_container(client)
        em.faults([{"route": "upload_file", "action": "drop", "after_body": True}])
        f = await client.upload_file(
            box.id, write(tmp_path, "x", b"payload" * 1000), filename="d/x.txt"
        )
        assert client.statistics().adopted == 1
    stored = files_in(em, box.id)
    assert [s["id"] for s in stored] == [f.id] and f.bytes == 7000
    assert em.requests()["upload_file"] == 1


async def test_upload_stalled_past_the_io_timeout_leaves_one_file(
    emulator_factory: Factory, tmp_path: Path
) -> None:
    em = emulator_factory()
    async with make_client(em, io_timeout=0.3) as client:
        box = await new_container(client)
        em.faults([{"route": "upload_file", "action": "stall", "seconds": 1, "after_body": True}])
        with trio.fail_after(10):
            f = await client.upload_file(box.id, write(tmp_path, "x", b"abc"), filename="x.txt")
        assert client.statistics().adopted == 1 and client.statistics().retries == 0
    assert [s["id"] for s in files_in(em, box.id)] == [f.id]


async def test_upload_refused_before_storing_is_resent(
    emulator_factory: Factory, tmp_path: Path
) -> None:
    em = emulator_factory()
    async with make_client(em) as client:
        box = await new_container(client)
        em.faults([{"route": "upload_file", "action": "error", "status": 503, "count": 2}])
        f = await client.upload_file(box.id, write(tmp_path, "x", b"abc"), filename="x.txt")
        assert client.statistics().retries == 2
    assert [s["id"] for s in files_in(em, box.id)] == [f.id]


async def test_container_create_answer_dropped_leaves_one_container(
    emulator_factory: Factory,
) -> None:
    em = emulator_factory()
    async with make_client(em) as client:
        em.faults([{"route": "create_container", "action": "drop", "after_body": True}])
        box = await client.create_container("only-once")
    assert [c["id"] for c in em.state()["containers"] if c["name"] == "only-once"] == [box.id]


@pytest.mark.parametrize(
    ("rule", "delay"),
    [({"retry_after": 2}, 2.0), ({"retry_after": 5, "retry_after_ms": 1500}, 1.5)],
)
async def test_throttled_request_waits_as_the_server_asks(
    emulator_factory: Factory, rule: dict[str, Any], delay: float
) -> None:
    em = emulator_factory()
    sleep = RecordingSleep()
    async with make_client(em, sleep=sleep) as client:
        em.faults([{"route": "list_containers", "action": "throttle"} | rule])
        [c async for c in client.list_containers()]
        assert client.statistics().retries == 1
    assert sleep.delays == [delay]
    assert em.requests()["list_containers"] == 2


async def test_expired_container_raises_container_expired(
    client: ApiClient, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    box = await new_container(client)
    await client.upload_file(box.id, write(tmp_path, "x", b"abc"), filename="x.txt")
    emulator.expire(box.id)
    assert (await client.retrieve_container(box.id)).expired
    with pytest.raises(ContainerExpired) as info:
        [f async for f in client.list_files(box.id)]
    assert info.value.status == 400 and "expired" in info.value.message.lower()
    with pytest.raises(ContainerExpired):
        await client.upload_file(box.id, write(tmp_path, "y", b"abc"), filename="y.txt")


async def test_wrong_key_is_an_authentication_error(emulator_factory: Factory) -> None:
    em = emulator_factory("--api-key", "sk-right")
    async with make_client(em, api_key="sk-wrong") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.retrieve_container(ContainerId("cntr_x"))
        assert info.value.code == "invalid_api_key" and client.statistics().retries == 0
        assert "sk-wrong" not in str(info.value) and "sk-right" not in str(info.value)
    async with make_client(em, api_key="sk-right") as client:
        assert [c async for c in client.list_containers()] == []


async def test_dropped_download_raises_connection_error(
    emulator_factory: Factory, tmp_path: Path
) -> None:
    em = emulator_factory()
    async with make_client(em) as client:
        box = await new_container(client)
        f = await client.upload_file(
            box.id, write(tmp_path, "x", os.urandom(200_000)), filename="x"
        )
        em.faults([{"route": "file_content", "action": "drop", "drop_after_bytes": 1000}])
        with pytest.raises(ApiConnectionError) as info:
            await download_all(client, box.id, f.id)
    assert isinstance(info.value.__cause__, httpx.TransportError)


async def test_unreachable_endpoint_fails_fast() -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ApiConfig(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=2, backoff_base=0.05
    )
    async with ApiClient(config) as client:
        start = trio.current_time()
        with pytest.raises(ApiConnectionError) as info:
            await client.retrieve_container(ContainerId("cntr_x"))
        elapsed = trio.current_time() - start
    assert isinstance(info.value.__cause__, httpx.ConnectError) and not info.value.ambiguous
    assert client.statistics().retries == 2 and elapsed < 2.0
