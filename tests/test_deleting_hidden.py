"""A file this mount is deleting is hidden from every listing until its delete is confirmed
(then it is gone) or given up (then it shows again): a listing fetched while the delete of a
replaced file is on its way must not show the old file beside the new one. Handler level,
over the emulator app in-process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pyfuse3
import pytest
import trio
from fs_harness import CTX, Fs
from test_write_recovery import Hooked, hook, open_write

from containerfs.errors import ServerError
from containerfs.models import ContainerId


async def fresh_listing(fs: Fs, cid: ContainerId, inode: int) -> list[str]:
    fs.ns.invalidate_listing(cid)  # as with --metadata-ttl 0: the server is asked again
    return sorted(await fs.listing(inode))


async def rewrite(fs: Fs, inode: int, data: bytes) -> None:
    fh = await open_write(fs, inode)
    await fs.ops.write(fh, 0, data)
    await fs.ops.flush(fh)
    await fs.ops.release(fh)


async def test_a_listing_fetched_while_a_replaced_file_is_deleted_shows_it_once(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    a = await fs.write_file(box, "a", b"old")
    hooked = hook(fs)
    gate = hooked.hold("delete_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rewrite, fs, a, b"new")
        await hooked.entered["delete_file"].wait()  # the new a is up, the old one not gone
        assert await fresh_listing(fs, c.id, box) == ["a"]
        gate.set()
    assert await fresh_listing(fs, c.id, box) == ["a"]
    assert await fs.server_files(c.id) == {"a": b"new"}


async def test_a_replaced_file_whose_delete_failed_stays_hidden_until_the_retry(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    a = await fs.write_file(box, "a", b"old")
    hooked = hook(fs)
    hooked.errors["delete_file"] = ServerError("down")
    await rewrite(fs, a, b"new")  # the old a is queued as an orphan
    assert fs.writer.statistics().orphans == 1
    assert len([f async for f in fs.client.list_files(c.id)]) == 2  # both still there
    assert await fresh_listing(fs, c.id, box) == ["a"]
    del hooked.errors["delete_file"]
    await fs.writer.retry_now()
    assert fs.writer.statistics().orphans == 0
    assert await fresh_listing(fs, c.id, box) == ["a"]
    assert await fs.server_files(c.id) == {"a": b"new"}


async def test_a_file_whose_unlink_failed_shows_again(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/f", b"kept")
    box = await fs.inode("box")
    assert await fresh_listing(fs, c.id, box) == ["f"]
    hooked = hook(fs)
    hooked.errors["delete_file"] = ServerError("down")
    with pytest.raises(pyfuse3.FUSEError):
        await fs.ops.unlink(box, b"f", CTX)
    assert sorted(await fs.listing(box)) == ["f"]  # the cached listing too
    assert await fresh_listing(fs, c.id, box) == ["f"]


class AnswerHeld(Hooked):
    """The server does the call at once; its answer reaches the mount when ``gate`` is set."""

    def __init__(self, inner: Any, name: str) -> None:
        super().__init__(inner)
        self.name = name
        self.done = trio.Event()
        self.gate = trio.Event()

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = await getattr(self.inner, name)(*args, **kwargs)
        if name == self.name:
            self.done.set()
            await self.gate.wait()
        return result


def hold_answers(fs: Fs, name: str) -> AnswerHeld:
    """The writer's and the renamer's client hold the answers to ``name``."""
    held = AnswerHeld(fs.writer.client, name)
    fs.writer.client = held
    fs.writer._renamer._client = held
    return held


async def while_answer_held(
    fs: Fs, action: Callable[[], Awaitable[object]], meanwhile: Callable[[], Awaitable[None]]
) -> None:
    """Start ``action``; once the server has done its upload, run ``meanwhile`` while the
    answer is held back from the mount; then let the answer through and ``action`` end."""
    held = hold_answers(fs, "upload_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(action)
        with trio.fail_after(10):
            await held.done.wait()
        await meanwhile()
        held.gate.set()


async def test_a_listing_fetched_while_an_uploads_answer_is_on_its_way_shows_the_file_once(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/a", b"old")
    box = await fs.inode("box")
    a = await fs.inode("box", "a")
    assert await fresh_listing(fs, c.id, box) == ["a"]

    async def one_a() -> None:  # the server holds both a; the mount knows only the old
        assert await fresh_listing(fs, c.id, box) == ["a"]

    await while_answer_held(fs, lambda: rewrite(fs, a, b"new"), one_a)
    assert await fresh_listing(fs, c.id, box) == ["a"]
    assert await fs.server_files(c.id) == {"a": b"new"}


async def test_a_file_moved_by_upload_shows_under_one_name_while_the_answer_is_on_its_way(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/a", b"moved")
    box = await fs.inode("box")
    assert await fresh_listing(fs, c.id, box) == ["a"]

    async def still_a() -> None:
        assert await fresh_listing(fs, c.id, box) == ["a"]

    await while_answer_held(fs, lambda: fs.ops.rename(box, b"a", box, b"b", 0, CTX), still_a)
    assert await fresh_listing(fs, c.id, box) == ["b"]
    assert await fs.server_files(c.id) == {"b": b"moved"}


async def test_a_file_of_the_same_name_made_elsewhere_meanwhile_shows_once_the_upload_is_done(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    a = await fs.write_file(box, "a", b"old")
    assert await fresh_listing(fs, c.id, box) == ["a"]

    async def theirs_held_back() -> None:
        await fs.add_file(c.id, "/mnt/data/a", b"theirs")
        assert await fresh_listing(fs, c.id, box) == ["a"]  # it may be ours

    await while_answer_held(fs, lambda: rewrite(fs, a, b"new"), theirs_held_back)
    shown = await fs.listing(box)  # the cached listing, placed again
    assert len(shown) == 2 and "a" in shown
    assert sorted(await fresh_listing(fs, c.id, box)) == sorted(shown)


async def test_a_file_held_back_during_an_upload_that_fails_shows_once_it_failed(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    a = await fs.write_file(box, "a", b"old")
    assert await fresh_listing(fs, c.id, box) == ["a"]
    hooked = hook(fs)
    gate = hooked.hold("upload_file")
    hooked.errors["upload_file"] = ServerError("down")

    async def rewrite_failing() -> None:
        with pytest.raises(pyfuse3.FUSEError):
            await rewrite(fs, a, b"new")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rewrite_failing)
        with trio.fail_after(10):
            await hooked.entered["upload_file"].wait()
        await fs.add_file(c.id, "/mnt/data/a", b"theirs")
        assert await fresh_listing(fs, c.id, box) == ["a"]  # held back: it may be ours
        gate.set()
    # the upload failed: the cached listing is placed again, with their file beside ours
    assert len(await fs.listing(box)) == 2
