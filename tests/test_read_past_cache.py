"""Reads never fail for lack of cache space: a file larger than the cache, or one whose cache
disk is full even after evicting what is not in use, is read past the cache (its own stream,
a bounded window in memory, nothing kept). Small disks are tmpfs mounts (root only)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from test_reader import CID, FID, FID2, FakeSource, make_reader, payload, read_all, settle

from containerfs.models import FileId


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs for the cache (unmounted after)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def cache_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir())


async def test_a_file_larger_than_the_cache_is_read_whole_and_not_kept(tmp_path: Path) -> None:
    data = payload(50_000)
    source = FakeSource({FID: data})
    cache_dir = tmp_path / "cache"
    async with make_reader(source, cache_dir, max_size=10_000, max_pending=4000) as reader:
        handle = await reader.open(CID, FID, len(data))
        with trio.fail_after(5):
            assert await read_all(reader, handle, block=1500) == data
        await reader.release(handle)
        await settle(reader)
        assert reader.statistics().past_cache == 1
        assert not reader.is_cached(FID, len(data))
    assert cache_files(cache_dir) == []


async def test_a_read_behind_the_window_streams_again_from_there(tmp_path: Path) -> None:
    data = payload(50_000)
    source = FakeSource({FID: data})
    source.honour_range = False  # the stream starts again at 0 and skips to the read
    async with make_reader(source, tmp_path / "cache", max_size=10_000, max_pending=4000) as r:
        handle = await r.open(CID, FID, len(data))
        with trio.fail_after(5):
            assert await r.read(handle, 30_000, 1500) == data[30_000:31_500]
            assert await r.read(handle, 2_000, 1500) == data[2_000:3_500]
            assert await r.read(handle, 49_000, 5000) == data[49_000:]
            assert await r.read(handle, 50_000, 10) == b""
        await r.release(handle)
    assert source.calls == [(FID, 0), (FID, 2_000)]


async def test_a_full_cache_disk_evicts_what_is_not_in_use_first(small_disk: Path) -> None:
    old = {FileId(f"cfile_{i:032x}"): payload(20_000, i) for i in range(3)}
    data = payload(40_000, 9)
    source = FakeSource({**old, FID: data})
    async with make_reader(source, small_disk, flush_bytes=4096) as reader:
        for fid, content in old.items():  # 60 KB of 64: no room left for 40 KB
            handle = await reader.open(CID, fid, len(content))
            assert await read_all(reader, handle) == content
            await reader.release(handle)
            await settle(reader)
        handle = await reader.open(CID, FID, len(data))
        with trio.fail_after(5):
            assert await read_all(reader, handle) == data
        await reader.release(handle)
        await settle(reader)
        assert reader.is_cached(FID, len(data))  # kept: the oldest entries made room
        assert not reader.is_cached(next(iter(old)), 20_000)
        assert reader.statistics().past_cache == 0


async def test_a_full_cache_disk_with_nothing_to_evict_serves_every_reader(
    small_disk: Path,
) -> None:
    data = payload(200_000)  # three times the disk
    source = FakeSource({FID: data, FID2: payload(30_000, 1)})
    async with make_reader(source, small_disk, flush_bytes=4096, max_pending=16_384) as reader:
        held = await reader.open(CID, FID2, 30_000)  # open: not evictable
        assert len(await read_all(reader, held)) == 30_000
        results: dict[int, bytes] = {}

        async def cat(i: int) -> None:
            handle = await reader.open(CID, FID, len(data))
            results[i] = await read_all(reader, handle, block=8192)
            await reader.release(handle)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(cat, i)
            again = await reader.open(CID, FID, len(data))  # past the cache from the start
            assert await read_all(reader, again) == data
            await reader.release(again)
        assert results == {0: data, 1: data, 2: data}
        assert reader.statistics().past_cache >= 3
        await reader.release(held)
        await settle(reader)
        assert not reader.is_cached(FID, len(data))
    assert all(not name.startswith(FID) for name in cache_files(small_disk))
