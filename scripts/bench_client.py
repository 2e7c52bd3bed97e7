#!/usr/bin/env python3
"""Benchmark: the client's streaming download (and upload) against curl, same file, same run.

Starts an emulator subprocess on loopback, uploads a file (256 MiB by default) with the
client, then downloads it several times with ``ApiClient.download`` and with
``curl -s -o /dev/null``, and prints MB/s (10^6 bytes per second) for both and their ratio.

    .venv/bin/python scripts/bench_client.py [--size-mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from emulator_proc import EmulatorProcess, start_emulator  # noqa: E402

from containerfs.api.client import ApiClient, ApiConfig  # noqa: E402
from containerfs.models import ContainerId, FileId  # noqa: E402

KEY = "sk-bench"
CHUNK = 8 * 1024 * 1024


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(CHUNK, left)
            fh.write(os.urandom(n))
            left -= n


def curl_time(args: list[str]) -> float:
    out = subprocess.run(
        ["curl", "-s", "-f", "-w", "%{time_total}", "-H", f"Authorization: Bearer {KEY}", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout)


async def client_download(client: ApiClient, cid: ContainerId, fid: FileId, size: int) -> float:
    start = time.perf_counter()
    got = 0
    async with client.download(cid, fid) as dl:
        async for chunk in dl.chunks():
            got += len(chunk)
    elapsed = time.perf_counter() - start
    if got != size:
        raise SystemExit(f"client downloaded {got} bytes, expected {size}")
    return elapsed


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


async def bench(em: EmulatorProcess, work: Path, *, size: int, runs: int) -> None:
    src = work / "blob.bin"
    make_file(src, size)
    async with ApiClient(ApiConfig(base_url=em.base_url, api_key=KEY, io_timeout=120)) as client:
        box = await client.create_container("bench")
        start = time.perf_counter()
        f = await client.upload_file(box.id, src, filename="blob.bin")
        up_client = time.perf_counter() - start
        assert f.bytes == size, f
        url = f"{em.base_url}/containers/{box.id}/files/{f.id}/content"
        up_curl = curl_time(["-o", "/dev/null", "-F", f"file=@{src};filename=curl.bin",
                             f"{em.base_url}/containers/{box.id}/files"])  # fmt: skip

        await client_download(client, box.id, f.id, size)  # warm the page cache and the pool
        curl_time(["-o", "/dev/null", url])
        client_times, curl_times = [], []
        for _ in range(runs):  # interleaved, so drift affects both alike
            client_times.append(await client_download(client, box.id, f.id, size))
            curl_times.append(await trio.to_thread.run_sync(curl_time, ["-o", "/dev/null", url]))

    c_rate = mbps(size, statistics.median(client_times))
    k_rate = mbps(size, statistics.median(curl_times))
    print(f"file: {size / 2**20:.0f} MiB, {runs} runs each, median")
    ratio = c_rate / k_rate
    print(f"download  client {c_rate:8.1f} MB/s   curl {k_rate:8.1f} MB/s   ratio {ratio:.2f}")
    print(
        f"upload    client {mbps(size, up_client):8.1f} MB/s   curl {mbps(size, up_curl):8.1f} MB/s"
        f"   ratio {up_curl / up_client:.2f}"
    )
    print(
        "download runs (s): client "
        + " ".join(f"{t:.3f}" for t in client_times)
        + " | curl "
        + " ".join(f"{t:.3f}" for t in curl_times)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl is needed for the comparison", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-client-"))
    try:
        with start_emulator(work / "emulator") as em:
            trio.run(functools.partial(bench, em, work, size=args.size_mib * 2**20, runs=args.runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
