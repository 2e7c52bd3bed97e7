"""Contract tests: the official ``openai`` SDK against a live emulator on loopback.

The SDK is a client nobody here wrote; if it cannot tell the emulator from the service, the
emulator's reading of the spec agrees with OpenAI's own.
"""

from __future__ import annotations

import hashlib
import os
import re
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


# -- Files API, and containers made from its files ---------------------------------------------

API_FILE_ID = re.compile(r"^file-[A-Za-z0-9]{22}$")
THIRTY_DAYS = 30 * 24 * 3600


def test_files_api_lifecycle(client: openai.OpenAI) -> None:
    data = os.urandom(3 << 20)
    created = client.files.create(file=("inputs.bin", data), purpose="user_data")
    assert API_FILE_ID.match(created.id)
    assert (created.object, created.filename, created.purpose) == (
        "file",
        "inputs.bin",
        "user_data",
    )
    assert created.bytes == len(data) and created.status == "processed"
    assert created.expires_at is None

    fetched = client.files.retrieve(created.id)
    assert (fetched.id, fetched.bytes, fetched.filename) == (created.id, len(data), "inputs.bin")
    assert created.id in [f.id for f in client.files.list()]
    content = client.files.content(created.id)
    assert hashlib.sha256(content.content).digest() == hashlib.sha256(data).digest()

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    for call in (
        lambda: client.files.retrieve(created.id),
        lambda: client.files.content(created.id),
        lambda: client.files.delete(created.id),
    ):
        with pytest.raises(openai.NotFoundError, match="No such File object"):
            call()
    assert created.id not in [f.id for f in client.files.list()]


def test_files_list_paginates_newest_first_and_filters_by_purpose(
    client: openai.OpenAI,
) -> None:
    purposes = ["assistants", "user_data", "assistants", "vision", "assistants"]
    ids = [
        client.files.create(file=(f"f{i}.txt", b"x" * i), purpose=p).id  # type: ignore[arg-type]
        for i, p in enumerate(purposes)
    ]
    page = client.files.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    assert [f.id for f in page if f.id in ids] == list(reversed(ids))
    ascending = [f.id for f in client.files.list(limit=2, order="asc") if f.id in ids]
    assert ascending == ids
    assistants = [f.id for f in client.files.list(purpose="assistants") if f.id in ids]
    assert assistants == [ids[4], ids[2], ids[0]]


def test_file_expiry_follows_purpose_and_expires_after(client: openai.OpenAI) -> None:
    batch = client.files.create(file=("b.jsonl", b"{}\n"), purpose="batch")
    assert batch.expires_at == batch.created_at + THIRTY_DAYS
    timed = client.files.create(
        file=("t.txt", b"t"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert timed.expires_at == timed.created_at + 7200


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"purpose": "bogus"}, "purpose"),
        ({"purpose": "assistants_output"}, "purpose"),
        (
            {"purpose": "user_data", "expires_after": {"anchor": "created_at", "seconds": 60}},
            "expires_after.seconds",
        ),
    ],
)
def test_invalid_file_upload_raises_bad_request(
    client: openai.OpenAI, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("x.txt", b"x"), **kwargs)  # type: ignore[arg-type]
    assert info.value.param == param


def test_container_created_with_file_ids_and_options(
    client: openai.OpenAI, container_name: str
) -> None:
    first, second = os.urandom(1 << 20), b"city,population\nLyon,522250\n"
    ids = [
        client.files.create(file=("model.bin", first), purpose="user_data").id,
        client.files.create(file=("cities.csv", second), purpose="assistants").id,
    ]
    created = client.containers.create(
        name=container_name,
        file_ids=ids,
        memory_limit="16g",
        expires_after={"anchor": "last_active_at", "minutes": 90},
        network_policy={
            "type": "allowlist",
            "allowed_domains": ["pypi.org", "example.com"],
            "domain_secrets": [{"domain": "example.com", "name": "TOKEN", "value": "s3cret"}],
        },
        skills=[{"type": "skill_reference", "skill_id": "skill_abc", "version": "latest"}],
    )
    assert created.memory_limit == "16g"
    assert created.expires_after is not None and created.expires_after.minutes == 90
    assert created.network_policy is not None
    assert created.network_policy.type == "allowlist"
    assert created.network_policy.allowed_domains == ["pypi.org", "example.com"]
    assert "s3cret" not in created.model_dump_json()
    fetched = client.containers.retrieve(created.id)
    assert fetched.network_policy is not None
    assert fetched.network_policy.model_dump() == created.network_policy.model_dump()

    files = list(client.containers.files.list(created.id, order="asc"))
    assert [(f.path, f.source, f.bytes) for f in files] == [
        ("/mnt/data/model.bin", "user", len(first)),
        ("/mnt/data/cities.csv", "user", len(second)),
    ]
    # Copies, not references: deleting the Files-API file leaves the container's intact.
    client.files.delete(ids[0])
    for f, data in zip(files, (first, second), strict=True):
        assert f.id.startswith("cfile_") and f.id not in ids
        content = client.containers.files.content.retrieve(f.id, container_id=created.id)
        assert content.content == data


def test_container_file_created_from_a_file_id(client: openai.OpenAI, container_name: str) -> None:
    data = os.urandom(2 << 20)
    source = client.files.create(file=("weights.npy", data), purpose="user_data")
    cid = client.containers.create(name=container_name).id
    created = client.containers.files.create(cid, file_id=source.id)
    assert created.object == "container.file" and created.container_id == cid
    assert (created.path, created.source, created.bytes) == (
        "/mnt/data/weights.npy",
        "user",
        len(data),
    )
    assert [f.id for f in client.containers.files.list(cid)] == [created.id]
    content = client.containers.files.content.retrieve(created.id, container_id=cid)
    assert hashlib.sha256(content.content).digest() == hashlib.sha256(data).digest()


def test_unknown_file_ids_raise_not_found_and_create_nothing(
    client: openai.OpenAI, container_name: str
) -> None:
    known = client.files.create(file=("k.txt", b"k"), purpose="user_data").id
    with pytest.raises(openai.NotFoundError, match="No such File object: file-missing") as info:
        client.containers.create(name=container_name, file_ids=[known, "file-missing"])
    assert info.value.param == "file_ids"
    assert client.containers.list(name=container_name).data == []
    cid = client.containers.create(name=container_name).id
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.files.create(cid, file_id="file-missing")
    assert info.value.param == "file_id"
    assert client.containers.files.list(cid).data == []
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve("file-missing")
    assert info.value.param == "id"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"network_policy": {"type": "allowlist", "allowed_domains": []}},
         "network_policy.allowed_domains"),
        ({"network_policy": {"type": "allowlist"}}, "network_policy.allowed_domains"),
        ({"network_policy": {"type": "disabled", "allowed_domains": ["a.com"]}},
         "network_policy.allowed_domains"),
        ({"network_policy": {"type": "allowlist", "allowed_domains": ["a.com"],
                             "domain_secrets": [{"domain": "a.com", "name": "K"}]}},
         "network_policy.domain_secrets[0].value"),
        ({"skills": [{"type": "skill_reference"}]}, "skills[0].skill_id"),
        ({"skills": [{"type": "skill_reference", "skill_id": "s" * 65}]}, "skills[0].skill_id"),
        ({"skills": [{"type": "skill_reference", "skill_id": "s", "version": "0"}]},
         "skills[0].version"),
        ({"skills": [{"type": "plugin"}]}, "skills[0].type"),
        ({"skills": [{"type": "inline", "name": "n", "description": "d",
                      "source": {"type": "base64", "media_type": "application/x-tar",
                                 "data": "UEsDBA=="}}]},
         "skills[0].source.media_type"),
        ({"file_ids": "file-abc"}, "file_ids"),
    ],
)  # fmt: skip
def test_invalid_container_options_raise_bad_request(
    client: openai.OpenAI, container_name: str, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.containers.create(name=container_name, **kwargs)  # type: ignore[arg-type]
    assert info.value.param == param
    assert client.containers.list(name=container_name).data == []


def test_inline_skill_is_accepted(client: openai.OpenAI, container_name: str) -> None:
    created = client.containers.create(
        name=container_name,
        skills=[
            {
                "type": "inline",
                "name": "csv-tools",
                "description": "helpers for CSV files",
                "source": {"type": "base64", "media_type": "application/zip", "data": "UEsFBg=="},
            }
        ],
    )
    assert client.containers.retrieve(created.id).status == "running"


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
