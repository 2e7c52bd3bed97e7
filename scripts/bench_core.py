"""The ``core`` scenario: the mount against direct HTTP to the same emulator, on loopback.

Benchmark tooling, not part of containerfs. Measures, in each pass: a cold sequential read of
a ``--size-mib`` random file through a fresh mount with an empty disk cache, against direct
streaming GETs with curl and with httpx; warm re-reads from the page cache and, after a
remount, from the disk cache; the daemon's CPU and peak RSS during the cold read; ``head -c
100`` of a cold file; ``cp`` into the mount against a curl multipart upload. Once: the API
calls of a first and a repeated ``ls -l`` of a ``--files``-file container.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

from bench_procs import (
    KEY,
    MIB,
    BenchError,
    Emulator,
    Mount,
    api_calls,
    cpu_seconds,
    curl,
    curl_get,
    curl_upload,
    first_bytes,
    read_ahead_kb,
    read_file,
    timed,
)
from bench_run import Record, Run, mbps, stopping

NAME = "core"


def httpx_get(url: str, size: int) -> tuple[float, float]:
    """(time to first byte, total) of a streaming GET with httpx under trio (the daemon's stack)."""
    import httpx
    import trio

    async def run() -> tuple[float, float]:
        headers = {"Authorization": f"Bearer {KEY}", "Accept-Encoding": "identity"}
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
            began = time.perf_counter()
            ttfb = 0.0
            got = 0
            async with client.stream("GET", url, headers=headers) as response:
                response.raise_for_status()
                async for chunk in response.aiter_raw():
                    if not got:
                        ttfb = time.perf_counter() - began
                    got += len(chunk)
            total = time.perf_counter() - began
        if got != size:
            raise BenchError(f"httpx got {got} bytes, expected {size}")
        return ttfb, total

    return trio.run(run)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            h.update(block)
    return h.hexdigest()


def core(run: Run) -> None:
    args, work = run.args, run.work
    size = args.size_mib * MIB
    src = run.random_file(args.size_mib)
    seed = work / "core-seed.json"
    files = [{"path": f"/mnt/data/f{i:05d}.txt", "content": f"file {i}\n"}
             for i in range(args.files)]  # fmt: skip
    seed.write_text(json.dumps({"containers": [
        {"name": "many", "files": files}, {"name": "big", "files": []}]}))  # fmt: skip
    run.note(f"{NAME}: starting the emulator")
    em = Emulator(work, seed, name="core-emulator")
    with stopping(em):
        boxes = em.container_ids()
        files_url = f"{em.base_url}/containers/{boxes['big']}/files"
        up = work / "up.json"
        _, big_id = curl_upload(files_url, src, "big.bin", up)
        curl_upload(files_url, src, "head.bin", up)
        big_url = f"{files_url}/{big_id}/content"
        curl_get(big_url)  # the emulator's blob into the page cache, as for every pass after
        mountpoint = work / "core-mnt"
        state = work / "core-state"

        def mount(cache: Path) -> Mount:
            return Mount(em.base_url, mountpoint, state, cache)

        # ls -l: API calls of a first and a repeated listing
        m = mount(run.fresh_dir("core-cache"))
        with stopping(m):
            command = ["ls", "-l", str(m.path("many"))]
            first, first_routes, _, _ = api_calls(em, command)
            again, again_routes, _, _ = api_calls(em, command)
            listed = len(os.listdir(m.path("many")))
        if listed != args.files:
            raise BenchError(f"ls showed {listed} files, expected {args.files}")
        goal = math.ceil(args.files / 100) + 1
        run.row(NAME, f"ls -l of {args.files} files, API calls first / repeated",
                f"{first} / {again}", f"goal {goal} / 0")  # fmt: skip
        run.result(NAME, ls={"first": first, "first_by_route": first_routes,
                             "repeated": again, "repeated_by_route": again_routes})  # fmt: skip

        def one_pass(rep: int, record: Record) -> None:
            # direct baselines right before the mount's read, so drift affects both alike
            em_cpu = cpu_seconds(em.proc.pid)
            ttfb, total = curl_get(big_url)
            record("emulator_cpu_curl_get_s", cpu_seconds(em.proc.pid) - em_cpu)
            record("curl_get_s", total)
            record("curl_ttfb_s", ttfb)
            ttfb, total = httpx_get(big_url, size)
            record("httpx_get_s", total)
            record("httpx_ttfb_s", ttfb)
            local = work / "local-copy.bin"  # what any disk cache pays at least
            (total,) = curl("-o", str(local), "-w", "%{time_total}", big_url)
            local.unlink()
            record("curl_to_file_s", total)

            cache = run.fresh_dir("core-cache")
            m = mount(cache)
            with stopping(m):
                target = m.path("big", "big.bin")
                if os.stat(target).st_size != size:  # lookup (and listing) before the clock
                    raise BenchError(f"{target} has the wrong size")
                run.result(NAME, read_ahead_kb=read_ahead_kb(mountpoint))
                em.admin("POST", "/reset-stats")
                daemon_cpu, em_cpu = m.cpu(), cpu_seconds(em.proc.pid)
                record("mount_cold_s", read_file(target, size))
                record("daemon_cpu_cold_s", m.cpu() - daemon_cpu)
                record("emulator_cpu_cold_s", cpu_seconds(em.proc.pid) - em_cpu)
                record("daemon_vmhwm_mib", (m.proc_status("VmHWM") or 0) / MIB)
                record("api_calls_cold_read", em.calls())
                record("mount_page_cache_s", read_file(target, size))
                # first bytes of a file this cache has never seen, on an idle mount
                head = m.path("big", "head.bin")
                os.stat(head)
                record("mount_head_s", first_bytes(head))
                record("local_head_s", first_bytes(src))
            # remount on the same cache: the page cache is gone, the disk cache is warm
            m = mount(cache)
            with stopping(m):
                target = m.path("big", "big.bin")
                os.stat(target)
                record("mount_disk_cache_s", read_file(target, size))
                took, up_id = curl_upload(files_url, src, f"curl-{rep}.bin", up)
                record("curl_upload_s", took)
                em.api("DELETE", f"{files_url.removeprefix(em.base_url)}/{up_id}")
                uploaded = m.path("big", f"cp-{rep}.bin")
                record("mount_cp_s", timed("cp", str(src), str(uploaded)))
                if os.stat(uploaded).st_size != size:
                    raise BenchError("the copy through the mount has the wrong size")
                os.unlink(uploaded)
            shutil.rmtree(cache, ignore_errors=True)

        runs = run.passes(NAME, one_pass)
        m = mount(run.fresh_dir("core-cache"))
        with stopping(m):  # once, untimed: the mount returns the file's bytes
            if _digest(m.path("big", "big.bin")) != _digest(src):
                raise BenchError("the content read through the mount differs from the file")

    med = {key: runs.median(key) for key in runs}
    rate = {k: mbps(size, med[f"{k}_s"]) for k in (
        "curl_get", "httpx_get", "curl_to_file", "mount_cold", "mount_page_cache",
        "mount_disk_cache", "curl_upload", "mount_cp")}  # fmt: skip
    ratios = {
        "cold_read_vs_curl_get": runs.ratio("curl_get_s", "mount_cold_s"),
        "cold_read_vs_httpx_get": runs.ratio("httpx_get_s", "mount_cold_s"),
        "cold_read_vs_curl_to_file": runs.ratio("curl_to_file_s", "mount_cold_s"),
        "cp_vs_curl_upload": runs.ratio("curl_upload_s", "mount_cp_s"),
        "head_vs_httpx_first_chunk": runs.ratio("mount_head_s", "httpx_ttfb_s"),
        "head_vs_curl_first_byte": runs.ratio("mount_head_s", "curl_ttfb_s"),
    }
    run.result(NAME, size_mib=args.size_mib, runs=runs, median=med, mb_per_s=rate,
               ratios=ratios, content_verified=True)  # fmt: skip
    ms = {key: value * 1e3 for key, value in med.items() if key.endswith("_s")}
    rows = [
        ("direct GET, curl -o /dev/null", f"{rate['curl_get']:.0f} MB/s", "baseline"),
        ("direct GET, httpx streaming", f"{rate['httpx_get']:.0f} MB/s", "baseline"),
        ("direct GET to a local file, curl", f"{rate['curl_to_file']:.0f} MB/s", ""),
        (f"cold read of {args.size_mib} MiB through the mount", f"{rate['mount_cold']:.0f} MB/s",
         f"x{ratios['cold_read_vs_httpx_get']:.2f} httpx, x{ratios['cold_read_vs_curl_get']:.2f}"
         f" curl, x{ratios['cold_read_vs_curl_to_file']:.2f} curl to file"),
        ("  API calls during it", f"{med['api_calls_cold_read']:.0f}", ""),
        ("  daemon / emulator CPU during it",
         f"{med['daemon_cpu_cold_s']:.2f} / {med['emulator_cpu_cold_s']:.2f} s",
         f"emulator for a curl GET: {med['emulator_cpu_curl_get_s']:.2f} s"),
        ("  daemon peak RSS (VmHWM)", f"{max(runs['daemon_vmhwm_mib']):.1f} MiB", "max of passes"),
        ("warm re-read, page cache", f"{rate['mount_page_cache']:.0f} MB/s", ""),
        ("warm re-read, disk cache (remount)", f"{rate['mount_disk_cache']:.0f} MB/s", ""),
        ("head -c 100 of a cold file, mount", f"{ms['mount_head_s']:.1f} ms",
         f"x{ratios['head_vs_httpx_first_chunk']:.1f} httpx first chunk; head on a local "
         f"file {ms['local_head_s']:.1f} ms"),
        ("direct GET first byte, httpx / curl",
         f"{ms['httpx_ttfb_s']:.1f} / {ms['curl_ttfb_s']:.1f} ms", "new connection"),
        ("cp into the mount (upload at close)", f"{rate['mount_cp']:.0f} MB/s",
         f"x{ratios['cp_vs_curl_upload']:.2f} curl multipart upload"),
        ("emulator upload / download, curl",
         f"{rate['curl_upload']:.0f} / {rate['curl_get']:.0f} MB/s", ""),
        ("mount read_ahead_kb", f"{run.results[NAME].get('read_ahead_kb')}", ""),
    ]  # fmt: skip
    for label, value, comment in rows:
        run.row(NAME, label, value, comment)
