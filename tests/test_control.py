"""The control channel of ``containerfs new``/``import`` without a kernel mount: the socket
and its protocol (``daemon/control.py``), and the daemon's commands (``daemon/commands.py``)
over the layers built as the daemon builds them, on the emulator app in-process.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from fs_harness import CTX, Fs, build_fs, close_fs
from hypothesis import given, settings
from hypothesis import strategies as st

from containerfs.api.client import ApiClient
from containerfs.daemon.commands import MountCommands
from containerfs.daemon.control import (
    ImportFile,
    NewContainer,
    Request,
    call,
    parse_network,
    request_from_json,
    socket_path,
)
from containerfs.daemon.control_server import serve_control
from containerfs.errors import ControlError
from containerfs.models import Container, ContainerId, NetworkPolicy
from containerfs.ns.created import CreationLog
from containerfs.ns.inodes import ROOT_INODE
from containerfs.ns.namespace import Namespace
from containerfs.state import CreatedWith, State

# ---- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        NewContainer("box"),
        NewContainer(
            "box",
            file_ids=("file-a", "file-b"),
            memory_limit="16g",
            expires_after_minutes=90,
            network_policy=NetworkPolicy("allowlist", ("example.com", "*.pypi.org")),
            skills=("skill_1",),
        ),
        NewContainer("box", network_policy=NetworkPolicy("disabled")),
        ImportFile(("box", "sub dir"), "file-a"),
        ImportFile(("box",), "file-a", name="ünïcode name.txt"),
    ],
)
def test_requests_survive_their_json_form(request_: Request) -> None:
    assert request_from_json(json.loads(json.dumps(request_.to_json()))) == request_


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"command": "rm -rf"},
        {"command": "new"},
        {"command": "new", "name": 3},
        {"command": "new", "name": "a/b"},
        {"command": "new", "name": "cntr_0123"},  # looks like an id: never shown as itself
        {"command": "new", "name": "box~cntr_0123"},
        {"command": "new", "name": "\ud800"},  # JSON can carry a lone surrogate
        {"command": "new", "name": "x", "memory_limit": "3g"},
        {"command": "new", "name": "x", "expires_after_minutes": True},
        {"command": "new", "name": "x", "expires_after_minutes": -5},
        {"command": "new", "name": "x", "file_ids": "file-a"},
        {"command": "new", "name": "x", "file_ids": ["../etc"]},
        {"command": "new", "name": "x", "network_policy": {"type": "open"}},
        {"command": "new", "name": "x", "network_policy": {"type": "allowlist"}},
        {"command": "new", "name": "x", "skills": ["has space"]},
        {"command": "import", "directory": [], "file_id": "file-a"},
        {"command": "import", "directory": ["..", "x"], "file_id": "file-a"},
        {"command": "import", "directory": ["box"], "file_id": "file/a"},
        {"command": "import", "directory": ["box"], "file_id": "file-a", "name": "."},
        {"command": "import", "directory": ["\udcff"], "file_id": "file-a", "name": "\ud800x"},
        {"command": "import", "directory": ["box"], "file_id": "file-a", "name": "x" * 256},
    ],
)
def test_malformed_requests_are_refused_with_a_control_error(data: object) -> None:
    with pytest.raises(ControlError):
        request_from_json(data)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_FIELDS = st.sampled_from(
    ["name", "file_ids", "memory_limit", "expires_after_minutes", "network_policy", "skills",
     "directory", "file_id"]
)  # fmt: skip


@given(
    command=st.sampled_from(["new", "import", "other"]),
    fields=st.dictionaries(_FIELDS, _JSON, max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_any_json_request_is_a_valid_request_or_a_control_error(
    command: str, fields: dict[str, object]
) -> None:
    try:
        request = request_from_json({"command": command, **fields})
    except ControlError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert request_from_json(request.to_json()) == request


@pytest.mark.parametrize(
    ("spec", "policy"),
    [
        ("disabled", NetworkPolicy("disabled")),
        ("allow:example.com", NetworkPolicy("allowlist", ("example.com",))),
        ("allow:a.io, b.io", NetworkPolicy("allowlist", ("a.io", "b.io"))),
        ("allowlist:a.io,b.io", NetworkPolicy("allowlist", ("a.io", "b.io"))),
    ],
)
def test_network_specs_parse_to_the_api_policy(spec: str, policy: NetworkPolicy) -> None:
    assert parse_network(spec) == policy
    assert parse_network(policy.describe()) == policy  # the xattr's form is accepted back


@pytest.mark.parametrize(
    "spec", ["", "allow", "allow:", "allow:a.io,", "deny:a.io", "allow:http://a.io", "allow:a b"]
)
def test_bad_network_specs_are_refused(spec: str) -> None:
    with pytest.raises(ControlError, match="bad network policy"):
        parse_network(spec)


# ---- the socket ----------------------------------------------------------------------------


async def _serving(
    run_dir: Path, nursery: trio.Nursery, answer: object
) -> tuple[Path, list[Request]]:
    seen: list[Request] = []

    async def handle(request: Request) -> str:
        seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    path = socket_path(run_dir)
    await nursery.start(serve_control, path, handle)
    return path, seen


async def test_a_request_reaches_the_handler_and_its_answer_comes_back(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        path, seen = await _serving(tmp_path, nursery, "box/sub/x.txt")
        assert path.stat().st_mode & 0o777 == 0o600
        request = ImportFile(("box", "sub"), "file-a", name="x.txt")
        answer = await trio.to_thread.run_sync(lambda: call(path, request, timeout=10))
        assert answer == "box/sub/x.txt"
        assert seen == [request]
        nursery.cancel_scope.cancel()
    assert not path.exists()  # removed when the daemon stops


async def test_a_refusal_comes_back_as_one_line(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        path, _ = await _serving(tmp_path, nursery, ControlError("box: name\ntaken"))
        with pytest.raises(ControlError) as info:
            await trio.to_thread.run_sync(lambda: call(path, NewContainer("box"), timeout=10))
        assert str(info.value) == "box: name taken"
        nursery.cancel_scope.cancel()


async def test_the_socket_works_below_a_state_directory_too_deep_for_its_address(
    tmp_path: Path,
) -> None:
    deep = tmp_path.joinpath(*["d" * 50] * 3)
    deep.mkdir(parents=True)
    assert len(str(socket_path(deep))) > 108
    async with trio.open_nursery() as nursery:
        path, _ = await _serving(deep, nursery, "box")
        answer = await trio.to_thread.run_sync(lambda: call(path, NewContainer("box"), timeout=10))
        assert answer == "box"
        nursery.cancel_scope.cancel()


async def test_garbage_on_the_socket_gets_an_error_and_the_daemon_goes_on(tmp_path: Path) -> None:
    def send_raw(path: Path, raw: bytes) -> dict[str, object]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            reply: dict[str, object] = json.loads(s.makefile("rb").read())
            return reply

    async with trio.open_nursery() as nursery:
        path, seen = await _serving(tmp_path, nursery, "box")
        for raw in (b"not json", b'{"command": "new", "name": "../x"}', b"[1, 2]", b"\xff" * 10):
            reply = await trio.to_thread.run_sync(send_raw, path, raw)
            assert reply["ok"] is False and isinstance(reply["error"], str)
        answer = await trio.to_thread.run_sync(lambda: call(path, NewContainer("box"), timeout=10))
        assert answer == "box" and len(seen) == 1
        nursery.cancel_scope.cancel()


def test_without_a_daemon_the_call_fails_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no daemon listens"):
        call(socket_path(tmp_path), NewContainer("box"), timeout=5)


# ---- the daemon's commands, handler level --------------------------------------------------


async def _api_file(fs: Fs, filename: str, data: bytes) -> str:
    response = await fs.admin.post(
        "/v1/files",
        files={"file": (filename, data)},
        data={"purpose": "user_data"},
        headers={"Authorization": "Bearer sk-test"},
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def _xattr(fs: Fs, inode: int, name: str) -> str:
    return (await fs.ops.getxattr(inode, f"user.containerfs.{name}".encode(), CTX)).decode()


async def test_new_shows_the_container_without_listing_again(fs: Fs) -> None:
    fid = await _api_file(fs, "in.txt", b"input\n")
    added: list[tuple[int, str]] = []
    commands = MountCommands(fs.ns, fs.client, entry_added=lambda p, n: added.append((p, n)))
    await fs.ns.containers()
    listings = fs.ns.statistics().container_listings
    policy = NetworkPolicy("allowlist", ("example.com",))
    request = NewContainer("proj", file_ids=(fid,), memory_limit="4g", network_policy=policy)
    assert await commands.run(request) == "proj"
    assert added == [(ROOT_INODE, "proj")]
    assert "proj" in await fs.listing(ROOT_INODE)
    assert fs.ns.statistics().container_listings == listings
    inode = await fs.inode("proj")
    assert await _xattr(fs, inode, "network_policy") == "allowlist:example.com"
    assert await _xattr(fs, inode, "file_ids") == fid
    assert await _xattr(fs, inode, "memory_limit") == "4g"
    assert await fs.read_file(await fs.inode("proj", "in.txt")) == b"input\n"


async def test_new_refuses_a_taken_name_and_an_unknown_file_id(fs: Fs) -> None:
    await fs.container("box")
    commands = MountCommands(fs.ns, fs.client)
    with pytest.raises(ControlError, match="name taken"):
        await commands.run(NewContainer("box"))
    with pytest.raises(ControlError, match="unknown file id"):
        await commands.run(NewContainer("other", file_ids=("file-missing",)))
    assert [c.name async for c in fs.client.list_containers()] == ["box"]


async def test_new_takes_the_mount_defaults_unless_given(fs: Fs) -> None:
    defaults = {"memory_limit": "16g", "expires_after_minutes": 45}
    commands = MountCommands(fs.ns, fs.client, container_defaults=defaults)
    await commands.run(NewContainer("a"))
    await commands.run(NewContainer("b", memory_limit="1g"))
    made = {c.name: c async for c in fs.client.list_containers()}
    assert made["a"].memory_limit == "16g" and made["b"].memory_limit == "1g"
    assert made["a"].expires_after is not None and made["a"].expires_after.minutes == 45


async def test_import_shows_the_file_under_its_name_and_records_the_alias(fs: Fs) -> None:
    fid = await _api_file(fs, "upstream.csv", b"a,b\n")
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.ops.mkdir(box, b"in", 0o755, CTX)
    commands = MountCommands(fs.ns, fs.client)
    path = await commands.run(ImportFile(("box", "in"), fid, name="mine.csv"))
    assert path == "box/in/mine.csv"
    assert await fs.listing(await fs.inode("box", "in")) == ["mine.csv"]
    assert await fs.read_file(await fs.inode("box", "in", "mine.csv")) == b"a,b\n"
    [copied] = [f async for f in fs.client.list_files(c.id)]
    assert fs.ns.state.aliases(ContainerId(c.id)) == {copied.id: "in/mine.csv"}


async def test_import_without_a_name_uses_the_files_api_filename(fs: Fs) -> None:
    fid = await _api_file(fs, "notes.md", b"# notes\n")
    await fs.container("box")
    commands = MountCommands(fs.ns, fs.client)
    assert await commands.run(ImportFile(("box",), fid)) == "box/notes.md"
    assert await fs.read_file(await fs.inode("box", "notes.md")) == b"# notes\n"
    with pytest.raises(ControlError, match=r"box/notes\.md: name taken"):
        await commands.run(ImportFile(("box",), fid))
    with pytest.raises(ControlError, match="no such directory"):
        await commands.run(ImportFile(("box", "nowhere"), fid))
    with pytest.raises(ControlError, match="unknown file id file-missing"):
        await commands.run(ImportFile(("box",), "file-missing"))


async def test_a_read_only_mount_refuses_both_commands(tmp_path: Path, app: object) -> None:
    async with trio.open_nursery() as nursery:
        fs = await build_fs(tmp_path, nursery, app, read_only=True)
        try:
            await fs.container("box")
            commands = MountCommands(fs.ns, fs.client)
            for request in (NewContainer("new"), ImportFile(("box",), "file-a", name="x")):
                with pytest.raises(ControlError, match="read-only"):
                    await commands.run(request)
            assert [c.name async for c in fs.client.list_containers()] == ["box"]
        finally:
            nursery.cancel_scope.cancel()
    await close_fs(fs)


async def test_mkdir_of_a_container_shows_it_without_listing_again(fs: Fs) -> None:
    await fs.container("before")
    assert await fs.listing(ROOT_INODE) == ["before"]
    listings = fs.ns.statistics().container_listings
    await fs.ops.mkdir(ROOT_INODE, b"made", 0o755, CTX)
    assert await fs.listing(ROOT_INODE) == ["before", "made"]
    assert fs.ns.statistics().container_listings == listings
    made = await fs.inode("made")
    assert await _xattr(fs, made, "file_ids") == ""  # made here, with no files
    assert await fs.listing(made) == []
    assert fs.ns.statistics().file_listings == 0  # known empty: not listed either


class _HeldListing:
    """The API, with listings of containers held back until ``release`` is set: a listing in
    flight while a container is created."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.fetched = trio.Event()
        self.release = trio.Event()

    async def list_containers(self) -> AsyncIterator[Container]:
        listed = [c async for c in self.client.list_containers()]
        self.fetched.set()
        await self.release.wait()
        for c in listed:
            yield c

    def list_files(self, container_id: ContainerId) -> Any:
        return self.client.list_files(container_id)

    async def retrieve_container(self, container_id: ContainerId) -> Container:
        return await self.client.retrieve_container(container_id)

    async def create_container(self, name: str, **options: Any) -> Container:
        return await self.client.create_container(name, **options)

    async def delete_container(self, container_id: ContainerId) -> None:
        await self.client.delete_container(container_id)

    async def holds_files(self, container_id: ContainerId) -> bool:
        return await self.client.holds_files(container_id)


async def test_a_container_made_while_the_containers_are_listed_is_not_lost(fs: Fs) -> None:
    held = _HeldListing(fs.client)
    ns = Namespace(held, fs.ns.state)
    shown: list[list[str]] = []
    async with trio.open_nursery() as nursery:

        async def list_root() -> None:
            shown.append(sorted(await ns.containers()))

        nursery.start_soon(list_root)
        await held.fetched.wait()  # the listing was taken before the create
        await ns.create_container("made-meanwhile")
        held.release.set()
    assert shown == [["made-meanwhile"]]
    assert sorted(await ns.containers()) == ["made-meanwhile"]


async def test_a_server_failure_is_one_line_naming_what_failed(fs: Fs) -> None:
    fid = await _api_file(fs, "in.txt", b"x")
    c = await fs.container("box")
    commands = MountCommands(fs.ns, fs.client)
    await fs.faults([{"route": "upload_file", "action": "error", "status": 500, "count": 5}])
    with pytest.raises(ControlError, match=rf"cannot import {fid} into box: HTTP 500"):
        await commands.run(ImportFile(("box",), fid, name="x.txt"))
    await fs.faults([{"route": "create_container", "action": "error", "status": 500, "count": 5}])
    with pytest.raises(ControlError, match="cannot create other: HTTP 500"):
        await commands.run(NewContainer("other"))
    assert [f async for f in fs.client.list_files(c.id)] == []
    assert "x.txt" not in await fs.listing(await fs.inode("box"))


async def test_a_socket_that_cannot_be_made_leaves_the_daemon_serving(tmp_path: Path) -> None:
    async def handle(request: Request) -> str:
        raise AssertionError("no request can arrive")

    missing = tmp_path / "gone" / "run"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, socket_path(missing), handle)
    assert not missing.exists()


async def test_import_into_a_container_deleted_elsewhere_says_it_is_gone(fs: Fs) -> None:
    fid = await _api_file(fs, "in.txt", b"x")
    commands = MountCommands(fs.ns, fs.client)
    for files_cached in (False, True):  # gone at the listing of its files, or at the copy
        c = await fs.container("box")
        fs.ns.invalidate_containers()  # made by another client: seen at the next listing
        assert await fs.listing(ROOT_INODE) == ["box"]
        if files_cached:
            assert await fs.listing(await fs.inode("box")) == []
        await fs.client.delete_container(c.id)  # by another client: the mount still has it
        with pytest.raises(ControlError, match="box: the container is gone"):
            await commands.run(ImportFile(("box",), fid, name="x.txt"))
        assert await fs.listing(ROOT_INODE) == []  # the mount asked again


async def test_a_creation_record_the_state_cannot_take_still_shows_while_mounted(
    tmp_path: Path,
) -> None:
    class FullDisk(State):
        def set_created_with(self, cid: ContainerId, created: CreatedWith) -> None:
            raise sqlite3.OperationalError("database or disk is full")

    state = FullDisk(tmp_path, endpoint="http://x/v1")
    try:
        records = CreationLog(state)
        made = CreatedWith(("file-a",), ("skill_1",))
        await records.record(ContainerId("cntr_1"), made)  # the container exists: no error
        assert await records.get(ContainerId("cntr_1")) == made
        assert state.created_with(ContainerId("cntr_1")) is None
    finally:
        state.close()
