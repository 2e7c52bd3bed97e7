"""Benchmark the read path: cold sequential reads through Reader vs iterating the source.

    .venv/bin/python scripts/bench_reader.py [--size-mib 256] [--chunk-kib 64] [--read-kib 128]

The source is in memory (chunks sliced from one bytes object, as an HTTP client hands out
fresh bytes per chunk), so the "direct" figure is an upper bound far above any network; the
ratio shows the cost the read path adds on top of the stream. A second pass paces the
source at --rate-mbs (default 1250 MB/s: httpx ``aiter_raw`` on loopback) to give the ratio
a FUSE user would see against a direct streaming GET. With --emulator, the source is the
real ``ApiClient`` streaming from a live emulator on loopback, and the baseline a direct
streaming GET of the same file through that client. Not a test: prints numbers only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import trio

from containerfs.models import ContainerId, FileId
from containerfs.read.reader import DownloadStream, Reader

CID = ContainerId("cntr_bench")
FID = FileId("cfile_" + "0" * 32)


class _Stream:
    def __init__(
        self, data: bytes, chunk: int, start: int, rate: float | None, end: int | None = None
    ) -> None:
        self.start = start
        self.end = len(data) if end is None else min(end, len(data))
        self.suspect: str | None = None
        self.size: int | None = len(data)
        self._data = data
        self._chunk = chunk
        self._rate = rate

    def chunks(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        data, step = self._data, self._chunk
        began = time.perf_counter()
        for pos in range(self.start, self.end, step):
            if self._rate is not None:
                # pace like a network: never ahead of rate bytes/s since the start
                ahead = (pos - self.start) / self._rate - (time.perf_counter() - began)
                if ahead > 0:
                    await trio.sleep(ahead)
            await trio.lowlevel.checkpoint()
            yield data[pos : min(pos + step, self.end)]


class MemorySource:
    def __init__(self, data: bytes, *, chunk: int, rate: float | None = None) -> None:
        self.data = data
        self.chunk = chunk
        self.rate = rate

    @asynccontextmanager
    async def _download(self, offset: int, end: int | None) -> AsyncIterator[DownloadStream]:
        yield _Stream(self.data, self.chunk, offset, self.rate, end)

    def download(
        self,
        container_id: ContainerId,
        file_id: FileId,
        *,
        offset: int = 0,
        end: int | None = None,
        patience: object = None,
    ) -> AbstractAsyncContextManager[DownloadStream]:
        return self._download(offset, end)


async def direct(source: MemorySource) -> float:
    began = time.perf_counter()
    total = 0
    async with source.download(CID, FID) as dl:
        async for chunk in dl.chunks():
            total += len(chunk)
    assert total == len(source.data)
    return time.perf_counter() - began


async def through_reader(source: MemorySource, read_size: int) -> tuple[float, Reader]:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            reader = await Reader.create(
                source, cache_dir=Path(tmp) / "cache", max_size=1 << 40, nursery=nursery
            )
            began = time.perf_counter()
            handle = await reader.open(CID, FID, len(source.data))
            offset = 0
            while True:
                data = await reader.read(handle, offset, read_size)
                if not data:
                    break
                offset += len(data)
            elapsed = time.perf_counter() - began
            assert offset == len(source.data)
            await reader.release(handle)
            # let the sidecar write finish before the directory goes away
            while reader.statistics().active_downloads:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    return elapsed, reader


async def emulator_pass(data: bytes, read_kibs: list[int], repeat: int) -> None:
    from containerfs.api.client import ApiClient
    from containerfs.config import ApiConfig

    proc = subprocess.Popen(
        [sys.executable, "-m", "containerfs", "emulator", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        url = line.strip().rsplit(" ", 1)[-1]
        client = ApiClient(ApiConfig(base_url=url, api_key="bench"))
        try:
            container = await client.create_container("bench")
            with tempfile.NamedTemporaryFile() as fh:
                fh.write(data)
                fh.flush()
                remote = await client.upload_file(container.id, fh.name, filename="big.bin")

            async def direct_get() -> float:
                began = time.perf_counter()
                total = 0
                async with client.download(container.id, remote.id) as dl:
                    async for chunk in dl.chunks():
                        total += len(chunk)
                assert total == len(data)
                return time.perf_counter() - began

            async def get_to_file() -> float:
                # what any disk cache pays at least: the GET plus writing it out
                began = time.perf_counter()
                with tempfile.TemporaryFile() as out:
                    async with client.download(container.id, remote.id) as dl:
                        async for chunk in dl.chunks():
                            await trio.to_thread.run_sync(out.write, chunk)
                return time.perf_counter() - began

            base = min([await direct_get() for _ in range(repeat)])
            to_file = min([await get_to_file() for _ in range(repeat)])
            size = len(data)
            print(f"[emulator] direct streaming GET: {size / base / 1e6:8.0f} MB/s")
            print(
                f"[emulator] GET written to a file:  {size / to_file / 1e6:8.0f} MB/s"
                f"  ratio {base / to_file:5.2f}"
            )
            for read_kib in read_kibs:
                best = float("inf")
                for _ in range(repeat):
                    with tempfile.TemporaryDirectory() as tmp:
                        async with trio.open_nursery() as nursery:
                            reader = await Reader.create(
                                client,
                                cache_dir=Path(tmp) / "cache",
                                max_size=1 << 40,
                                nursery=nursery,
                            )
                            began = time.perf_counter()
                            handle = await reader.open(container.id, remote.id, remote.bytes)
                            offset = 0
                            while data_ := await reader.read(handle, offset, read_kib << 10):
                                offset += len(data_)
                            best = min(best, time.perf_counter() - began)
                            assert offset == size
                            await reader.release(handle)
                            while reader.statistics().active_downloads:
                                await trio.sleep(0.01)
                            nursery.cancel_scope.cancel()
                print(
                    f"[emulator] reader, {read_kib:5d} KiB reads: {size / best / 1e6:8.0f} MB/s"
                    f"  ratio {base / best:5.2f}"
                )
        finally:
            await client.aclose()
    finally:
        proc.terminate()
        await trio.to_thread.run_sync(proc.wait)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-kib", type=int, default=64)
    parser.add_argument("--read-kib", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--rate-mbs", type=float, default=1250.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--emulator", action="store_true", help="also stream from an emulator")
    args = parser.parse_args()
    size: int = args.size_mib << 20
    data = os.urandom(size)

    if args.emulator:
        await emulator_pass(data, args.read_kib, args.repeat)

    def mbs(seconds: float) -> float:
        return size / seconds / 1e6

    for label, rate in (("unpaced", None), (f"paced {args.rate_mbs:.0f} MB/s", args.rate_mbs)):
        source = MemorySource(data, chunk=args.chunk_kib << 10, rate=rate and rate * 1e6)
        base = min([await direct(source) for _ in range(args.repeat)])
        print(f"[{label}] direct iteration: {mbs(base):8.0f} MB/s")
        for read_kib in args.read_kib:
            runs = [await through_reader(source, read_kib << 10) for _ in range(args.repeat)]
            best, reader = min(runs, key=lambda r: r[0])
            stats = reader.statistics()
            print(
                f"[{label}] reader, {read_kib:5d} KiB reads: {mbs(best):8.0f} MB/s"
                f"  ratio {base / best:5.2f}"
                f"  (fetched {stats.bytes_fetched >> 20} MiB,"
                f" served {stats.bytes_served >> 20} MiB)"
            )


if __name__ == "__main__":
    trio.run(main)
