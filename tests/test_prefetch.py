"""Prefetch across files: a directory walk in listing order downloads the next small files
before they are opened; out-of-order opens, ``prefetch=False`` and a busy rate limit do not;
a failed prefetch never fails the real read. Handler-level, over the in-process emulator."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from fs_harness import CTX, Fs, build_fs, close_fs

from containerfs.api.retrying import RateLimiter
from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import CacheEntry
from containerfs.read.entries import Entry
from containerfs.read.prefetch import Prefetcher, PrefetchSettings
from containerfs.snapshots import ReaderStats

FILES = 12


def _content(i: int) -> bytes:
    return (f"file {i:02d} ".encode() * 300)[: 2000 + i]


async def _walk_dir(fs: Fs) -> tuple[ContainerId, int]:
    c = await fs.container("walk")
    for i in range(FILES):
        await fs.add_file(c.id, f"/mnt/data/d/f{i:02d}.txt", _content(i))
    return c.id, await fs.inode("walk", "d")


async def _opendir(fs: Fs, inode: int) -> None:
    await fs.ops.releasedir(await fs.ops.opendir(inode, CTX))


async def _read(fs: Fs, dir_inode: int, i: int) -> bytes:
    return await fs.read_file((await fs.lookup(dir_inode, f"f{i:02d}.txt")).st_ino)


async def _requests(fs: Fs) -> dict[str, int]:
    response = await fs.admin.get("/_emulator/stats")
    response.raise_for_status()
    counts: dict[str, int] = response.json()["requests"]
    return counts


async def _settled(fs: Fs) -> ReaderStats:
    """The reader's statistics once no download runs any more."""
    with trio.fail_after(10):
        while (stats := fs.ops.reader.statistics()).active_downloads:
            await trio.sleep(0.01)
    return stats


@pytest.fixture
async def quiet_fs(tmp_path: Path, app: Any) -> AsyncIterator[Fs]:
    async with trio.open_nursery() as nursery:
        made = await build_fs(tmp_path, nursery, app, prefetch=False)
        yield made
        nursery.cancel_scope.cancel()
    await close_fs(made)


async def test_a_walk_in_listing_order_fetches_the_next_files_before_they_are_opened(
    fs: Fs,
) -> None:
    _, d = await _walk_dir(fs)
    await _opendir(fs, d)
    base = (await _requests(fs)).get("file_content", 0)
    assert await _read(fs, d, 0) == _content(0)
    assert await _read(fs, d, 1) == _content(1)
    stats = await _settled(fs)
    # fetched before anyone opened them: the requests are already made
    assert stats.prefetches >= 8
    assert (await _requests(fs))["file_content"] - base == 2 + stats.prefetches
    for i in range(2, FILES):
        assert await _read(fs, d, i) == _content(i)
    stats = await _settled(fs)
    # every file was fetched once, prefetched or not, and every prefetch was used (a read
    # that gets to a file before its prefetch starts, on a loaded machine, fetches it itself)
    assert (await _requests(fs))["file_content"] - base == FILES
    assert stats.prefetches == stats.prefetches_used >= 8
    assert stats.prefetches_failed == 0


async def test_a_walk_in_inode_order_as_cp_r_makes_it_is_followed_too(fs: Fs) -> None:
    c = await fs.container("shuffled")
    order = [7, 2, 11, 0, 5, 9, 1, 4, 10, 3, 8, 6]  # created (and numbered) out of name order
    for i in order:
        await fs.add_file(c.id, f"/mnt/data/d/f{i:02d}.txt", _content(i))
    d = await fs.inode("shuffled", "d")
    await _opendir(fs, d)
    base = (await _requests(fs)).get("file_content", 0)
    inodes = {i: (await fs.lookup(d, f"f{i:02d}.txt")).st_ino for i in range(FILES)}
    by_inode = sorted(range(FILES), key=inodes.__getitem__)
    assert by_inode != list(range(FILES))
    for i in by_inode[:2]:
        assert await fs.read_file(inodes[i]) == _content(i)
    assert (await _settled(fs)).prefetches >= 8
    for i in by_inode[2:]:
        assert await fs.read_file(inodes[i]) == _content(i)
    stats = await _settled(fs)
    assert (await _requests(fs))["file_content"] - base == FILES  # each file once
    assert stats.prefetches == stats.prefetches_used >= 8


def _in_a_row(order: list[int], opens: list[int]) -> bool:
    """Whether ``opens`` starts ``order`` or takes two of its files in a row."""
    at = {f: k for k, f in enumerate(order)}
    return opens[0] == order[0] or any(at[b] == at[a] + 1 for a, b in itertools.pairwise(opens))


async def test_opens_out_of_listing_order_fetch_nothing_ahead(fs: Fs) -> None:
    _, d = await _walk_dir(fs)
    await _opendir(fs, d)
    # out of the listing's order and of the inodes' (which follow the files' random ids)
    inodes = {i: (await fs.lookup(d, f"f{i:02d}.txt")).st_ino for i in range(FILES)}
    by_inode = sorted(range(FILES), key=inodes.__getitem__)
    candidates = (random.Random(seed).sample(range(FILES), 6) for seed in range(1000))
    opens = next(
        p for p in candidates if not _in_a_row(list(range(FILES)), p) and not _in_a_row(by_inode, p)
    )
    for i in opens:
        assert await _read(fs, d, i) == _content(i)
    assert (await _settled(fs)).prefetches == 0


async def test_prefetch_stops_when_the_walk_breaks(fs: Fs) -> None:
    _, d = await _walk_dir(fs)
    await _opendir(fs, d)
    await _read(fs, d, 0)
    await _read(fs, d, 1)
    walked = (await _settled(fs)).prefetches
    assert walked > 0
    # a jump back to where nothing was prefetched, then more jumps: no new prefetch
    for i in (FILES - 1, 0, FILES - 2, 1):
        await _read(fs, d, i)
    assert (await _settled(fs)).prefetches == walked


async def test_without_a_listing_there_is_no_walk(fs: Fs) -> None:
    _, d = await _walk_dir(fs)
    for i in range(4):  # opens by name (lookup) only, as `cat d/f00 d/f01 ...` does
        assert await _read(fs, d, i) == _content(i)
    assert (await _settled(fs)).prefetches == 0


async def test_prefetch_off_fetches_one_file_per_open(quiet_fs: Fs) -> None:
    _, d = await _walk_dir(quiet_fs)
    await _opendir(quiet_fs, d)
    base = (await _requests(quiet_fs)).get("file_content", 0)
    for i in range(4):
        assert await _read(quiet_fs, d, i) == _content(i)
    stats = await _settled(quiet_fs)
    assert stats.prefetches == 0
    assert (await _requests(quiet_fs))["file_content"] - base == 4


async def test_a_failed_prefetch_never_fails_the_real_read(fs: Fs) -> None:
    _, d = await _walk_dir(fs)
    assert await _read(fs, d, 1) == _content(1)  # cached before the walk: its open costs nothing
    await _opendir(fs, d)
    assert await _read(fs, d, 0) == _content(0)
    # every prefetch the next open starts is refused (not a retryable error)
    await fs.faults([{"route": "file_content", "action": "error", "status": 400, "count": 8}])
    assert await _read(fs, d, 1) == _content(1)
    stats = await _settled(fs)
    assert stats.prefetches == stats.prefetches_failed == 8
    await fs.faults([])
    for i in range(2, FILES):
        assert await _read(fs, d, i) == _content(i)


async def test_a_prefetch_takes_only_the_rate_limit_nobody_uses() -> None:
    now = [0.0]

    async def no_sleep(_: float) -> None:
        return None

    limiter = RateLimiter(60, burst=2, clock=lambda: now[0], sleep=no_sleep)
    assert limiter.idle()
    await limiter.acquire()
    assert limiter.idle()  # one of the burst of two left
    await limiter.acquire()
    assert not limiter.idle()
    now[0] += 1.0  # one request a second
    assert limiter.idle()

    started: list[FileId] = []

    def start(cid: ContainerId, fid: FileId, size: int) -> None:
        started.append(fid)

    async with trio.open_nursery() as nursery:
        busy = Prefetcher(start, nursery=nursery, settings=PrefetchSettings(), spare=lambda: False)
        c = ContainerId("c")
        busy.want([(c, FileId("a"), 10), (c, FileId("b"), 10)])
        assert started == [] and busy.statistics().deferred == 1


async def test_prefetch_is_bounded_in_files_and_bytes_and_skips_large_files() -> None:
    started: list[FileId] = []
    entries: dict[FileId, Entry] = {}

    def start(cid: ContainerId, fid: FileId, size: int) -> Entry:
        started.append(fid)
        cached = CacheEntry(fid, Path(os.devnull), Path(os.devnull), complete=False, size=size)
        entry = Entry(cached, cid, size)
        entries[fid] = entry
        return entry

    c = ContainerId("c")
    settings = PrefetchSettings(files=3, bytes=250, max_file=100)
    async with trio.open_nursery() as nursery:
        p = Prefetcher(start, nursery=nursery, settings=settings)
        p.want(
            [
                (c, FileId("big"), 101),
                (c, FileId("a"), 100),
                (c, FileId("b"), 100),
                (c, FileId("c"), 100),
            ]
        )
        assert started == ["a", "b"]  # "big" is too large; "c" would pass the byte bound
        entries[FileId("a")].settled.set()
        await trio.testing.wait_all_tasks_blocked()
        p.want(
            [
                (c, FileId("b"), 100),
                (c, FileId("c"), 10),
                (c, FileId("d"), 10),
                (c, FileId("e"), 10),
            ]
        )
        assert started == ["a", "b", "c", "d"]  # three in flight at most
        nursery.cancel_scope.cancel()
