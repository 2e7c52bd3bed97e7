"""A spool file's I/O: runs of writes held in memory and written behind with ``O_DIRECT``,
the unaligned tail settled through the page cache, random writes and file systems without
``O_DIRECT`` buffered, a failed write behind raised later, memory bounded."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from containerfs import aio, directio
from containerfs.directio import ALIGN
from containerfs.write import spoolio
from containerfs.write.spoolio import HOLD_MAX, SpoolIO

MiB = 1 << 20


def _open(path: Path, nursery: trio.Nursery | None) -> SpoolIO:
    io = SpoolIO.open(path, os.O_RDWR | os.O_CREAT)
    io.run_in(nursery)
    return io


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


def _direct_or_skip(path: Path) -> None:
    fd = directio.open_direct(path, os.O_RDWR | os.O_CREAT)
    if fd is None:
        pytest.skip("this file system has no O_DIRECT")
    os.close(fd)


async def _write_all(io: SpoolIO, pieces: list[bytes], at: int = 0) -> int:
    for piece in pieces:
        assert await io.write(at, piece) == len(piece)
        at += len(piece)
    return at


def _pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for size in sizes:
        out.append(data[at : at + size])
        at += size
    if at < len(data):
        out.append(data[at:])
    return [p for p in out if p]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3 * MiB // 2), min_size=1, max_size=8),
    total=st.integers(min_value=1, max_value=5 * MiB),
)
def test_a_run_of_unaligned_writes_settles_byte_for_byte(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], total: int
) -> None:
    path = tmp_path_factory.mktemp("run") / "spool"
    data = os.urandom(total)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            io = _open(path, nursery)
            # the run starts at 0, a block boundary, with at least a block
            head = data[: max(ALIGN, sizes[0])]
            await _write_all(io, _pieces(data, [len(head), *sizes]))
            await io.settle()
            assert path.read_bytes() == data  # exact: no padding, no missing tail
            assert await io.read(0, len(data) + 10) == data
            await io.aclose()

    trio.run(main)


async def test_a_stream_reads_what_was_written_before_it_is_on_disk(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _direct_or_skip(tmp_path / "probe")
    data = os.urandom(3 * MiB + 1234)
    io = _open(tmp_path / "spool", nursery)
    end = await _write_all(io, _pieces(data, [MiB] * 3))
    got = b""
    while len(got) < end:
        piece = await io.read_run(len(got), MiB)
        assert piece, "a run's bytes are never missing, in memory or on disk"
        got += piece
    assert got == data
    await io.settle()
    assert await io.read_run(0, 10) == data[:10]  # from the disk now
    await io.aclose()


async def test_the_tail_stays_in_memory_until_settled_and_the_run_goes_on_after(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _direct_or_skip(tmp_path / "probe")
    path = tmp_path / "spool"
    first, second = os.urandom(2 * MiB + 100), os.urandom(MiB + 7)
    io = _open(path, nursery)
    await _write_all(io, [first])
    with trio.fail_after(30):  # a guard against a hang, not a measure of speed
        while io.statistics().direct_bytes < 2 * MiB:  # the aligned part goes behind
            await trio.sleep(0.01)
    assert path.stat().st_size == 2 * MiB  # the 100 bytes past the last block: in memory
    await io.settle()
    assert path.read_bytes() == first  # the tail through the page cache, size exact
    # an append continues the run: the tail's block is rewritten whole, directly
    await _write_all(io, [second], at=len(first))
    await io.settle()
    assert path.read_bytes() == first + second
    stats = io.statistics()
    assert stats.direct_bytes >= 3 * MiB
    assert stats.buffered_bytes < 2 * ALIGN  # only tails
    await io.aclose()


async def test_writes_off_the_run_are_buffered_and_keep_the_content_exact(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "spool"
    model = bytearray()
    io = _open(path, nursery)

    async def write(at: int, data: bytes) -> None:
        assert await io.write(at, data) == len(data)
        if len(model) < at:
            model.extend(bytes(at - len(model)))
        model[at : at + len(data)] = data

    await write(0, os.urandom(MiB + 300))
    await write(5000, b"seek back")  # an editor's write in the middle
    await write(len(model), os.urandom(2 * MiB))  # unaligned: buffered, not a run
    await write(4 * MiB, os.urandom(MiB))  # a hole, then a new run at a block boundary
    await write(4 * MiB + MiB, os.urandom(17))
    await io.truncate(4 * MiB + 10)
    del model[4 * MiB + 10 :]
    await write(len(model), b"after the truncate")
    await io.settle()
    assert path.read_bytes() == bytes(model)
    assert await io.read(4 * MiB - 3, 30) == bytes(model[4 * MiB - 3 : 4 * MiB + 27])
    await io.aclose()


async def test_a_file_system_without_o_direct_gets_buffered_writes(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directio, "open_direct", lambda *a, **k: None)  # refused at open
    data = os.urandom(3 * MiB + 5)
    io = _open(tmp_path / "spool", nursery)
    await _write_all(io, _pieces(data, [MiB] * 3))
    await io.settle()
    assert (tmp_path / "spool").read_bytes() == data
    assert io.statistics().direct_bytes == 0
    await io.aclose()


async def test_o_direct_refused_at_the_first_write_falls_back_to_buffered_writes(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    _direct_or_skip(tmp_path / "probe")

    def refuse(*args: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(spoolio, "_write_direct", refuse)
    data = os.urandom(5 * MiB + 77)
    io = _open(tmp_path / "spool", nursery)
    await _write_all(io, _pieces(data, [MiB] * 5))
    await io.settle()
    assert (tmp_path / "spool").read_bytes() == data
    assert io.statistics().direct_bytes == 0
    assert await io.read_run(0, 100) == data[:100]
    await io.aclose()


async def test_a_failed_write_behind_is_raised_by_the_next_write_and_by_settle(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    _direct_or_skip(tmp_path / "probe")

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spoolio, "_write_direct", full)
    io = _open(tmp_path / "spool", nursery)
    with pytest.raises(OSError) as raised:
        await _write_all(io, [os.urandom(MiB)] * 8)
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as again:
        await io.settle()
    assert again.value.errno == errno.ENOSPC
    await io.aclose()


async def test_a_writer_ahead_of_a_slow_disk_waits_with_a_bounded_amount_held(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    _direct_or_skip(tmp_path / "probe")
    real: Callable[..., None] = spoolio._write_direct

    def slow(*args: object) -> None:
        time.sleep(0.02)
        real(*args)

    monkeypatch.setattr(spoolio, "_write_direct", slow)
    data = os.urandom(24 * MiB)
    io = _open(tmp_path / "spool", nursery)
    await _write_all(io, _pieces(data, [MiB] * 24))
    # the writer outran the disk, and waited once HOLD_MAX was held
    assert HOLD_MAX < io.statistics().held_peak <= HOLD_MAX + MiB
    await io.settle()
    assert (tmp_path / "spool").read_bytes() == data
    await io.aclose()


async def test_a_closed_spool_is_not_read_through_its_old_descriptors(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    io = _open(tmp_path / "spool", nursery)
    await io.write(0, b"x" * ALIGN)
    await io.settle()
    await io.aclose()
    with pytest.raises(OSError) as raised:
        await io.read_run(0, 10)
    assert raised.value.errno == errno.EBADF


async def test_short_buffered_writes_are_carried_on_never_left_as_gaps(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    _direct_or_skip(tmp_path / "probe")

    def refuse(*args: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(spoolio, "_write_direct", refuse)
    data = os.urandom(3 * MiB + 77)
    io = _open(tmp_path / "spool", nursery)
    await _write_all(io, _pieces(data, [MiB] * 3))  # one run, held in memory
    real_pwrite = os.pwrite

    def short(fd: int, buf: bytes | memoryview, offset: int) -> int:
        return real_pwrite(fd, memoryview(buf)[:1000], offset)  # a disk filling up

    monkeypatch.setattr(os, "pwrite", short)
    await io.settle()  # the run and its tail, buffered, 1000 bytes a call
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert (tmp_path / "spool").read_bytes() == data
    await io.aclose()


async def _hops_of(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Count the spool's trips to a worker thread from here on."""
    trips: list[object] = []
    real = aio.in_thread

    async def counted(fn: Callable[..., object], *args: object) -> object:
        trips.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(spoolio, "in_thread", counted)
    return trips


@pytest.mark.parametrize("size", [100, ALIGN, 4 * ALIGN, 4 * ALIGN + 5])
async def test_settle_then_writes_the_run_and_runs_its_follow_up_in_one_trip(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    path = tmp_path / "spool"
    data = os.urandom(size)
    io = _open(path, nursery)
    await io.write(0, data)
    trips = await _hops_of(monkeypatch)
    seen = await io.settle_then(path.read_bytes)  # what a record after the settle sees
    assert seen == data
    assert len(trips) == 1
    await io.settle()  # nothing left to write: no trip
    assert len(trips) == 1
    await io.aclose()


async def test_o_direct_refused_at_a_settle_falls_back_in_the_same_trip(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    _direct_or_skip(tmp_path / "probe")
    refused: list[int] = []

    def refuse(fd: int, *args: object) -> None:
        refused.append(fd)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(spoolio, "_write_direct", refuse)
    path = tmp_path / "spool"
    data = os.urandom(4 * ALIGN + 9)  # under FLUSH_AT: its first direct write is the settle's
    io = _open(path, nursery)
    await io.write(0, data)
    assert await io.settle_then(path.read_bytes) == data
    assert len(refused) == 1 and io.statistics().direct_bytes == 0
    with pytest.raises(OSError):
        os.fstat(refused[0])  # the refused direct descriptor is closed
    more = os.urandom(2 * ALIGN)  # the run goes on, buffered
    await io.write(len(data), more)
    await io.settle()
    assert path.read_bytes() == data + more and len(refused) == 1
    await io.aclose()


async def test_a_failing_follow_up_leaves_the_spool_whole_and_a_failing_write_breaks_it(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spool"
    data = os.urandom(3 * ALIGN + 1)
    io = _open(path, nursery)
    await io.write(0, data)

    def failing() -> None:
        raise ValueError("the record failed")

    with pytest.raises(ValueError):
        await io.settle_then(failing)
    assert path.read_bytes() == data  # written all the same, and the spool goes on
    await io.write(len(data), b"z" * ALIGN)
    await io.settle()
    assert path.read_bytes() == data + b"z" * ALIGN

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    ran: list[bool] = []
    monkeypatch.setattr(directio, "pwrite_all", full)
    await io.write(len(data) + ALIGN, b"tail")
    with pytest.raises(OSError) as raised:
        await io.settle_then(lambda: ran.append(True))
    assert raised.value.errno == errno.ENOSPC and not ran  # no record of what is not written
    with pytest.raises(OSError):
        await io.settle()  # broken for good
    await io.aclose()


async def test_a_new_spool_file_is_made_by_its_first_settle_in_the_same_trip(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spool"
    io = SpoolIO.later(path, os.O_RDWR | os.O_CREAT)
    io.run_in(nursery)
    data = os.urandom(3 * ALIGN + 11)
    trips = await _hops_of(monkeypatch)
    await _write_all(io, _pieces(data, [ALIGN, 100]))
    assert not path.exists() and trips == []  # held in memory, nothing on disk yet
    assert await io.read_run(0, 10) == data[:10]  # from memory
    assert await io.settle_then(path.read_bytes) == data
    assert len(trips) == 1  # made, written and followed up in one trip
    await io.aclose()


async def test_a_new_spool_never_written_is_made_by_a_settle_and_not_by_a_close(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    made, never = tmp_path / "made", tmp_path / "never"
    io = SpoolIO.later(made, os.O_RDWR | os.O_CREAT)
    io.run_in(nursery)
    await io.settle()  # an empty file is read by its path (an upload of it)
    assert made.read_bytes() == b""
    await io.aclose()
    unused = SpoolIO.later(never, os.O_RDWR | os.O_CREAT)
    unused.run_in(nursery)
    await unused.aclose()
    await unused.settle()  # a settle after the close makes nothing
    assert not never.exists()


async def test_a_new_spool_that_cannot_be_made_breaks_at_its_first_settle(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    io = SpoolIO.later(tmp_path / "missing-dir" / "spool", os.O_RDWR | os.O_CREAT)
    io.run_in(nursery)
    await io.write(0, b"x" * ALIGN)
    ran: list[bool] = []
    with pytest.raises(OSError) as raised:
        await io.settle_then(lambda: ran.append(True))
    assert raised.value.errno == errno.ENOENT and not ran
    with pytest.raises(OSError):
        await io.write(ALIGN, b"y")  # broken for good
    await io.aclose()


async def test_a_new_spool_on_a_file_system_without_o_direct_is_written_buffered(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directio, "open_direct", lambda *a, **k: None)  # refused at open
    path = tmp_path / "spool"
    io = SpoolIO.later(path, os.O_RDWR | os.O_CREAT)
    io.run_in(nursery)
    data = os.urandom(3 * MiB + 5)  # past FLUSH_AT: the write behind makes the file
    await _write_all(io, _pieces(data, [MiB] * 3))
    await io.settle()
    assert path.read_bytes() == data
    assert io.statistics().direct_bytes == 0
    await io.aclose()
