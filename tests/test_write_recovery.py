"""The write path when uploads fail, race or are retried: the handlers called directly, no kernel.

Faults come from the emulator's fault rules or from a thin wrapper around the writer's client
(``Hooked``), which can hold a call until the test lets it go.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing
from fs_harness import CTX, Fs, build_fs, errno_of

from containerfs.errors import ContainerExpired, ServerError
from containerfs.ns.inodes import Kind
from containerfs.write.spool import spool_of

FAIL_UPLOADS = [{"route": "upload_file", "action": "error", "status": 500, "count": None}]


async def open_write(fs: Fs, inode: int, flags: int = os.O_WRONLY) -> int:
    info = await fs.ops.open(inode, flags, CTX)
    return int(info.fh)


async def save_failing(fs: Fs, parent: int, name: str, data: bytes) -> int:
    """Write ``name`` while uploads fail: close reports EIO and the upload stays pending."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    info, entry = await fs.ops.create(parent, name.encode(), 0o644, flags, CTX)
    await fs.ops.write(info.fh, 0, data)
    with pytest.raises(pyfuse3.FUSEError):
        await fs.ops.flush(info.fh)
    await fs.ops.release(info.fh)
    return int(entry.st_ino)


async def test_a_failed_rename_over_a_pending_file_keeps_both_files(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/a", b"A\n")
    box = await fs.inode("box")
    await fs.faults(FAIL_UPLOADS)
    b = await save_failing(fs, box, "b", b"B\n")

    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.rename(box, b"a", box, b"b", 0, CTX)
    assert errno_of(exc) == errno.EIO

    assert await fs.listing(box) == ["a", "b"]
    assert await fs.read_file(await fs.inode("box", "a")) == b"A\n"
    assert await fs.read_file(b) == b"B\n"
    assert [p.path for p in fs.writer.pending()] == ["b"]
    await fs.faults([])
    await fs.writer.retry_now()
    assert await fs.server_files(c.id) == {"a": b"A\n", "b": b"B\n"}
    assert fs.writer.pending() == []


async def remount(tmp_path: Path, app: Any, nursery: trio.Nursery) -> Fs:
    """The next mount over the same state directory (it resumes the pending uploads)."""
    return await build_fs(tmp_path, nursery, app)


async def test_a_pending_file_moved_to_a_local_only_name_is_never_uploaded_later(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.faults(FAIL_UPLOADS)
    await save_failing(fs, box, "n", b"stale")
    await fs.ops.rename(box, b"n", box, b"n~", 0, CTX)
    assert fs.writer.pending() == []
    assert fs.ns.state.pending() == []
    await fs.faults([])
    await fs.write_file(box, "n", b"newer")

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        await again.writer.drain(5)
        nursery.cancel_scope.cancel()
    assert await fs.server_files(c.id) == {"n": b"newer"}


async def test_a_pending_file_moved_locally_is_resumed_under_its_new_name(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.faults(FAIL_UPLOADS)
    p = await save_failing(fs, box, "p", b"mine")
    reading = await fs.ops.open(p, os.O_RDONLY, CTX)  # an open file moves without an upload
    await fs.ops.rename(box, b"p", box, b"q", 0, CTX)
    await fs.ops.release(reading.fh)
    assert [(i.container_id, i.path) for i in fs.ns.state.pending()] == [(c.id, "q")]
    await fs.faults([])
    # someone else uploads a p meanwhile: the resumed upload must not replace it
    await fs.add_file(c.id, "/mnt/data/p", b"theirs")

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        assert await again.writer.drain(5)
        nursery.cancel_scope.cancel()
    assert await fs.server_files(c.id) == {"p": b"theirs", "q": b"mine"}


class Hooked:
    """The writer's client, with calls that can be held (``gate``) or made to fail."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gates: dict[str, trio.Event] = {}
        self.entered: dict[str, trio.Event] = {}
        self.errors: dict[str, BaseException] = {}
        self.calls: dict[str, int] = {}

    def hold(self, name: str) -> trio.Event:
        self.entered[name] = trio.Event()
        gate = self.gates[name] = trio.Event()
        return gate

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.gates:
            self.entered[name].set()
            await self.gates[name].wait()
        if name in self.errors:
            raise self.errors[name]
        return await getattr(self.inner, name)(*args, **kwargs)

    async def upload_file(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("upload_file", *args, **kwargs)

    async def delete_file(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("delete_file", *args, **kwargs)

    async def find_upload(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("find_upload", *args, **kwargs)

    async def upload_stream(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("upload_stream", *args, **kwargs)


def hook(fs: Fs) -> Hooked:
    hooked = Hooked(fs.writer.client)
    fs.writer.client = hooked
    return hooked


async def test_unlink_racing_the_last_close_discards_the_spool_once(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/f", b"old")
    box = await fs.inode("box")
    f = await fs.inode("box", "f")
    fh = await open_write(fs, f)
    await fs.ops.write(fh, 0, b"new")
    hooked = hook(fs)
    gate = hooked.hold("delete_file")
    node = fs.ns.node(f)
    assert node is not None
    spool = spool_of(node)
    assert spool is not None
    spool_fd = spool.fd
    closed: list[int] = []
    real_close = os.close

    def counting_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.ops.unlink, box, b"f", CTX)
            await hooked.entered["delete_file"].wait()  # unlink holds the file's lock
            nursery.start_soon(fs.ops.release, fh)  # the last close waits for it
            await trio.testing.wait_all_tasks_blocked()
            os.close = counting_close  # the writer's os module
            gate.set()
    finally:
        os.close = real_close
    assert closed.count(spool_fd) == 1
    assert fs.writer.statistics().spools_open == 0
    assert await fs.server_files(c.id) == {}


async def test_a_pending_file_moved_to_another_container_deletes_what_it_replaced_in_the_first(
    fs: Fs,
) -> None:
    a = await fs.container("a")
    b = await fs.container("b")
    await fs.add_file(a.id, "/mnt/data/t", b"target")
    box_a, box_b = await fs.inode("a"), await fs.inode("b")
    await fs.faults(FAIL_UPLOADS)
    n = await save_failing(fs, box_a, "n", b"moved")
    reading = await fs.ops.open(n, os.O_RDONLY, CTX)  # open files move without an upload
    await fs.ops.rename(box_a, b"n", box_a, b"t", 0, CTX)  # replaces the server's t
    await fs.ops.rename(box_a, b"t", box_b, b"n", 0, CTX)
    await fs.ops.release(reading.fh)
    assert [(i.container_id, i.path) for i in fs.ns.state.pending()] == [(b.id, "n")]

    await fs.faults([])
    await fs.writer.retry_now()
    assert await fs.server_files(b.id) == {"n": b"moved"}
    assert await fs.server_files(a.id) == {}
    assert fs.writer.pending() == []


async def test_failed_uploads_are_retried_with_a_growing_delay(fs: Fs) -> None:
    await fs.container("box")
    box = await fs.inode("box")
    fs.writer.configure_retries(base=0.05, cap=0.2)
    hooked = hook(fs)
    hooked.errors["upload_file"] = ServerError("unavailable")
    await save_failing(fs, box, "f", b"data")

    # retried on its own, again and again (the delays themselves are checked on trio's mock
    # clock in test_upload_queue.py)
    with trio.fail_after(30):
        while hooked.calls["upload_file"] < 3:
            await trio.sleep(0.05)
    [item] = fs.writer.pending()
    assert item.path == "f" and "unavailable" in str(item.error)


async def test_an_upload_the_server_refuses_is_retried_at_the_longest_delay(fs: Fs) -> None:
    await fs.container("box")
    box = await fs.inode("box")
    fs.writer.configure_retries(base=0.05, cap=30.0)
    hooked = hook(fs)
    hooked.errors["upload_file"] = ContainerExpired("Container is expired.", status=400)
    await save_failing(fs, box, "f", b"data")

    await trio.sleep(0.4)
    assert hooked.calls["upload_file"] == 1
    [item] = fs.writer.pending()
    assert "expired" in str(item.error)


async def test_a_deferred_file_whose_upload_failed_is_uploaded_by_the_next_retry(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.write_file(box, "sedAb12Zq", b"temp left in place")  # deferred: no upload yet
    await fs.faults(FAIL_UPLOADS)
    await fs.writer.upload_due(everything=True)
    assert [p.state for p in fs.writer.pending()] == ["failed"]

    await fs.faults([])
    await fs.writer.retry_now()
    assert await fs.server_files(c.id) == {"sedAb12Zq": b"temp left in place"}
    assert fs.writer.pending() == []


async def test_drain_uploads_a_deferred_file_that_failed_once(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    fs.writer.configure_retries(base=0.05)
    # one failed attempt (the client retries a 500 once itself)
    await fs.faults([{"route": "upload_file", "action": "error", "status": 500, "count": 2}])
    await fs.write_file(box, "tmpk3j4h5g6", b"temp")

    with trio.fail_after(3):
        assert await fs.writer.drain(10)
    assert await fs.server_files(c.id) == {"tmpk3j4h5g6": b"temp"}


async def test_a_pending_file_uploaded_by_a_rename_is_no_longer_listed_as_pending(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/p", b"old")
    box = await fs.inode("box")
    p = await fs.inode("box", "p")
    await fs.faults(FAIL_UPLOADS)
    fh = await open_write(fs, p, os.O_WRONLY | os.O_TRUNC)
    await fs.ops.write(fh, 0, b"new")
    with pytest.raises(pyfuse3.FUSEError):
        await fs.ops.flush(fh)
    await fs.ops.release(fh)
    await fs.faults([])

    await fs.ops.rename(box, b"p", box, b"q", 0, CTX)  # uploads the new content as q
    assert await fs.server_files(c.id) == {"q": b"new"}
    assert fs.writer.pending() == []
    with trio.fail_after(2):
        assert await fs.writer.drain(10)


async def test_an_unexpected_error_in_a_retry_is_logged_and_retried_later(
    fs: Fs, caplog: pytest.LogCaptureFixture
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    fs.writer.configure_retries(base=0.02, cap=0.1)
    hooked = hook(fs)
    hooked.errors["upload_file"] = ServerError("unavailable")
    await save_failing(fs, box, "f", b"data")
    hooked.errors["upload_file"] = OSError(errno.EIO, "disk trouble")
    await trio.sleep(0.2)  # the background loop meets it, and carries on
    assert "disk trouble" in caplog.text
    assert [p.path for p in fs.writer.pending()] == ["f"]

    del hooked.errors["upload_file"]
    with trio.fail_after(2):
        while fs.writer.pending():
            await trio.sleep(0.02)
    assert await fs.server_files(c.id) == {"f": b"data"}


async def test_a_reader_does_not_hold_back_the_retry_of_a_pending_upload(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.faults(FAIL_UPLOADS)
    f = await save_failing(fs, box, "f", b"data")
    reading = await fs.ops.open(f, os.O_RDONLY, CTX)  # cat f
    await fs.faults([])

    await fs.writer.retry_now()
    assert await fs.server_files(c.id) == {"f": b"data"}
    assert fs.writer.pending() == []
    await fs.ops.release(reading.fh)


async def test_opening_a_server_file_for_writing_downloads_it_without_holding_its_lock(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/f", b"server")
    f = await fs.inode("box", "f")
    node = fs.ns.node(f)
    assert node is not None
    reader = fs.writer.reader
    entered, gate = trio.Event(), trio.Event()

    class SlowReader:
        def __getattr__(self, name: str) -> Any:
            return getattr(reader, name)

        async def fetch(self, *args: Any) -> Any:
            entered.set()
            await gate.wait()
            return await reader.fetch(*args)

    fs.writer.reader = SlowReader()
    handles: list[int] = []

    async def opener() -> None:
        handles.append(await open_write(fs, f))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(opener)
        await entered.wait()
        assert not node.lock.locked()  # a retry or an unlink of the file is not held up
        gate.set()
    await fs.ops.write(handles[0], 0, b"S")
    await fs.ops.flush(handles[0])
    await fs.ops.release(handles[0])
    assert await fs.server_files(c.id) == {"f": b"Server"}


async def test_drain_queues_what_writers_still_open_have_not_saved_for_the_next_mount(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    info, _ = await fs.ops.create(box, b"open.txt", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    await fs.ops.write(info.fh, 0, b"unsaved")

    assert not await fs.writer.drain(1)  # the writer never closed
    assert [p.path for p in fs.writer.pending()] == ["open.txt"]
    assert [i.path for i in fs.ns.state.pending()] == ["open.txt"]

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        assert await again.writer.drain(5)
        nursery.cancel_scope.cancel()
    assert await fs.server_files(c.id) == {"open.txt": b"unsaved"}


async def test_an_upload_that_cannot_be_resumed_at_start_stays_queued(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.faults(FAIL_UPLOADS)
    await save_failing(fs, box, "f", b"data")
    await fs.faults([{"route": "list_files", "action": "error", "status": 503, "count": None}])

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)  # cannot list the container yet
        [item] = again.writer.pending()
        assert item.path == "f" and item.error
        await fs.faults([])
        assert await again.writer.drain(5)
        nursery.cancel_scope.cancel()
    assert await fs.server_files(c.id) == {"f": b"data"}


async def test_of_two_queued_uploads_of_one_path_the_next_mount_keeps_the_newest(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    c = await fs.container("box")
    state = fs.ns.state
    spools = []
    for content in (b"older", b"newer"):
        spool = state.new_spool_path()
        spool.write_bytes(content)
        state.add_pending(c.id, "f", spool, None)
        spools.append(spool)

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        assert [p.path for p in again.writer.pending()] == ["f"]
        assert await again.writer.drain(5)
        nursery.cancel_scope.cancel()
    assert await fs.server_files(c.id) == {"f": b"newer"}
    assert not spools[0].exists()
    assert state.pending() == []


async def test_a_resumed_upload_with_a_deferred_name_is_uploaded_at_once(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    c = await fs.container("box")
    spool = fs.ns.state.new_spool_path()
    spool.write_bytes(b"kept")
    fs.ns.state.add_pending(c.id, "tmpabcd1234", spool, None)

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        node = again.ns.known(Kind.FILE, c.id, "tmpabcd1234")
        assert node is not None
        assert node.deferred
        assert await again.writer.drain(5)
        nursery.cancel_scope.cancel()
    assert await fs.server_files(c.id) == {"tmpabcd1234": b"kept"}


async def test_a_directory_renamed_over_an_empty_one_ends_the_target(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/d1/f", b"f")
    box = await fs.inode("box")
    await fs.ops.mkdir(box, b"d2", 0o755, CTX)
    target = fs.ns.node(await fs.inode("box", "d2"))
    assert target is not None

    await fs.ops.rename(box, b"d1", box, b"d2", 0, CTX)
    assert target.gone
    d2 = await fs.inode("box", "d2")
    assert d2 != target.inode
    assert await fs.listing(d2) == ["f"]
    assert await fs.server_files(c.id) == {"f": b"f"}
    await fs.ops.rename(d2, b"f", box, b"f", 0, CTX)  # d2 was only there for f: it goes too
    assert await fs.listing(box) == ["f"]


async def test_a_rename_whose_upload_fails_after_the_move_still_succeeds(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.write_file(box, ".x.swp", b"local only")
    await fs.faults(FAIL_UPLOADS)

    await fs.ops.rename(box, b".x.swp", box, b"x.txt", 0, CTX)  # moved: not an error
    assert await fs.listing(box) == ["x.txt"]
    assert [p.path for p in fs.writer.pending()] == ["x.txt"]
    await fs.faults([])
    await fs.writer.retry_now()
    assert await fs.server_files(c.id) == {"x.txt": b"local only"}


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, errno.EIO), (429, errno.EIO), (503, errno.EIO), (413, errno.EFBIG)],
)
async def test_close_reports_a_failed_upload_as_eio_unless_too_large(
    fs: Fs, status: int, expected: int
) -> None:
    await fs.container("box")
    box = await fs.inode("box")
    await fs.faults([{"route": "upload_file", "action": "error", "status": status, "count": None}])
    info, _ = await fs.ops.create(box, b"f", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    await fs.ops.write(info.fh, 0, b"data")
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.fsync(info.fh, False)
    assert errno_of(exc) == expected
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.flush(info.fh)
    assert errno_of(exc) == expected
    await fs.ops.release(info.fh)


async def test_close_in_an_expired_container_is_erofs(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    info, _ = await fs.ops.create(box, b"f", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    await fs.ops.write(info.fh, 0, b"data")
    (await fs.admin.post(f"/_emulator/containers/{c.id}/expire")).raise_for_status()
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.flush(info.fh)
    assert errno_of(exc) == errno.EROFS
    await fs.ops.release(info.fh)


async def test_a_superseded_file_whose_delete_failed_is_deleted_by_the_next_mount(
    fs: Fs, tmp_path: Path, app: Any
) -> None:
    """A new version is uploaded, but the delete of the old one fails, and the mount ends
    before its retry: the next mount hides the old file and deletes it. The queue record
    that named it is gone by then; the state keeps the delete (it kept it in memory only,
    and the old file showed beside the new one for good)."""
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/f", b"old")
    box = await fs.inode("box")
    fs.writer.configure_retries(base=3600, cap=3600)  # this mount retries no more: it "dies"
    await fs.faults([{"route": "delete_file", "action": "error", "status": 503, "count": None}])
    await fs.write_file(box, "f", b"new")  # uploaded; the old f's delete fails
    assert fs.ns.state.pending() == []
    assert await fs.listing(box) == ["f"]
    await fs.faults([])

    async with trio.open_nursery() as nursery:
        again = await remount(tmp_path, app, nursery)
        again_box = await again.inode("box")
        assert await again.listing(again_box) == ["f"]  # hidden before its delete is retried
        assert await again.read_file(await again.inode("box", "f")) == b"new"
        assert await again.writer.drain(5)
        assert again.ns.state.orphans() == []
        nursery.cancel_scope.cancel()
    assert await fs.server_files(c.id) == {"f": b"new"}
