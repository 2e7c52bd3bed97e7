"""A file whose upload is pending moves without an upload (it is not on the server yet), but
it may supersede server files: the one it replaced by a rename over it, or the content it
was written over. Those stay on the server until the pending upload lands and deletes them,
and never show at the path the file left: not after the move, and not after a remount.
Handler level, over the emulator app in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from fs_harness import CTX, Fs
from test_deleting_hidden import fresh_listing
from test_write_recovery import FAIL_UPLOADS, remount, save_failing


async def test_a_pending_file_moved_on_leaves_no_server_file_behind(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    one, two = await fs.container("one"), await fs.container("two")
    await fs.add_file(one.id, "/mnt/data/f", b"server")
    box_one, box_two = await fs.inode("one"), await fs.inode("two")
    assert await fresh_listing(fs, one.id, box_one) == ["f"]
    await fs.faults(FAIL_UPLOADS)
    await save_failing(fs, box_two, "g", b"mine")
    # over the server's f: a local move (g is not on the server), f's server copy superseded
    await fs.ops.rename(box_two, b"g", box_one, b"f", 0, CTX)
    assert await fresh_listing(fs, one.id, box_one) == ["f"]
    await fs.ops.rename(box_one, b"f", box_two, b"a", 0, CTX)  # on again, still local
    assert await fresh_listing(fs, one.id, box_one) == []
    assert await fresh_listing(fs, two.id, box_two) == ["a"]

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        box_one, box_two = await again.inode("one"), await again.inode("two")
        assert await fresh_listing(again, one.id, box_one) == []
        assert await fresh_listing(again, two.id, box_two) == ["a"]
        await again.faults([])
        assert await again.writer.drain(5)
        nursery.cancel_scope.cancel()
    assert await fs.server_files(one.id) == {}
    assert await fs.server_files(two.id) == {"a": b"mine"}


async def test_a_pending_file_moved_within_its_container_leaves_no_server_file_behind(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/f", b"server")
    box = await fs.inode("box")
    await fs.faults(FAIL_UPLOADS)
    await save_failing(fs, box, "g", b"mine")
    await fs.ops.rename(box, b"g", box, b"f", 0, CTX)
    await fs.ops.rename(box, b"f", box, b"h", 0, CTX)
    assert await fresh_listing(fs, c.id, box) == ["h"]
    await fs.faults([])
    assert await fs.writer.drain(5)
    assert await fresh_listing(fs, c.id, box) == ["h"]
    assert await fs.server_files(c.id) == {"h": b"mine"}


async def test_a_pending_file_moved_to_a_backup_name_lets_the_file_it_replaced_go(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    """An editor's save over a file whose last save is still queued: the queued content
    (which replaced the server's f by a rename) becomes the backup ``f~``, local-only, and
    the new content is written as f. The server's old f goes once the new f is uploaded,
    as a backup's server copy does: never two f on the server, not after a remount."""
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/f", b"server")
    box = await fs.inode("box")
    assert await fresh_listing(fs, c.id, box) == ["f"]
    await fs.faults(FAIL_UPLOADS)
    await save_failing(fs, box, "g", b"queued")
    await fs.ops.rename(box, b"g", box, b"f", 0, CTX)  # over the server's f, locally
    await fs.ops.rename(box, b"f", box, b"f~", 0, CTX)  # the editor's backup: local-only
    await fs.faults([])
    await fs.write_file(box, "f", b"new")
    assert await fs.writer.drain(5)
    assert await fs.server_files(c.id) == {"f": b"new"}
    assert sorted(await fresh_listing(fs, c.id, box)) == ["f", "f~"]

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        assert await fresh_listing(again, c.id, await again.inode("box")) == ["f"]
        nursery.cancel_scope.cancel()
