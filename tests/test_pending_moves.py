"""A file whose upload is pending moves without an upload (it is not on the server yet), but
it may supersede server files: the one it replaced by a rename over it, or the content it
was written over. Those stay on the server until the pending upload lands and deletes them,
and never show at the path the file left: not after the move, and not after a remount.
Handler level, over the emulator app in-process."""

from __future__ import annotations

import faulthandler
import os
from pathlib import Path
from typing import Any

import trio
from fs_harness import CTX, Fs
from test_deleting_hidden import fresh_listing, hold_answers
from test_write_recovery import FAIL_UPLOADS, remount, save_failing

from containerfs.ns.inodes import ROOT_INODE


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
    the new content is written as f. The server's old f, which the queued content replaced,
    goes with that move (nothing uploads the queued content now): never two f on the
    server, not after the next upload, and not after a crash before it."""
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/f", b"server")
    box = await fs.inode("box")
    assert await fresh_listing(fs, c.id, box) == ["f"]
    await fs.faults(FAIL_UPLOADS)
    await save_failing(fs, box, "g", b"queued")
    await fs.ops.rename(box, b"g", box, b"f", 0, CTX)  # over the server's f, locally
    await fs.faults([])
    await fs.ops.rename(box, b"f", box, b"f~", 0, CTX)  # the editor's backup: local-only
    assert await fs.server_files(c.id) == {}
    await fs.faults(FAIL_UPLOADS)
    fs.writer.configure_retries(base=3600, cap=3600)  # this mount retries no more: it "dies"
    await save_failing(fs, box, "f", b"new")  # queued

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        await again.faults([])
        assert await again.writer.drain(5)
        assert await again.server_files(c.id) == {"f": b"new"}
        assert await fresh_listing(again, c.id, await again.inode("box")) == ["f"]
        nursery.cancel_scope.cancel()


async def test_a_write_back_upload_of_a_file_moved_to_a_local_only_name_ends(fs: Fs) -> None:
    """A write-back job uploads a file's versions in turn while a write makes it dirty; if the
    file moved to a local-only name meanwhile, its newer content stays here and the job ends
    (it looped, and once a free lock passed no schedule point, froze the whole mount)."""
    faulthandler.dump_traceback_later(60, exit=True)  # a frozen loop cannot be cancelled
    try:
        fs.writer.write_back = True
        c = await fs.container("box")
        box = await fs.inode("box")
        held = hold_answers(fs, "upload_file")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        info, entry = await fs.ops.create(box, b"f", 0o644, flags, CTX)
        await fs.ops.write(info.fh, 0, b"v1")
        await fs.ops.flush(info.fh)  # queued: its job uploads v1, holding f's lock
        with trio.fail_after(10):
            await held.done.wait()
        await fs.ops.write(info.fh, 2, b"v2")  # newer content, while v1's answer is held
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.ops.rename, box, b"f", box, b"f~", 0, CTX)
            await trio.sleep(0.05)
            nursery.start_soon(fs.ops.release, info.fh)
            await trio.sleep(0.05)
            held.gate.set()
        root = fs.ns.node(ROOT_INODE)
        assert root is not None
        with trio.fail_after(10):
            assert await fs.writer.sync(root) == []
        node = fs.ns.node(int(entry.st_ino))
        assert node is not None and node.local_only and node.path == "f~"
        assert await fs.listing(box) == ["f~"]
        # a backup keeps its server copy (v1) until a new f is uploaded; v2 stays here
        assert await fs.server_files(c.id) == {"f": b"v1"}
    finally:
        faulthandler.cancel_dump_traceback_later()
