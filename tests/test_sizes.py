"""Files listed with ``bytes: null``: no handler shows a size before it is known.

``Sizes`` is checked against a fake reader (concurrency, failures, corrections); the handlers
are called directly over the emulator app in-process, as in ``test_operations``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing
from fs_harness import CTX, Fs, build_fs, close_fs, errno_of

from containerfs.api.retrying import Backoff
from containerfs.errors import ServerError
from containerfs.fs.sizes import Sizes, SizeSource, SizeUnknown
from containerfs.models import ContainerFile, ContainerId, FileId
from containerfs.ns.inodes import Kind, Node

CID = ContainerId("cntr_1")


def remote_node(inode: int, *, size: int | None = None) -> Node:
    fid = FileId(f"cfile_{inode:032x}")
    remote = ContainerFile(fid, CID, f"/mnt/data/f{inode}", size, 0, "assistant")
    return Node(inode, Kind.FILE, CID, f"f{inode}", remote=remote)


class FakeReader:
    """Sizes by file id; ``learn_size`` can be held open to observe concurrency."""

    def __init__(self, sizes: dict[FileId, int]) -> None:
        self.sizes = sizes
        self.cached: dict[FileId, int] = {}
        self.failing: set[FileId] = set()
        self.calls: list[FileId] = []
        self.in_flight = 0
        self.peak = 0
        self.gate: trio.Event | None = None
        self.held: set[FileId] | None = None  # only these wait for the gate (None: all)

    def known_size(self, file_id: FileId) -> int | None:
        return self.cached.get(file_id)

    def content_size(self, file_id: FileId) -> int | None:
        return self.cached.get(file_id)

    async def learn_size(self, container_id: ContainerId, file_id: FileId) -> int:
        self.calls.append(file_id)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.gate is not None and (self.held is None or file_id in self.held):
                await self.gate.wait()
            await trio.lowlevel.checkpoint()
            if file_id in self.failing:
                raise ServerError("content request failed")
            return self.sizes[file_id]
        finally:
            self.in_flight -= 1


def fake_reader(nodes: list[Node], size: int = 10) -> FakeReader:
    reader = FakeReader({n.remote.id: size + n.inode for n in nodes if n.remote})
    _: SizeSource = reader  # for mypy: the fake satisfies the protocol
    return reader


# ---- Sizes, against a fake reader ------------------------------------------------------


async def test_a_directory_learns_its_sizes_concurrently() -> None:
    nodes = [remote_node(i) for i in range(2, 12)]
    reader = fake_reader(nodes)
    reader.gate = trio.Event()
    sizes = Sizes(reader, concurrency=32)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sizes.ensure_all, nodes)
        await trio.testing.wait_all_tasks_blocked()
        assert reader.in_flight == len(nodes)  # all asked before any answered
        reader.gate.set()
    assert [n.size_hint for n in nodes] == [10 + n.inode for n in nodes]
    assert sizes.statistics().learned == len(nodes)


async def test_learning_sizes_keeps_to_its_concurrency_bound() -> None:
    nodes = [remote_node(i) for i in range(2, 12)]
    reader = fake_reader(nodes)
    await Sizes(reader, concurrency=3).ensure_all(nodes)
    assert reader.peak == 3
    assert sorted(reader.calls) == sorted(n.remote.id for n in nodes if n.remote)


async def test_a_listing_waits_for_stalled_sizes_at_most_one_budget_not_one_per_round(
    autojump_clock: trio.abc.Clock,
) -> None:
    nodes = [remote_node(i) for i in range(2, 102)]
    reader = fake_reader(nodes)
    reader.gate = trio.Event()  # the server never answers
    sizes = Sizes(reader, concurrency=10, give_up_after=4.0)
    start = trio.current_time()
    with trio.fail_after(100):
        await sizes.ensure_all(nodes)
    assert trio.current_time() - start == pytest.approx(4.0)  # not 10 rounds of it
    assert all(Sizes.unknown(n) is not None for n in nodes)  # a stat of each asks again


async def test_a_stat_does_not_queue_behind_a_listing_learning_its_sizes() -> None:
    listed = [remote_node(i) for i in range(2, 6)]
    alone = remote_node(9)
    reader = fake_reader([*listed, alone])
    reader.gate = trio.Event()
    reader.held = {n.remote.id for n in listed if n.remote}
    sizes = Sizes(reader, concurrency=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sizes.ensure_all, listed)
        await trio.testing.wait_all_tasks_blocked()
        assert reader.in_flight == 2  # the listing's slots are taken, by stalled requests
        with trio.fail_after(10):  # only a stat that queued would wait at all
            await sizes.ensure(alone)
        assert alone.size_hint == 19
        reader.gate.set()


async def test_known_sizes_cost_no_request() -> None:
    cached, listed, hinted = remote_node(2), remote_node(3, size=7), remote_node(4)
    hinted.size_hint = 99
    reader = fake_reader([cached, listed, hinted])
    reader.cached[cached.remote.id] = 42  # type: ignore[union-attr]
    sizes = Sizes(reader)
    await sizes.ensure_all([cached, listed, hinted])
    assert (cached.size_hint, listed.size_hint, hinted.size_hint) == (42, None, 99)
    assert reader.calls == []
    assert sizes.statistics().known == 1


async def test_a_size_that_cannot_be_learned_fails_and_is_not_asked_again_at_once() -> None:
    node = remote_node(2)
    reader = fake_reader([node])
    reader.failing.add(node.remote.id)  # type: ignore[union-attr]
    clock = trio.testing.MockClock()
    sizes = Sizes(reader, failure_ttl=5.0, clock=clock.current_time)
    for _ in range(2):
        with pytest.raises(SizeUnknown) as failed:
            await sizes.ensure(node)
        assert failed.value.errno == errno.EIO
    assert len(reader.calls) == 1
    assert node.size_hint is None
    await sizes.ensure_all([node])  # a listing goes on without it
    assert Sizes.unknown(node) is not None
    clock.jump(6.0)
    reader.failing.clear()
    await sizes.ensure(node)
    assert node.size_hint == 12
    assert len(reader.calls) == 2


async def test_a_size_proved_wrong_by_the_content_is_corrected() -> None:
    node = remote_node(2)
    reader = fake_reader([node])
    sizes = Sizes(reader)
    await sizes.ensure(node)
    assert not sizes.refresh(node)  # nothing new
    reader.cached[node.remote.id] = 20  # type: ignore[union-attr]
    assert sizes.refresh(node)
    assert node.size_hint == 20
    assert sizes.statistics().corrected == 1


# ---- the handlers ----------------------------------------------------------------------


@pytest.fixture
async def quick_fs(tmp_path: Path, app: Any) -> AsyncIterator[Fs]:
    """``fs`` whose downloads retry without waiting, so that a failing server fails fast."""
    async with trio.open_nursery() as nursery:
        made = await build_fs(tmp_path, nursery, app, download_retry=Backoff(base=0.0, cap=0.0))
        yield made
        nursery.cancel_scope.cancel()
    await close_fs(made)


def content_requests(fs: Fs) -> int:
    return fs.client.statistics().requests["file_content"]


async def test_lookup_shows_the_true_size_and_the_read_costs_no_second_download(
    fs: Fs,
) -> None:
    c = await fs.container("box")
    content = b"assistant output\n" * 5000
    await fs.add_file(c.id, "/mnt/data/out.txt", content, report_bytes=False)

    box = await fs.inode("box")
    entry = await fs.lookup(box, "out.txt")

    assert entry.st_size == len(content)
    assert content_requests(fs) == 1
    info = await fs.ops.open(entry.st_ino, os.O_RDONLY, CTX)
    assert not info.direct_io  # the size is right: the page cache and mmap work
    await fs.ops.release(info.fh)
    assert await fs.read_file(entry.st_ino) == content
    assert (await fs.ops.getattr(entry.st_ino, CTX)).st_size == len(content)
    assert content_requests(fs) == 1


async def test_opendir_learns_every_unknown_size_before_listing(fs: Fs) -> None:
    c = await fs.container("box")
    contents = {f"out{i}.txt": b"x" * (i * 1000 + 1) for i in range(8)}
    for name, data in contents.items():
        await fs.add_file(c.id, f"/mnt/data/out/{name}", data, report_bytes=False)
    out = await fs.inode("box", "out")

    fh = await fs.ops.opendir(out, CTX)
    assert content_requests(fs) == len(contents)
    for name, data in contents.items():
        node = await fs.ns.lookup(fs.ns.node(out), name)  # type: ignore[arg-type]
        assert node is not None and Sizes.unknown(node) is None
        assert (await fs.ops.getattr(node.inode, CTX)).st_size == len(data)
    await fs.ops.releasedir(fh)
    assert content_requests(fs) == len(contents)


async def test_a_file_whose_size_cannot_be_learned_fails_with_eio_not_zero(quick_fs: Fs) -> None:
    fs = quick_fs
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/out.txt", b"never seen", report_bytes=False)
    box = await fs.inode("box")
    await fs.faults([{"route": "file_content", "action": "error", "status": 500, "count": None}])

    with pytest.raises(pyfuse3.FUSEError) as failed:
        await fs.lookup(box, "out.txt")
    assert errno_of(failed) == errno.EIO
    asked = content_requests(fs)
    with pytest.raises(pyfuse3.FUSEError) as again:
        await fs.lookup(box, "out.txt")
    assert errno_of(again) == errno.EIO
    assert content_requests(fs) == asked  # the failure is remembered for a few seconds

    await fs.faults([])
    fh = await fs.ops.opendir(box, CTX)  # the listing itself still works
    await fs.ops.releasedir(fh)
    assert [n for n, _ in await fs.ns.list_dir(fs.ns.node(box))] == ["out.txt"]  # type: ignore[arg-type]


async def test_a_file_whose_content_is_gone_fails_with_enoent(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/out.txt", b"deleted soon", report_bytes=False)
    box = await fs.inode("box")
    await fs.faults([{"route": "file_content", "action": "error", "status": 404, "count": None}])

    with pytest.raises(pyfuse3.FUSEError) as failed:
        await fs.lookup(box, "out.txt")
    assert errno_of(failed) == errno.ENOENT
