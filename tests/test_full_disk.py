"""A full state disk, at the handlers: the state directory on a 3 MiB tmpfs (root only), the
filesystem built as the daemon builds it over the in-process emulator. A write the disk cannot
hold is ENOSPC at ``write`` and at ``flush``, the file is what it was before that open, and
content closed earlier and still queued is never lost.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
from fs_harness import CTX, Fs, build_fs, close_fs, errno_of

MiB = 1 << 20


@pytest.fixture
async def fs(tmp_path: Path, app: Any) -> AsyncIterator[Fs]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    state = tmp_path / "state-False"  # where build_fs keeps its state
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(state)], check=True)
    try:
        async with trio.open_nursery() as nursery:
            made = await build_fs(tmp_path, nursery, app)
            yield made
            nursery.cancel_scope.cancel()
        await close_fs(made)
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


async def write_until_full(fs: Fs, fh: int, *, total: int = 8 * MiB) -> int:
    """Write ``total`` bytes in 1 MiB writes; the errno of the first failure (0: none)."""
    offset = 0
    while offset < total:
        try:
            offset += await fs.ops.write(fh, offset, b"n" * MiB)
        except pyfuse3.FUSEError as err:
            return int(err.errno)
    return 0


async def flush_errno(fs: Fs, fh: int) -> int:
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.flush(fh)
    return errno_of(exc)


def spools(fs: Fs) -> list[str]:
    return sorted(p.name for p in fs.ns.state.spool_dir.iterdir())


async def test_a_new_file_that_fills_the_disk_is_enospc_and_then_does_not_exist(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    info, _ = await fs.ops.create(box, b"new.bin", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    assert await write_until_full(fs, info.fh) == errno.ENOSPC
    assert await flush_errno(fs, info.fh) == errno.ENOSPC
    await fs.ops.release(info.fh)

    assert (await fs.lookup(box, "new.bin")).st_ino == 0
    assert await fs.server_files(c.id) == {}
    assert fs.writer.pending() == []
    assert spools(fs) == []


async def test_an_overwrite_that_fills_the_disk_leaves_the_server_content(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    inode = await fs.write_file(box, "kept.txt", b"old content\n")
    info = await fs.ops.open(inode, os.O_WRONLY | os.O_TRUNC, CTX)
    assert await write_until_full(fs, info.fh) == errno.ENOSPC
    # not only after close: while the failed handle is still open, the file is the old one
    assert await fs.read_file(inode) == b"old content\n"
    assert await flush_errno(fs, info.fh) == errno.ENOSPC
    await fs.ops.release(info.fh)

    assert await fs.read_file(inode) == b"old content\n"
    assert (await fs.ops.getattr(inode, CTX)).st_size == len(b"old content\n")
    assert await fs.server_files(c.id) == {"kept.txt": b"old content\n"}
    assert spools(fs) == []


async def test_content_closed_and_queued_survives_a_later_write_that_fills_the_disk(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.faults([{"route": "upload_file", "action": "error", "status": 500, "count": 100}])
    info, entry = await fs.ops.create(box, b"p.txt", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    await fs.ops.write(info.fh, 0, b"precious")
    assert await flush_errno(fs, info.fh) == errno.EIO  # queued for a retry
    await fs.ops.release(info.fh)

    again = await fs.ops.open(entry.st_ino, os.O_WRONLY, CTX)  # no O_TRUNC: appends to it
    assert await write_until_full(fs, again.fh) == errno.ENOSPC
    assert await flush_errno(fs, again.fh) == errno.ENOSPC
    await fs.ops.release(again.fh)

    assert await fs.read_file(entry.st_ino) == b"precious"
    assert [p.path for p in fs.writer.pending()] == ["p.txt"]
    await fs.faults([])
    await fs.writer.retry_now()
    assert await fs.server_files(c.id) == {"p.txt": b"precious"}
    assert fs.writer.pending() == []


async def test_a_new_file_renamed_over_a_server_file_then_filling_the_disk_gives_it_back(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/f", b"server")
    box = await fs.inode("box")
    assert await fs.listing(box) == ["f"]
    info, _ = await fs.ops.create(box, b"g", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    await fs.ops.write(info.fh, 0, b"mine")
    await fs.ops.rename(box, b"g", box, b"f", 0, CTX)  # g is not on the server: a local move
    assert await write_until_full(fs, info.fh, total=8 * MiB) == errno.ENOSPC
    assert await flush_errno(fs, info.fh) == errno.ENOSPC
    await fs.ops.release(info.fh)
    # the move's content could not be kept: the server's f, which it was to replace, is back
    fs.ns.invalidate_listing(c.id)
    assert await fs.listing(box) == ["f"]
    assert await fs.read_file((await fs.lookup(box, "f")).st_ino) == b"server"
    assert await fs.server_files(c.id) == {"f": b"server"}
