"""Reader: one streaming download per file version, reads served as bytes arrive, disk cache."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import itertools
import json
import os
import stat
import tempfile
import unittest.mock
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from containerfs.api.retrying import Backoff, Patience
from containerfs.config import DOWNLOAD_RETRIES
from containerfs.errors import (
    ApiConnectionError,
    ApiError,
    CacheError,
    ContentMismatch,
    NotFound,
)
from containerfs.models import ContainerId, FileId
from containerfs.read.diskcache import CacheEntry, entry_name
from containerfs.read.entries import Entry
from containerfs.read.pieces import PIECE_MAX, Pieces, RangeSupport
from containerfs.read.reader import ContentSource, DownloadStream, Reader, ReadHandle
from containerfs.read.settings import DownloadSettings, ReaderSettings

CID = ContainerId("cntr_1")
FID = FileId("cfile_" + "a" * 32)
FID2 = FileId("cfile_" + "b" * 32)
NO_DELAYS = Backoff(base=0.0, cap=0.0)


def payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


class FakeStream:
    def __init__(
        self, source: FakeSource, file_id: FileId, start: int, data: bytes, end: int | None = None
    ) -> None:
        self._source = source
        self._file_id = file_id
        self.start = start
        self.end = len(data) if end is None else end
        self.size: int | None = None if source.hide_size else len(data)
        self.suspect = source.suspect
        self._data = data

    def chunks(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        src = self._source
        pos = self.start
        sizes = iter(src.chunk_sizes) if src.chunk_sizes else None
        while pos < self.end:
            size = next(sizes, src.chunk_size) if sizes is not None else src.chunk_size
            end = min(pos + max(size, 1), self.end)
            # pacing: wait until the test allows these bytes
            while src.limit is not None and end > src.limit and (src.pace_ranged or not self.start):
                await src.changed.wait()
            fail = next((f for f in src.fail_at if pos <= f < end), None)
            if fail is not None:
                src.fail_at.remove(fail)
                if fail > pos:
                    yield self._data[pos:fail]
                raise src.failure_type("stream broke")
            await trio.lowlevel.checkpoint()
            yield self._data[pos:end]
            src.yielded = end
            pos = end


class FakeSource:
    """In-memory content, chunked, with pacing, mid-stream failures, and Range on or off."""

    def __init__(self, files: dict[FileId, bytes], *, chunk_size: int = 1000) -> None:
        self.files = files
        self.chunk_size = chunk_size
        self.chunk_sizes: list[int] = []
        self.honour_range = True
        self.hide_size = False
        self.limit: int | None = None  # bytes allowed through (None: no pacing)
        self.pace_ranged = True  # False: streams asked for an offset > 0 are never held back
        self.changed = trio.Event()
        self.fail_at: list[int] = []  # absolute offsets where a stream breaks (once each)
        self.failure_type: type[ApiError] = ApiConnectionError
        self.calls: list[tuple[FileId, int]] = []
        self.yielded = 0
        self.open_error: ApiError | None = None
        self.suspect: str | None = None  # what every stream says about its own body

    def allow(self, limit: int | None) -> None:
        self.limit = limit
        self.changed.set()
        self.changed = trio.Event()

    @asynccontextmanager
    async def _download(
        self, file_id: FileId, offset: int, end: int | None
    ) -> AsyncIterator[DownloadStream]:
        self.calls.append((file_id, offset))
        await trio.lowlevel.checkpoint()
        if self.open_error is not None:
            raise self.open_error
        data = self.files[file_id]
        ranged = self.honour_range and offset <= len(data) and (offset or end is not None)
        start = offset if ranged else 0
        stop = min(end, len(data)) if ranged and end is not None else None
        yield FakeStream(self, file_id, start, data, stop)

    def download(
        self,
        container_id: ContainerId,
        file_id: FileId,
        *,
        offset: int = 0,
        end: int | None = None,
        patience: Patience | None = None,
    ) -> AbstractAsyncContextManager[DownloadStream]:
        return self._download(file_id, offset, end)


def _check_protocol(source: FakeSource) -> ContentSource:
    return source  # for mypy: the fake satisfies the protocol the reader needs


def reader_settings(**options: Any) -> ReaderSettings:
    """Reader settings with no delay between download attempts; ``options`` name fields of
    ``ReaderSettings`` or of its ``DownloadSettings``."""
    download_fields = {f.name for f in dataclasses.fields(DownloadSettings)}
    download = {k: options.pop(k) for k in list(options) if k in download_fields}
    return ReaderSettings(download=DownloadSettings(backoff=NO_DELAYS, **download), **options)


@asynccontextmanager
async def make_reader(
    source: FakeSource, cache_dir: Path, *, max_size: int = 1 << 30, **options: Any
) -> AsyncIterator[Reader]:
    async with trio.open_nursery() as nursery:
        reader = await Reader.create(
            source,
            cache_dir=cache_dir,
            max_size=max_size,
            nursery=nursery,
            settings=reader_settings(**options),
        )
        yield reader
        nursery.cancel_scope.cancel()


async def read_all(reader: Reader, handle: ReadHandle, *, block: int = 4096) -> bytes:
    out = bytearray()
    while True:
        data = await reader.read(handle, len(out), block)
        if not data:
            return bytes(out)
        out += data


async def settle(reader: Reader) -> None:
    """Let background downloads, flushes and deletions run to completion."""
    with trio.fail_after(5):
        while reader.statistics().active_downloads or reader.deleting():
            await trio.sleep(0.001)
        await trio.testing.wait_all_tasks_blocked()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---- sharing and streaming ----


async def test_concurrent_readers_share_one_download(cache_dir: Path) -> None:
    data = payload(50_000)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir, flush_bytes=8192) as reader:
        results: dict[int, bytes] = {}

        async def cat(i: int) -> None:
            handle = await reader.open(CID, FID, len(data))
            results[i] = await read_all(reader, handle, block=3000 + i * 17)
            await reader.release(handle)

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(cat, i)
        assert all(r == data for r in results.values())
        assert source.calls == [(FID, 0)]
        stats = reader.statistics()
        assert stats.downloads_started == 1
        assert stats.bytes_fetched == len(data)
        assert stats.bytes_served == 5 * len(data)


async def test_a_pending_limit_below_one_flush_batch_still_completes(cache_dir: Path) -> None:
    # the flusher waits for a whole batch: a stream pausing before one would wait for ever
    data = payload(50_000)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir, flush_bytes=8192, max_pending=1000) as reader:
        handle = await reader.open(CID, FID, len(data))
        with trio.fail_after(5):
            assert await read_all(reader, handle) == data
        await reader.release(handle)


async def test_small_read_at_start_returns_before_stream_ends(cache_dir: Path) -> None:
    data = payload(100_000)
    source = FakeSource({FID: data}, chunk_size=1000)
    source.allow(1000)  # only the first chunk gets through
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        with trio.fail_after(2):
            assert await reader.read(handle, 0, 100) == data[:100]
        assert source.yielded == 1000
        assert reader.statistics().downloads_completed == 0
        # a read of bytes not yet sent waits, then returns once they arrive
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def later() -> None:
                got.append(await reader.read(handle, 5000, 10))

            nursery.start_soon(later)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            source.allow(None)
        assert got == [data[5000:5010]]
        await reader.release(handle)


async def test_open_never_waits_for_content(cache_dir: Path) -> None:
    source = FakeSource({FID: payload(10_000)})
    source.allow(0)
    async with make_reader(source, cache_dir) as reader:
        with trio.fail_after(1):
            handle = await reader.open(CID, FID, 10_000)
        assert handle.size == 10_000
        await reader.release(handle)
        source.allow(None)


async def test_reads_at_and_past_eof(cache_dir: Path) -> None:
    data = payload(5000)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await reader.read(handle, 4990, 100) == data[4990:]
        assert await reader.read(handle, 5000, 100) == b""
        assert await reader.read(handle, 10**9, 100) == b""
        assert await reader.read(handle, 0, 0) == b""
        await reader.release(handle)


async def test_empty_file(cache_dir: Path) -> None:
    source = FakeSource({FID: b""})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 0)
        assert await reader.read(handle, 0, 10) == b""
        await reader.release(handle)
        await settle(reader)
        assert reader.is_cached(FID, 0)


async def test_unknown_size_reads_whole_then_known_size(cache_dir: Path) -> None:
    data = payload(33_333)
    source = FakeSource({FID: data}, chunk_size=4096)
    source.hide_size = True
    async with make_reader(source, cache_dir, flush_bytes=10_000) as reader:
        handle = await reader.open(CID, FID, None)
        assert handle.size is None
        assert reader.known_size(FID) is None
        assert await read_all(reader, handle, block=8192) == data
        assert handle.size == len(data)
        assert reader.known_size(FID) == len(data)
        await reader.release(handle)
        await settle(reader)
        assert reader.is_cached(FID, None)
        assert reader.is_cached(FID, len(data))


async def test_large_file_through_disk_and_memory(cache_dir: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    source = FakeSource({FID: data}, chunk_size=65536)
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle, block=131072) == data
        # random re-reads after completion come from the cache file
        assert await reader.read(handle, 1_000_000, 2_000_000) == data[1_000_000:3_000_000]
        await reader.release(handle)


async def test_cancelled_read_does_not_break_the_download(cache_dir: Path) -> None:
    data = payload(20_000)
    source = FakeSource({FID: data})
    source.allow(1000)
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        with trio.move_on_after(0.01) as scope:
            await reader.read(handle, 10_000, 100)
        assert scope.cancelled_caught
        source.allow(None)
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        assert source.calls == [(FID, 0)]


async def test_download_continues_after_last_release(cache_dir: Path) -> None:
    data = payload(20_000)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await reader.read(handle, 0, 10) == data[:10]
        await reader.release(handle)
        await settle(reader)
        assert reader.is_cached(FID, len(data))


# ---- the persistent cache ----


async def test_cache_reused_by_a_new_reader_without_downloading(cache_dir: Path) -> None:
    data = payload(12_345)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        await settle(reader)
    async with make_reader(source, cache_dir) as reader:
        assert reader.is_cached(FID, len(data))
        assert reader.known_size(FID) == len(data)
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        stats = reader.statistics()
        assert (stats.hits, stats.misses, stats.downloads_started) == (1, 0, 0)
    assert source.calls == [(FID, 0)]


async def test_changed_file_id_is_a_different_entry(cache_dir: Path) -> None:
    old, new = payload(1000, 1), payload(1500, 2)
    source = FakeSource({FID: old, FID2: new})
    async with make_reader(source, cache_dir) as reader:
        for fid, expected in ((FID, old), (FID2, new), (FID, old)):
            handle = await reader.open(CID, fid, len(expected))
            assert await read_all(reader, handle) == expected
            await reader.release(handle)
            await settle(reader)
        assert source.calls == [(FID, 0), (FID2, 0)]
        assert reader.statistics().entries == 2


async def test_size_change_for_same_id_downloads_again(cache_dir: Path) -> None:
    data = payload(1000)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 1000)
        await read_all(reader, handle)
        await reader.release(handle)
        await settle(reader)
        assert not reader.is_cached(FID, 999)
        source.files[FID] = data + b"more"
        handle = await reader.open(CID, FID, 1004)
        assert await read_all(reader, handle) == data + b"more"
        await reader.release(handle)
        assert len(source.calls) == 2


async def test_cache_layout_is_private_and_named_by_file_id(cache_dir: Path) -> None:
    data = payload(100)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 100)
        await read_all(reader, handle)
        await reader.release(handle)
        await settle(reader)
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in cache_dir.iterdir()) == [f"{FID}.data", f"{FID}.json"]
    meta = json.loads((cache_dir / f"{FID}.json").read_text())
    assert meta == {"version": 1, "file_id": FID, "size": 100, "complete": True}
    assert (cache_dir / f"{FID}.data").read_bytes() == data


def test_entry_names_are_sanitised() -> None:
    assert entry_name("cfile_0123abc") == "cfile_0123abc"
    for hostile in ("../../etc/passwd", "a/b", ".", "..", "", "x" * 500, "é"):
        name = entry_name(hostile)
        assert "/" not in name and name not in {".", ".."}
        assert name.startswith("@") and len(name) == 65


async def test_interrupted_and_invalid_entries_are_discarded_at_start(cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o755)
    (cache_dir / f"{FID}.data").write_bytes(b"partial")  # crash mid-download: no sidecar
    (cache_dir / f"{FID2}.data").write_bytes(b"short")
    (cache_dir / f"{FID2}.json").write_text(
        json.dumps({"version": 1, "file_id": FID2, "size": 999, "complete": True})
    )
    (cache_dir / "junk.json.tmp").write_text("{")
    source = FakeSource({FID: payload(10), FID2: payload(20)})
    async with make_reader(source, cache_dir) as reader:
        assert not reader.is_cached(FID, None)
        assert not reader.is_cached(FID2, None)
        assert reader.statistics().entries == 0
    assert list(cache_dir.iterdir()) == []
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700


async def test_lru_eviction_bounds_usage_and_spares_open_and_pinned(cache_dir: Path) -> None:
    files = {FileId(f"cfile_{i:032x}"): payload(400, i) for i in range(6)}
    ids = list(files)
    source = FakeSource(dict(files))
    async with make_reader(source, cache_dir, max_size=1200) as reader:
        held = await reader.open(CID, ids[0], 400)  # stays open throughout
        assert await read_all(reader, held) == files[ids[0]]
        path = await reader.fetch(CID, ids[1], 400)  # pinned throughout
        assert path.read_bytes() == files[ids[1]]
        for fid in ids[2:]:
            handle = await reader.open(CID, fid, 400)
            assert await read_all(reader, handle) == files[fid]
            await reader.release(handle)
            await settle(reader)
            assert reader.is_cached(ids[0], 400)
            assert reader.is_cached(ids[1], 400)
            assert reader.statistics().cache_bytes_used <= 1200
        # only the most recently used closed entry fits next to the open and pinned ones
        assert [reader.is_cached(f, 400) for f in ids] == [True, True, False, False, False, True]
        await reader.release(held)
        reader.unpin(ids[1])
        await settle(reader)
        stats = reader.statistics()
        assert stats.evictions == 3
        assert stats.cache_bytes_used <= 1200
        await settle(reader)
    on_disk = sum(p.stat().st_size for p in cache_dir.glob("*.data"))
    assert on_disk <= 1200


async def test_eviction_order_follows_use(cache_dir: Path) -> None:
    files = {FileId(f"cfile_{i:032x}"): payload(400, i) for i in range(3)}
    a, b, c = files
    source = FakeSource(dict(files))
    async with make_reader(source, cache_dir, max_size=800) as reader:
        for fid in (a, b, a, c):  # a used again after b: b is the least recent
            handle = await reader.open(CID, fid, 400)
            await read_all(reader, handle)
            await reader.release(handle)
            await settle(reader)
        assert [reader.is_cached(f, 400) for f in (a, b, c)] == [True, False, True]


async def test_invalidate_drops_entry_and_next_open_downloads(cache_dir: Path) -> None:
    data = payload(3000)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 3000)
        await read_all(reader, handle)
        await reader.release(handle)
        await settle(reader)
        reader.invalidate(FID)
        assert not reader.is_cached(FID, 3000)
        assert reader.known_size(FID) is None
        await settle(reader)
        assert list(cache_dir.iterdir()) == []
        handle = await reader.open(CID, FID, 3000)
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        assert len(source.calls) == 2


async def test_invalidate_while_open_keeps_the_open_handle_readable(cache_dir: Path) -> None:
    data = payload(3000)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 3000)
        await read_all(reader, handle)
        await settle(reader)
        reader.invalidate(FID)
        await settle(reader)
        assert await read_all(reader, handle) == data
        await reader.release(handle)


# ---- reads far beyond the frontier ----


async def test_far_read_uses_a_ranged_download_when_honoured(cache_dir: Path) -> None:
    data = payload(200_000)
    source = FakeSource({FID: data}, chunk_size=1000)
    source.pace_ranged = False
    source.allow(1000)  # the main stream is stuck near the start
    async with make_reader(source, cache_dir, range_ahead=10_000) as reader:
        handle = await reader.open(CID, FID, len(data))
        with trio.fail_after(2):
            assert await reader.read(handle, 150_000, 100) == data[150_000:150_100]
            # the next reads of a tail reader come from the same window, no new request
            assert await reader.read(handle, 150_100, 4000) == data[150_100:154_100]
            assert await reader.read(handle, 199_990, 100) == data[199_990:]
        assert reader.statistics().range_reads == 2
        source.allow(None)
        assert await read_all(reader, handle) == data
        assert sorted(source.calls) == [(FID, 0), (FID, 150_000), (FID, 199_990)]
        await reader.release(handle)
        await settle(reader)
        assert (cache_dir / f"{FID}.data").read_bytes() == data


async def test_far_read_waits_for_the_stream_when_range_is_ignored(cache_dir: Path) -> None:
    data = payload(100_000)
    source = FakeSource({FID: data}, chunk_size=1000)
    source.honour_range = False
    source.pace_ranged = False
    source.allow(1000)
    async with make_reader(source, cache_dir, range_ahead=10_000) as reader:
        handle = await reader.open(CID, FID, len(data))
        got: list[bytes] = []

        async def far(offset: int) -> None:
            got.append(await reader.read(handle, offset, 100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(far, 90_000)
            nursery.start_soon(far, 50_000)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # both wait for the main stream
            source.allow(None)
        assert sorted(got) == sorted([data[90_000:90_100], data[50_000:50_100]])
        # one ranged attempt: after a 200 answer the reader does not ask again
        assert len(source.calls) == 2
        assert (FID, 0) in source.calls
        assert reader.statistics().range_reads == 0
        await reader.release(handle)


# ---- failures ----


@pytest.mark.parametrize("honour_range", [True, False])
async def test_mid_stream_failure_resumes_from_the_frontier(
    cache_dir: Path, honour_range: bool
) -> None:
    data = payload(30_000)
    source = FakeSource({FID: data})
    source.honour_range = honour_range
    source.fail_at = [12_500, 20_000]
    async with make_reader(source, cache_dir, flush_bytes=4096) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        await settle(reader)
        assert source.calls == [(FID, 0), (FID, 12_500), (FID, 20_000)]
        stats = reader.statistics()
        assert stats.retries == 2
        assert stats.downloads_completed == 1
        assert reader.is_cached(FID, len(data))
    assert (cache_dir / f"{FID}.data").read_bytes() == data


async def test_final_failure_wakes_waiters_and_a_later_open_retries(cache_dir: Path) -> None:
    data = payload(10_000)
    source = FakeSource({FID: data})
    source.fail_at = [5000] * 4  # more breaks than retries, none making progress
    async with make_reader(source, cache_dir) as reader:
        handles = [await reader.open(CID, FID, len(data)) for _ in range(3)]
        errors: list[BaseException] = []

        async def wait_far(h: ReadHandle) -> None:
            try:
                await reader.read(h, 9000, 100)
            except ApiError as exc:
                errors.append(exc)

        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                for h in handles:
                    nursery.start_soon(wait_far, h)
        assert len(errors) == 3
        assert all(isinstance(e, ApiConnectionError) for e in errors)
        assert all(e.errno == ApiConnectionError.errno for e in errors)  # type: ignore[attr-defined]
        # bytes that did arrive are still readable through the failed handle
        assert await reader.read(handles[0], 0, 100) == data[:100]
        for h in handles:
            await reader.release(h)
        assert reader.statistics().downloads_failed == 1
        assert not reader.is_cached(FID, None)
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        assert reader.statistics().downloads_started == 2


async def test_non_retryable_error_is_not_retried(cache_dir: Path) -> None:
    source = FakeSource({FID: payload(100)})
    source.open_error = NotFound("No such file")
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 100)
        with pytest.raises(NotFound) as info:
            await reader.read(handle, 0, 10)
        assert info.value.errno == NotFound.errno
        await reader.release(handle)
        assert len(source.calls) == 1
        source.open_error = None
        handle = await reader.open(CID, FID, 100)
        assert await read_all(reader, handle) == payload(100)
        await reader.release(handle)


async def test_fetch_returns_the_complete_file_and_raises_on_failure(cache_dir: Path) -> None:
    data = payload(70_000)
    source = FakeSource({FID: data, FID2: b"x"})
    async with make_reader(source, cache_dir, flush_bytes=8192) as reader:
        path = await reader.fetch(CID, FID, len(data))
        assert path.read_bytes() == data
        assert path.parent == cache_dir
        reader.unpin(FID)
        # a cached file is returned without another download
        path = await reader.fetch(CID, FID, len(data))
        assert path.read_bytes() == data
        reader.unpin(FID)
        assert source.calls == [(FID, 0)]
        source.open_error = NotFound("gone")
        with pytest.raises(NotFound):
            await reader.fetch(CID, FID2, 1)


async def test_read_after_release_is_rejected(cache_dir: Path) -> None:
    source = FakeSource({FID: payload(100)})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 100)
        await reader.release(handle)
        await reader.release(handle)  # idempotent
        with pytest.raises(Exception) as info:
            await reader.read(handle, 0, 1)
        assert getattr(info.value, "errno", None) == 9  # EBADF


# ---- property: any interleaving of reads returns exactly the right bytes ----


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    size = draw(st.integers(0, 6000))
    return {
        "size": size,
        "chunks": draw(st.lists(st.integers(1, 1500), min_size=1, max_size=20)),
        "honour_range": draw(st.booleans()),
        "known_size": draw(st.booleans()),
        "fail_at": draw(st.lists(st.integers(0, max(size - 1, 0)), max_size=2, unique=True)),
        "reads": draw(
            st.lists(
                st.tuples(st.integers(0, 3), st.integers(0, size + 500), st.integers(0, 2500)),
                min_size=1,
                max_size=12,
            )
        ),
        "steps": draw(st.lists(st.integers(1, 2000), max_size=8)),
        "flush": draw(st.sampled_from([1, 700, 4096, 1 << 20])),
        "range_ahead": draw(st.sampled_from([None, 0, 1000])),
        "recent": draw(st.sampled_from([0, 500, 1 << 20])),
        "direct": draw(st.booleans()),  # False: the cache's file system refuses O_DIRECT
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
async def test_random_interleavings_return_exact_bytes(scenario: dict[str, object]) -> None:
    size = scenario["size"]
    assert isinstance(size, int)
    data = os.urandom(size)
    source = FakeSource({FID: data})
    source.chunk_sizes = list(scenario["chunks"])  # type: ignore[call-overload]
    source.honour_range = bool(scenario["honour_range"])
    source.hide_size = not scenario["known_size"]
    source.fail_at = [f for f in scenario["fail_at"] if 0 < f < size]  # type: ignore[attr-defined]
    source.allow(0)
    listed = size if scenario["known_size"] else None
    refuse = contextlib.nullcontext() if scenario["direct"] else _refusing_direct_io()
    with tempfile.TemporaryDirectory() as tmp, refuse:
        async with make_reader(
            source,
            Path(tmp) / "c",
            flush_bytes=scenario["flush"],
            range_ahead=scenario["range_ahead"],
            recent_bytes=scenario["recent"],
        ) as reader:
            handles = [await reader.open(CID, FID, listed) for _ in range(4)]
            results: list[tuple[int, int, bytes]] = []

            async def do_read(h: int, offset: int, length: int) -> None:
                got = await reader.read(handles[h], offset, length)
                results.append((offset, length, got))

            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    for h, offset, length in scenario["reads"]:  # type: ignore[attr-defined]
                        nursery.start_soon(do_read, h, offset, length)
                    allowed = 0
                    for step in scenario["steps"]:  # type: ignore[attr-defined]
                        await trio.testing.wait_all_tasks_blocked()
                        allowed += step
                        source.allow(allowed)
                    source.allow(None)
            for offset, length, got in results:
                assert got == data[offset : offset + length]
            for h in handles:
                assert await read_all(reader, h, block=977) == data
                await reader.release(h)
            assert reader.statistics().downloads_started == 1


async def test_adopted_file_is_served_without_download_and_survives_restart(
    cache_dir: Path, tmp_path: Path
) -> None:
    data = payload(70_000)
    source = FakeSource({FID: data})
    spool = tmp_path / "spool"
    spool.write_bytes(data)
    async with make_reader(source, cache_dir) as reader:
        assert await reader.adopt(FID, spool)
        assert not spool.exists()
        assert reader.is_cached(FID, len(data))
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        spool.write_bytes(b"other")
        assert not await reader.adopt(FID, spool)  # already known: the caller keeps its file
        assert spool.exists()
    async with make_reader(source, cache_dir) as reader:
        assert reader.is_cached(FID, len(data))
    assert source.calls == []


async def test_adopt_refuses_a_file_larger_than_the_cache(cache_dir: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.write_bytes(payload(5000))
    async with make_reader(FakeSource({}), cache_dir, max_size=1000) as reader:
        assert not await reader.adopt(FID, spool)
        assert spool.exists()
        assert not reader.is_cached(FID, None)


# ---- learning the size of a file listed without one ----


async def test_learn_size_waits_only_for_the_headers_and_the_body_fills_the_cache(
    cache_dir: Path,
) -> None:
    data = payload(50_000)
    source = FakeSource({FID: data})
    source.allow(0)  # the body is held back: only the headers have arrived
    async with make_reader(source, cache_dir) as reader:
        with trio.fail_after(5):
            assert await reader.learn_size(CID, FID) == len(data)
        assert source.yielded == 0
        assert reader.known_size(FID) == len(data)
        source.allow(None)
        await settle(reader)
        assert reader.is_cached(FID, len(data))
        handle = await reader.open(CID, FID, None)
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        assert reader.statistics().size_probes == 1
    assert source.calls == [(FID, 0)]  # the read cost no second request


async def test_learn_size_of_a_file_in_the_cache_costs_no_request(cache_dir: Path) -> None:
    data = payload(3000)
    source = FakeSource({FID: data})
    source.hide_size = True
    async with make_reader(source, cache_dir) as reader:
        assert await reader.learn_size(CID, FID) == len(data)
        await settle(reader)
    async with make_reader(source, cache_dir) as reader:  # a remount
        assert reader.known_size(FID) == len(data)
        assert await reader.learn_size(CID, FID) == len(data)
        assert reader.statistics().size_probes == 0
    assert len(source.calls) == 1


async def test_learn_size_without_an_announced_size_waits_for_the_whole_body(
    cache_dir: Path,
) -> None:
    data = payload(20_000)
    source = FakeSource({FID: data})
    source.hide_size = True
    source.allow(10_000)
    learned: list[int] = []
    async with make_reader(source, cache_dir) as reader:
        async with trio.open_nursery() as nursery:

            async def learn() -> None:
                learned.append(await reader.learn_size(CID, FID))

            nursery.start_soon(learn)
            await trio.testing.wait_all_tasks_blocked()
            assert learned == []  # half the body says nothing about the size
            source.allow(None)
        assert learned == [len(data)]


async def test_concurrent_learn_size_calls_share_one_request(cache_dir: Path) -> None:
    data = payload(9000)
    source = FakeSource({FID: data})
    sizes: list[int] = []
    async with make_reader(source, cache_dir) as reader:
        async with trio.open_nursery() as nursery:
            for _ in range(5):

                async def learn() -> None:
                    sizes.append(await reader.learn_size(CID, FID))

                nursery.start_soon(learn)
        assert sizes == [len(data)] * 5
    assert source.calls == [(FID, 0)]


async def test_learn_size_raises_the_error_of_a_failed_content_request(cache_dir: Path) -> None:
    source = FakeSource({FID: payload(100)})
    source.open_error = NotFound("no such file")
    async with make_reader(source, cache_dir) as reader:
        with pytest.raises(NotFound):
            await reader.learn_size(CID, FID)
        assert reader.known_size(FID) is None


async def test_a_large_file_probed_for_its_size_is_not_downloaded(cache_dir: Path) -> None:
    data = payload(100_000)
    source = FakeSource({FID: data})
    source.allow(0)
    async with make_reader(source, cache_dir, probe_keep_bytes=10_000) as reader:
        assert await reader.learn_size(CID, FID) == len(data)
        await settle(reader)
        stats = reader.statistics()
        assert (stats.size_probes, stats.size_probes_dropped) == (1, 1)
        assert not reader.is_cached(FID, None)
        assert reader.known_size(FID) == len(data)  # the announcement is kept
        source.allow(None)
        handle = await reader.open(CID, FID, None)  # a reader downloads it for real
        assert await read_all(reader, handle) == data
        await reader.release(handle)
    assert source.calls == [(FID, 0), (FID, 0)]


async def test_only_a_few_long_probe_downloads_run_unread(cache_dir: Path) -> None:
    files = {FileId(f"cfile_{i:032x}"): payload(3 << 20, i) for i in range(4)}
    source = FakeSource(files)
    source.allow(0)
    async with make_reader(source, cache_dir, probe_keep_downloads=2) as reader:
        for fid, data in files.items():
            assert await reader.learn_size(CID, fid) == len(data)
        assert reader.statistics().size_probes_dropped == 2
        source.allow(None)
        await settle(reader)
        assert sum(reader.is_cached(fid, None) for fid in files) == 2


# ---- bodies checked before they are trusted ----


async def test_a_body_shorter_than_listed_is_retried_then_fails_never_a_short_read(
    cache_dir: Path,
) -> None:
    data = payload(12)  # whole by its own framing (announced 12), but listed at 20
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 20)
        with pytest.raises(ContentMismatch) as caught:
            await read_all(reader, handle)
        await reader.release(handle)
        await settle(reader)
        assert caught.value.errno == errno.EIO
        # retried, resuming where the body ended
        assert source.calls == [(FID, 0)] + [(FID, 12)] * DOWNLOAD_RETRIES
        assert not reader.is_cached(FID, None) and reader.content_size(FID) is None


async def test_a_body_longer_than_listed_wins_and_proves_the_size(cache_dir: Path) -> None:
    data = payload(10)
    source = FakeSource({FID: data})
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 4)
        assert reader.content_size(FID) is None  # nothing proved before the body ended
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        await settle(reader)
        assert reader.content_size(FID) == 10 and reader.is_cached(FID, 10)


async def test_an_error_page_longer_than_listed_is_refused(cache_dir: Path) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    source = FakeSource({FID: page})
    source.suspect = "served as text/html"
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, 4)
        with pytest.raises(ContentMismatch):
            await read_all(reader, handle)
        await reader.release(handle)
        await settle(reader)
        assert reader.content_size(FID) is None and not reader.is_cached(FID, None)


async def test_a_suspect_body_of_the_listed_size_is_trusted(cache_dir: Path) -> None:
    data = b"<html>a real page</html>"
    source = FakeSource({FID: data})
    source.suspect = "served as text/html"
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle) == data
        await reader.release(handle)
        await settle(reader)
    async with make_reader(source, cache_dir) as again:
        assert again.is_cached(FID, len(data))


async def test_a_suspect_body_of_unknown_size_serves_now_but_is_not_kept_across_a_restart(
    cache_dir: Path,
) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    source = FakeSource({FID: page})
    source.suspect = "served as text/html"
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, None)
        assert await read_all(reader, handle) == page  # nothing tells it from the file
        await reader.release(handle)
        await settle(reader)
    source.files[FID], source.suspect = b"the real notes", None
    async with make_reader(source, cache_dir) as again:
        assert not again.is_cached(FID, None)
        handle = await again.open(CID, FID, None)
        assert await read_all(again, handle) == b"the real notes"
        await again.release(handle)
        await settle(again)
    async with make_reader(source, cache_dir) as third:
        assert third.is_cached(FID, len(b"the real notes"))


# ---- parallel pieces of a large file --------------------------------------------------------

BIG = 21 << 20  # past PARALLEL_MIN, several pieces


async def test_a_large_file_downloads_in_parallel_ranged_pieces_byte_exact(
    cache_dir: Path,
) -> None:
    data = os.urandom(BIG)
    source = FakeSource({FID: data}, chunk_size=256 * 1024)
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle, block=128 * 1024) == data
        await settle(reader)
        offsets = sorted(offset for _, offset in source.calls)
        # the first piece from 0 (asked first), then pieces in flight together that grew
        assert source.calls[0] == (FID, 0) and len(set(offsets)) == len(offsets) >= 4
        gaps = [b - a for a, b in itertools.pairwise(offsets)]
        assert gaps[-1] > gaps[0]
        assert reader.statistics().pieces == len(offsets)


async def test_a_server_ignoring_range_gets_one_stream_and_is_not_asked_again(
    cache_dir: Path,
) -> None:
    data, other = os.urandom(BIG), os.urandom(BIG)
    source = FakeSource({FID: data, FID2: other}, chunk_size=256 * 1024)
    source.honour_range = False
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle, block=128 * 1024) == data
        handle2 = await reader.open(CID, FID2, len(other))
        assert await read_all(reader, handle2, block=128 * 1024) == other
        await settle(reader)
        # the first piece's 200 was read to the end: one request per file, no bytes lost
        assert source.calls == [(FID, 0), (FID2, 0)]
        assert reader.statistics().bytes_fetched == 2 * BIG


async def test_a_broken_piece_falls_back_to_one_stream_from_the_frontier(
    cache_dir: Path,
) -> None:
    data = os.urandom(BIG)
    source = FakeSource({FID: data}, chunk_size=256 * 1024)
    source.fail_at = [5 << 20, 12 << 20]
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle, block=128 * 1024) == data
        await settle(reader)
        assert reader.statistics().retries >= 1
        # after the failure one open-ended stream from the frontier finished the file
        assert source.calls[-1][1] > 0


async def test_a_whole_file_answer_to_the_first_piece_waits_for_the_disk_in_bounded_memory(
    tmp_path: Path,
) -> None:
    data = os.urandom(BIG)
    source = FakeSource({FID: data}, chunk_size=256 * 1024)
    source.honour_range = False
    cached = CacheEntry(FID, tmp_path / "d", tmp_path / "m", complete=False, size=BIG)
    entry = Entry(cached, CID, BIG)
    appended = 0
    disk = trio.Event()  # the disk takes 1 MiB, then nothing until set

    async def append(chunk: bytes) -> None:
        nonlocal appended
        appended += len(chunk)
        if appended >= 1 << 20:
            await disk.wait()

    pieces = Pieces(
        entry,
        BIG,
        open_range=lambda start, end: source.download(CID, FID, offset=start, end=end),
        append=append,
        support=RangeSupport(),
        on_bytes=lambda n: None,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pieces.run)
        await trio.testing.wait_all_tasks_blocked()
        # the answer is not read ahead of the disk by more than a piece's worth
        assert 0 < source.yielded - appended <= PIECE_MAX + source.chunk_size
        disk.set()
    assert appended == BIG and source.calls == [(FID, 0)]


# ---- the cache file, written with direct I/O ----


@contextlib.contextmanager
def _refusing_direct_io(*, at: str = "open") -> Iterator[list[int]]:
    """A cache file system without O_DIRECT: refused at ``open``, or at the first ``write``
    (as some accept the flag and fail the transfer). Yields the refusals counted."""
    refusals: list[int] = []
    real_open, real_pwrite = os.open, os.pwrite

    def no_direct_open(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT and at == "open":
            refusals.append(1)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    def no_direct_pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refusals.append(1)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    with (
        unittest.mock.patch.object(os, "open", no_direct_open),
        unittest.mock.patch.object(os, "pwrite", no_direct_pwrite),
    ):
        yield refusals


@pytest.mark.parametrize("refused", [None, "open", "write"])
@pytest.mark.parametrize("size", [1, 4095, 4096, 3 * 4096 + 1, 300_001])
async def test_the_cache_file_holds_the_exact_content_however_it_was_written(
    cache_dir: Path, size: int, refused: str | None
) -> None:
    data = os.urandom(size)
    source = FakeSource({FID: data})
    source.chunk_sizes = [1, 4095, 4097, 77, 8192, 100_000]
    refuse: contextlib.AbstractContextManager[list[int]] = (
        contextlib.nullcontext([]) if refused is None else _refusing_direct_io(at=refused)
    )
    with refuse as refusals:
        async with make_reader(source, cache_dir, flush_bytes=5000) as reader:
            handle = await reader.open(CID, FID, size)
            assert await read_all(reader, handle, block=3001) == data
            await reader.release(handle)
            await settle(reader)
        if refused is not None:
            assert refusals  # the refusal did happen, and the fallback took over
    assert (cache_dir / f"{FID}.data").read_bytes() == data
    # and a new reader serves it from the cache, without a download
    source.calls.clear()
    async with make_reader(source, cache_dir) as reader:
        handle = await reader.open(CID, FID, size)
        assert await read_all(reader, handle, block=65536) == data
        await reader.release(handle)
    assert source.calls == []


async def test_a_cache_write_failing_otherwise_fails_the_download(cache_dir: Path) -> None:
    data = os.urandom(50_000)
    source = FakeSource({FID: data})

    def broken(fd: int, buf: object, offset: int) -> int:
        raise OSError(errno.EIO, "Input/output error")

    async with make_reader(source, cache_dir, flush_bytes=4096) as reader:
        with (
            unittest.mock.patch.object(os, "pwrite", broken),
            unittest.mock.patch.object(os, "pwritev", broken),
        ):
            handle = await reader.open(CID, FID, len(data))
            # bytes already in memory may still be served, never wrong ones
            with contextlib.suppress(CacheError):
                assert await read_all(reader, handle, block=50_000) == data
            await reader.release(handle)
            await settle(reader)
        assert reader.statistics().downloads_failed == 1
    assert not (cache_dir / f"{FID}.json").exists()


async def test_a_body_in_tiny_chunks_still_completes_its_cache_file(cache_dir: Path) -> None:
    # a server sending a few bytes per chunk: more pending segments than one pwritev takes,
    # together less than one direct block; the last flush must still take them all
    data = os.urandom(3000)
    source = FakeSource({FID: data}, chunk_size=1)
    async with make_reader(source, cache_dir, flush_bytes=1) as reader:
        handle = await reader.open(CID, FID, len(data))
        assert await read_all(reader, handle, block=700) == data
        await reader.release(handle)
        await settle(reader)
        assert reader.statistics().downloads_completed == 1
    assert (cache_dir / f"{FID}.data").read_bytes() == data
    assert (cache_dir / f"{FID}.json").exists()
