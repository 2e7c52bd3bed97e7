"""What the mount refuses to believe (issue 12), at the handler level: the FUSE handlers are
called directly over the emulator app, seen through a transport that rewrites the answers a
test names, and which records every request the client sent. The same rows through a real
mount and a lying HTTP proxy are in ``test_hostile_server.py``.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pyfuse3
import pytest
import trio
from fs_harness import CTX, Fs, build_fs, close_fs, errno_of

from containerfs.ns.inodes import ROOT_INODE

AUTH = {"Authorization": "Bearer sk-test"}
ENVELOPE = {"error": {"message": "internal", "type": "server_error", "param": None, "code": None}}


class LyingTransport(httpx.AsyncBaseTransport):
    """Forwards to the app; a JSON answer to a ``(method, path regex)`` rule is rewritten."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.rules: list[tuple[str, str, Callable[[Any], Any]]] = []
        self.sent: list[tuple[str, str]] = []

    def lie(self, method: str, path: str, edit: Callable[[Any], Any]) -> None:
        self.rules.append((method, path, edit))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        response = await self.inner.handle_async_request(request)
        for method, path, edit in self.rules:
            if request.method == method and re.fullmatch(path, request.url.path):
                await response.aread()
                answer = edit(json.loads(response.content))
                return httpx.Response(response.status_code, json=answer)
        return response

    def deletes(self) -> list[str]:
        return [path for method, path in self.sent if method == "DELETE"]


class Hostile:
    def __init__(self, fs: Fs, lies: LyingTransport) -> None:
        self.fs = fs
        self.lies = lies

    async def container(self, name: str, files: dict[str, bytes]) -> str:
        c = await self.fs.container(name)
        for base, content in files.items():
            await self.fs.add_file(c.id, f"/mnt/data/{base}", content)
        return c.id

    async def server_files(self, cid: str) -> dict[str, str]:
        """Basename -> id, straight from the emulator (no lies)."""
        response = await self.fs.admin.get(f"/v1/containers/{cid}/files", headers=AUTH)
        response.raise_for_status()
        return {f["path"].rsplit("/", 1)[1]: f["id"] for f in response.json()["data"]}

    async def exists(self, cid: str) -> bool:
        response = await self.fs.admin.get(f"/v1/containers/{cid}", headers=AUTH)
        return response.status_code == 200

    def edit_files(self, cid: str, edit: Callable[[dict[str, Any]], None]) -> None:
        def apply(answer: Any) -> Any:
            for item in answer["data"]:
                edit(item)
            return answer

        self.lies.lie("GET", f"/v1/containers/{cid}/files", apply)


@pytest.fixture
async def hostile(tmp_path: Path, app: Any) -> AsyncIterator[Hostile]:
    made: list[LyingTransport] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        made.append(LyingTransport(inner))
        return made[0]

    async with trio.open_nursery() as nursery:
        fs = await build_fs(tmp_path, nursery, app, wrap=wrap)
        yield Hostile(fs, made[0])
        nursery.cancel_scope.cancel()
    await close_fs(fs)


async def test_rm_or_replace_of_a_file_listed_with_id_dotdot_never_deletes_the_container(
    hostile: Hostile,
) -> None:
    cid = await hostile.container("box", {"keep.txt": b"keep\n", "victim.txt": b"victim\n"})
    victim_id = (await hostile.server_files(cid))["victim.txt"]

    def dotdot(item: dict[str, Any]) -> None:
        if item["path"].endswith("/victim.txt"):
            item["id"] = ".."

    hostile.edit_files(cid, dotdot)
    fs = hostile.fs
    box = await fs.inode("box")
    assert await fs.listing(box) == ["keep.txt"]  # the bad item is not shown
    # written anew, then removed: only the mount's own upload is ever deleted
    await fs.write_file(box, "victim.txt", b"replaced\n")
    await fs.ops.unlink(box, b"victim.txt", CTX)

    assert f"/v1/containers/{cid}" not in hostile.lies.deletes()
    assert all(path.rsplit("/", 1)[1] not in ("..", ".") for path in hostile.lies.deletes())
    assert await hostile.exists(cid)
    assert await hostile.server_files(cid) == {
        "keep.txt": (await hostile.server_files(cid))["keep.txt"],
        "victim.txt": victim_id,
    }


async def test_rmdir_after_a_malformed_listing_deletes_nothing(hostile: Hostile) -> None:
    cid = await hostile.container("full", {f"f{i}.txt": b"x" for i in range(3)})
    hostile.lies.lie("GET", f"/v1/containers/{cid}/files", lambda _: ENVELOPE)
    fs = hostile.fs
    full = await fs.inode("full")

    with pytest.raises(pyfuse3.FUSEError) as listed:
        await fs.ops.opendir(full, CTX)
    with pytest.raises(pyfuse3.FUSEError) as removed:
        await fs.ops.rmdir(ROOT_INODE, b"full", CTX)

    assert errno_of(listed) == errno.EIO and errno_of(removed) == errno.EIO
    assert hostile.lies.deletes() == []
    assert await hostile.exists(cid) and len(await hostile.server_files(cid)) == 3


async def test_rmdir_of_a_container_whose_files_are_all_listed_badly_deletes_nothing(
    hostile: Hostile,
) -> None:
    cid = await hostile.container("odd", {"a.txt": b"a", "b.txt": b"b"})

    def absurd(item: dict[str, Any]) -> None:
        item["bytes"] = 1e30

    hostile.edit_files(cid, absurd)
    fs = hostile.fs
    assert await fs.listing(await fs.inode("odd")) == []  # nothing that can be shown

    with pytest.raises(pyfuse3.FUSEError) as removed:
        await fs.ops.rmdir(ROOT_INODE, b"odd", CTX)

    assert errno_of(removed) == errno.ENOTEMPTY
    assert hostile.lies.deletes() == []
    assert sorted(await hostile.server_files(cid)) == ["a.txt", "b.txt"]


async def test_a_listed_size_smaller_than_the_content_is_corrected_by_the_read(
    hostile: Hostile,
) -> None:
    cid = await hostile.container("small", {"ten.txt": b"0123456789"})

    def four(item: dict[str, Any]) -> None:
        item["bytes"] = 4

    hostile.edit_files(cid, four)
    fs = hostile.fs
    ten = await fs.inode("small", "ten.txt")
    assert (await fs.ops.getattr(ten, CTX)).st_size == 4  # the listing, until the content

    assert await fs.read_file(ten) == b"0123456789"
    assert (await fs.ops.getattr(ten, CTX)).st_size == 10
    assert fs.ops.sizes.statistics().corrected == 1
    # the proved size is what the next open expects: the cached copy serves it
    assert await fs.read_file(ten) == b"0123456789"
    assert fs.ops.reader.statistics().downloads_started == 1
