"""A file this mount is deleting is hidden from every listing until its delete is confirmed
(then it is gone) or given up (then it shows again): a listing fetched while the delete of a
replaced file is on its way must not show the old file beside the new one. Handler level,
over the emulator app in-process."""

from __future__ import annotations

import pyfuse3
import pytest
import trio
from fs_harness import CTX, Fs
from test_write_recovery import hook, open_write

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
