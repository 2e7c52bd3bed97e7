"""Contract tests: the official ``openai`` SDK against a live emulator on loopback.

The SDK is a client nobody here wrote; if it cannot tell the emulator from the service, the
emulator's reading of the spec agrees with OpenAI's own.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from emulator_proc import EmulatorProcess

CONTAINER_ID_LEN = len("cntr_") + 48
FILE_ID_LEN = len("cfile_") + 32


@pytest.fixture
def client(emulator: EmulatorProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture
def container_name() -> str:
    return f"sdk-{uuid.uuid4().hex[:12]}"


def test_container_lifecycle(client: openai.OpenAI, container_name: str) -> None:
    created = client.containers.create(
        name=container_name,
        expires_after={"anchor": "last_active_at", "minutes": 30},
        memory_limit="4g",
    )
    assert created.id.startswith("cntr_") and len(created.id) == CONTAINER_ID_LEN
    assert created.name == container_name
    assert created.status == "running"
    assert created.object == "container"
    assert created.expires_after is not None and created.expires_after.minutes == 30
    assert created.expires_after.anchor == "last_active_at"
    assert created.memory_limit == "4g"
    assert created.last_active_at is not None and created.last_active_at >= created.created_at

    fetched = client.containers.retrieve(created.id)
    assert fetched.id == created.id and fetched.name == container_name

    listed = client.containers.list(name=container_name)
    assert [c.id for c in listed.data] == [created.id]

    client.containers.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(created.id)
    assert client.containers.list(name=container_name).data == []


def test_container_defaults(client: openai.OpenAI, container_name: str) -> None:
    created = client.containers.create(name=container_name)
    assert created.expires_after is not None and created.expires_after.minutes == 20
    assert created.memory_limit == "1g"
    assert created.network_policy is not None and created.network_policy.type == "disabled"


def test_network_policy_allowlist_round_trips(client: openai.OpenAI, container_name: str) -> None:
    created = client.containers.create(
        name=container_name,
        network_policy={"type": "allowlist", "allowed_domains": ["example.com"]},
    )
    assert created.network_policy is not None
    assert created.network_policy.type == "allowlist"
    assert created.network_policy.allowed_domains == ["example.com"]


def test_auto_pagination_over_containers(client: openai.OpenAI, container_name: str) -> None:
    ids = [client.containers.create(name=container_name).id for _ in range(5)]
    page = client.containers.list(name=container_name, limit=2)
    assert len(page.data) == 2 and page.has_more
    assert [c.id for c in page] == list(reversed(ids))  # default order: newest first
    ascending = client.containers.list(name=container_name, limit=2, order="asc")
    assert [c.id for c in ascending] == ids


def test_file_lifecycle(client: openai.OpenAI, container_name: str) -> None:
    cid = client.containers.create(name=container_name).id
    created = client.containers.files.create(cid, file=("notes.txt", b"hello world\n"))
    assert created.id.startswith("cfile_") and len(created.id) == FILE_ID_LEN
    assert created.object == "container.file"
    assert created.container_id == cid
    assert created.bytes == 12
    assert created.source == "user"
    prefix, _, basename = created.path.removeprefix("/mnt/data/").partition("-")
    assert created.path.startswith("/mnt/data/") and basename == "notes.txt"
    assert len(prefix) == 32 and all(c in "0123456789abcdef" for c in prefix)

    fetched = client.containers.files.retrieve(created.id, container_id=cid)
    assert fetched.path == created.path and fetched.bytes == 12

    listed = client.containers.files.list(cid)
    assert [f.id for f in listed.data] == [created.id]

    content = client.containers.files.content.retrieve(created.id, container_id=cid)
    assert content.content == b"hello world\n"

    client.containers.files.delete(created.id, container_id=cid)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(created.id, container_id=cid)
    assert client.containers.files.list(cid).data == []


def test_file_auto_pagination_and_order(client: openai.OpenAI, container_name: str) -> None:
    cid = client.containers.create(name=container_name).id
    ids = [client.containers.files.create(cid, file=(f"f{i}.txt", b"x" * i)).id for i in range(6)]
    assert [f.id for f in client.containers.files.list(cid, limit=2)] == list(reversed(ids))
    assert [f.id for f in client.containers.files.list(cid, limit=2, order="asc")] == ids


def test_large_upload_and_download_are_byte_identical(
    client: openai.OpenAI, container_name: str
) -> None:
    data = os.urandom(24 << 20)
    cid = client.containers.create(name=container_name).id
    created = client.containers.files.create(cid, file=("big.bin", data))
    assert created.bytes == len(data)
    content = client.containers.files.content.retrieve(created.id, container_id=cid)
    assert hashlib.sha256(content.content).digest() == hashlib.sha256(data).digest()


def test_unknown_ids_raise_not_found(client: openai.OpenAI, container_name: str) -> None:
    missing = "cntr_" + "0" * 48
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.retrieve(missing)
    assert info.value.status_code == 404
    assert info.value.body is not None
    cid = client.containers.create(name=container_name).id
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve("cfile_" + "0" * 32, container_id=cid)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.content.retrieve("cfile_" + "0" * 32, container_id=cid)
    with pytest.raises(openai.NotFoundError):
        client.containers.delete(missing)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.create(cid, file_id="file-abc123")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"memory_limit": "2g"}, "memory_limit"),
        ({"expires_after": {"anchor": "last_active_at", "minutes": 0}}, "expires_after.minutes"),
        ({"expires_after": {"anchor": "created_at", "minutes": 5}}, "expires_after.anchor"),
        ({"network_policy": {"type": "open"}}, "network_policy.type"),
    ],
)
def test_invalid_create_raises_bad_request(
    client: openai.OpenAI, container_name: str, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.containers.create(name=container_name, **kwargs)  # type: ignore[arg-type]
    assert info.value.param == param
    assert info.value.type == "invalid_request_error"


def test_limit_out_of_range_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.containers.list(limit=101)
    assert info.value.param == "limit"


def test_expired_container_keeps_metadata_and_loses_files(
    client: openai.OpenAI, emulator: EmulatorProcess, container_name: str
) -> None:
    cid = client.containers.create(name=container_name).id
    fid = client.containers.files.create(cid, file=("a.txt", b"a")).id
    emulator.expire(cid)
    assert client.containers.retrieve(cid).status == "expired"
    assert [c.status for c in client.containers.list(name=container_name)] == ["expired"]
    for call in (
        lambda: client.containers.files.list(cid),
        lambda: client.containers.files.retrieve(fid, container_id=cid),
        lambda: client.containers.files.content.retrieve(fid, container_id=cid),
        lambda: client.containers.files.create(cid, file=("b.txt", b"b")),
    ):
        with pytest.raises(openai.BadRequestError, match="Container is expired"):
            call()
    client.containers.delete(cid)


def test_idle_container_expires_after_its_minutes(
    emulator_factory: Callable[..., EmulatorProcess],
) -> None:
    emu = emulator_factory()
    with openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0) as client:
        short = client.containers.create(
            name="short", expires_after={"anchor": "last_active_at", "minutes": 1}
        ).id
        long = client.containers.create(name="long").id
        emu.advance_clock(45)
        client.containers.retrieve(short)  # activity refreshes last_active_at
        emu.advance_clock(45)
        assert client.containers.retrieve(short).status == "running"
        emu.advance_clock(61)
        assert client.containers.retrieve(short).status == "expired"
        assert client.containers.retrieve(long).status == "running"


def test_api_key_is_enforced_when_configured(
    emulator_factory: Callable[..., EmulatorProcess],
) -> None:
    emu = emulator_factory("--api-key", "sk-right-key-1234")
    with openai.OpenAI(base_url=emu.base_url, api_key="sk-wrong-key-9876", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as info:
            c.containers.list()
        assert info.value.code == "invalid_api_key"
        assert "sk-wrong-key-9876" not in str(info.value.body)
    with openai.OpenAI(base_url=emu.base_url, api_key="sk-right-key-1234", max_retries=0) as c:
        assert c.containers.list().data == []


def test_api_key_can_come_from_the_environment(
    emulator_factory: Callable[..., EmulatorProcess],
) -> None:
    emu = emulator_factory(env={"CONTAINERFS_EMULATOR_API_KEY": "sk-env-key-5678"})
    cmdline = Path(f"/proc/{emu.proc.pid}/cmdline").read_bytes()
    assert b"sk-env-key-5678" not in cmdline
    wrong = openai.OpenAI(base_url=emu.base_url, api_key="sk-wrong-key-9876", max_retries=0)
    with wrong as c, pytest.raises(openai.AuthenticationError):
        c.files.list()
    with openai.OpenAI(base_url=emu.base_url, api_key="sk-env-key-5678", max_retries=0) as c:
        assert list(c.files.list()) == []
