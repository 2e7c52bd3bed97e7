#!/usr/bin/env python3
"""containerfs benchmark: the mount against direct HTTP to the same emulator, in one run.

    .venv/bin/python scripts/bench.py [--size-mib 256] [--files 1000] [--repeat 3] [--warmup 1]
                                      [--json FILE]

Starts an emulator on loopback and real kernel mounts of it (daemon subprocesses), and
measures:

1. API calls of the first and of a repeated ``ls -l`` of a container of ``--files`` files
   (emulator request counters, reset before each).
2. Cold sequential read of a ``--size-mib`` random file through a fresh mount with an empty
   disk cache (1 MiB reads), against direct streaming GETs of the same file with curl and
   with httpx; warm re-reads from the page cache and, after a remount, from the disk cache.
3. The daemon's peak RSS (VmHWM) after the cold read.
4. ``head -c 100`` time to first byte of a cold file through the mount against a direct
   GET's; ``cp`` of the file into the mount (upload at close) against a direct multipart
   upload with curl; the emulator's upload and download MB/s with curl.

Every measurement is repeated ``--repeat`` times, interleaved with its baseline, and the
median is reported (the figures are noisy on a shared machine); ``--warmup`` passes of the
same steps run first and are not counted. MB/s are 10^6 bytes per second. Nothing here
asserts a timing. Everything started is stopped, unmounted and deleted at the end, also on
Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KEY = "sk-bench"
MIB = 1 << 20
READ_SIZE = MIB
STARTUP_TIMEOUT = 30.0


class BenchError(RuntimeError):
    pass


# ---- processes ----------------------------------------------------------------------------


class Emulator:
    """``containerfs emulator`` in its own session (Ctrl-C reaches only the benchmark)."""

    def __init__(self, work: Path, seed: Path) -> None:
        self.log = work / "emulator.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "containerfs", "emulator", "--port", "0",
                 "--data-dir", str(work / "emulator-data"), "--seed", str(seed),
                 "--log-level", "warning"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, text=True,
            )  # fmt: skip
        line = self._first_line()
        if not line.startswith("listening on "):
            self.stop()
            raise BenchError(f"emulator did not start: {line!r}\n{self.log.read_text()}")
        self.base_url = line.removeprefix("listening on ").strip()
        self.root_url = self.base_url.removesuffix("/v1")

    def _first_line(self) -> str:
        assert self.proc.stdout is not None
        out: list[str] = []
        stdout = self.proc.stdout
        reader = threading.Thread(target=lambda: out.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        return out[0] if out else ""

    def admin(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.root_url}/_emulator{path}", method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}{path}", method=method, headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Mount:
    """``containerfs mount --foreground`` in its own session; ``pid`` is the daemon's."""

    def __init__(self, emulator: Emulator, mountpoint: Path, state: Path, cache: Path) -> None:
        self.mountpoint = mountpoint
        self.log = state.parent / f"{mountpoint.name}.log"
        env = {**os.environ, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": KEY}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "containerfs", "mount", str(mountpoint), "--foreground",
                 "--state-dir", str(state), "--cache-dir", str(cache),
                 "--drain-timeout", "10", "--log-level", "warning"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip
        self.pid = self.proc.pid
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not os.path.ismount(mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.unmount()
                raise BenchError(f"mount did not come up:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.02)

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)

    def proc_status(self, key: str) -> int | None:
        """A ``/proc/PID/status`` memory field of the daemon, in bytes."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return None

    def unmount(self) -> None:
        """SIGTERM (finishes uploads, unmounts), then ``fusermount3 -u``, ``-uz``, SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        for flags in ("-u", "-uz"):
            if not _is_mount(self.mountpoint):
                break
            subprocess.run(["fusermount3", flags, str(self.mountpoint)], capture_output=True)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _is_mount(path: Path) -> bool:
    """From /proc/self/mountinfo: never stat a possibly dead FUSE mount."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_ahead_kb(mountpoint: Path) -> int | None:
    """The kernel read-ahead of the mount's bdi (what limits the FUSE read size)."""
    real = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == real:
                try:
                    return int(Path(f"/sys/class/bdi/{parts[2]}/read_ahead_kb").read_text())
                except OSError:
                    return None
    return None


# ---- measurements -------------------------------------------------------------------------


def curl(*args: str) -> list[float]:
    """Run curl with the key; returns the numbers printed by its ``-w`` format."""
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-H", f"Authorization: Bearer {KEY}", *args],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [float(x) for x in out.split()]


def curl_get(url: str) -> tuple[float, float]:
    """(time to first byte, total time) of a direct GET to /dev/null."""
    ttfb, total = curl("-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total}", url)
    return ttfb, total


def curl_upload(url: str, src: Path, name: str, out: Path) -> tuple[float, str]:
    """Seconds of a direct multipart upload, and the new file's id."""
    form = f"file=@{src};filename={name}"
    (total,) = curl("-o", str(out), "-w", "%{time_total}", "-F", form, url)
    return total, json.loads(out.read_text())["id"]


def httpx_get(url: str, size: int) -> tuple[float, float]:
    """(time to first byte, total) of a streaming GET with httpx under trio (the daemon's stack)."""
    import httpx
    import trio

    async def run() -> tuple[float, float]:
        headers = {"Authorization": f"Bearer {KEY}", "Accept-Encoding": "identity"}
        timeout = httpx.Timeout(60.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
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


def read_file(path: Path, size: int) -> float:
    """Sequential 1 MiB reads of the whole file; seconds from open to EOF."""
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    began = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = 0
        while n := os.readv(fd, [view]):
            got += n
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - began
    if got != size:
        raise BenchError(f"read {got} bytes from {path}, expected {size}")
    return elapsed


def first_bytes(path: Path) -> float:
    """``head -c 100``: seconds from the command's start to its exit (process start included)."""
    began = time.perf_counter()
    out = subprocess.run(["head", "-c", "100", str(path)], check=True, capture_output=True).stdout
    elapsed = time.perf_counter() - began
    if len(out) != 100:
        raise BenchError(f"head -c 100 gave {len(out)} bytes")
    return elapsed


def timed_cp(src: Path, dst: Path) -> float:
    began = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    return time.perf_counter() - began


def api_calls(emulator: Emulator, command: list[str]) -> tuple[int, dict[str, int]]:
    emulator.admin("POST", "/reset-stats")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    stats = emulator.admin("GET", "/stats")
    requests = {k: v for k, v in stats["requests"].items() if v}
    return stats["total"], requests


def make_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(8 * MIB, left)
            f.write(os.urandom(n))
            left -= n


def med(values: list[float]) -> float:
    return statistics.median(values)


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


# ---- the run ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.size: int = args.size_mib * MIB
        self.emulator: Emulator | None = None
        self.mount: Mount | None = None
        self.mountpoint = work / "mnt"
        self.mountpoint.mkdir()
        self.state = work / "state"
        self.runs: dict[str, list[float]] = {}
        self.result: dict[str, Any] = {
            "size_mib": args.size_mib,
            "files": args.files,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "read_size": READ_SIZE,
            "cpus": os.cpu_count(),
            "kernel": os.uname().release,
            "python": sys.version.split()[0],
        }

    def record(self, key: str, value: float) -> None:
        self.runs.setdefault(key, []).append(value)

    def note(self, text: str) -> None:
        if not self.args.quiet:
            print(f"  .. {text}", file=sys.stderr, flush=True)

    # -- lifecycle --

    def start_mount(self, cache: Path) -> Mount:
        assert self.emulator is not None and self.mount is None
        self.mount = Mount(self.emulator, self.mountpoint, self.state, cache)
        return self.mount

    def stop_mount(self) -> None:
        if self.mount is not None:
            mount, self.mount = self.mount, None
            mount.unmount()

    def close(self) -> None:
        try:
            self.stop_mount()
        finally:
            if self.emulator is not None:
                self.emulator.stop()
                self.emulator = None

    # -- steps --

    def run(self) -> dict[str, Any]:
        size, work = self.size, self.work
        seed = work / "seed.json"
        files = [{"path": f"/mnt/data/f{i:05d}.txt", "content": f"file {i}\n"}
                 for i in range(self.args.files)]  # fmt: skip
        seed.write_text(json.dumps({"containers": [
            {"name": "many", "files": files}, {"name": "big", "files": []}]}))  # fmt: skip
        src = work / "random.bin"
        self.note(f"writing a {self.args.size_mib} MiB random file")
        make_random_file(src, size)

        self.note("starting the emulator")
        self.emulator = em = Emulator(work, seed)
        boxes = {c["name"]: c["id"] for c in em.api("GET", "/containers?limit=100")["data"]}
        files_url = f"{em.base_url}/containers/{boxes['big']}/files"
        # the file read back in every pass, and a second one for cold first-byte times
        _, big_id = curl_upload(files_url, src, "big.bin", work / "up.json")
        curl_upload(files_url, src, "head.bin", work / "up.json")
        big_url = f"{files_url}/{big_id}/content"
        curl_get(big_url)  # the emulator's blob into the page cache, as for every pass after
        self.ls_calls()

        for rep in range(self.args.warmup):
            # the same steps, not counted: a fresh virtual machine pays extra for the first
            # touch of each page of memory, and the mount fills 2 x size of new page cache
            # (the file's pages and the disk cache's) where a GET to /dev/null fills none
            self.note(f"warm-up pass {rep + 1}/{self.args.warmup}")
            self.read_pass(-1 - rep, big_url, files_url)
        self.runs.clear()
        load_start = os.getloadavg()[0]
        for rep in range(self.args.repeat):
            self.note(f"pass {rep + 1}/{self.args.repeat}")
            self.read_pass(rep, big_url, files_url)
        self.result["loadavg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        self.check_content(src)
        self.summarize()
        return self.result

    def ls_calls(self) -> None:
        assert self.emulator is not None
        self.note(f"ls -l of a {self.args.files}-file container")
        mount = self.start_mount(self.work / "cache-ls")
        try:
            command = ["ls", "-l", str(mount.path("many"))]
            first, first_routes = api_calls(self.emulator, command)
            again, again_routes = api_calls(self.emulator, command)
            listed = len(os.listdir(mount.path("many")))
        finally:
            self.stop_mount()
        if listed != self.args.files:
            raise BenchError(f"ls showed {listed} files, expected {self.args.files}")
        self.result["ls"] = {
            "goal_first": math.ceil(self.args.files / 100) + 1,
            "first": first,
            "first_by_route": first_routes,
            "repeated": again,
            "repeated_by_route": again_routes,
        }

    def read_pass(self, rep: int, big_url: str, files_url: str) -> None:
        size, work = self.size, self.work
        assert self.emulator is not None
        em = self.emulator
        # direct baselines right before the mount's read, so drift affects both alike
        em_cpu = cpu_seconds(em.proc.pid)
        ttfb, total = curl_get(big_url)
        self.record("emulator_cpu_curl_get_s", cpu_seconds(em.proc.pid) - em_cpu)
        self.record("curl_get_s", total)
        self.record("curl_ttfb_s", ttfb)
        ttfb, total = httpx_get(big_url, size)
        self.record("httpx_get_s", total)
        self.record("httpx_ttfb_s", ttfb)
        # what any disk cache pays at least: the same GET written to a local file
        local = work / "local-copy.bin"
        (total,) = curl("-o", str(local), "-w", "%{time_total}", big_url)
        local.unlink()
        self.record("curl_to_file_s", total)

        cache = work / f"cache-{rep}"
        shutil.rmtree(cache, ignore_errors=True)
        mount = self.start_mount(cache)
        try:
            target = mount.path("big", "big.bin")
            if os.stat(target).st_size != size:  # lookup (and listing) before the clock
                raise BenchError(f"{target} has the wrong size")
            self.result.setdefault("read_ahead_kb", read_ahead_kb(self.mountpoint))
            em.admin("POST", "/reset-stats")
            rss_before = mount.proc_status("VmRSS") or 0
            daemon_cpu, em_cpu = cpu_seconds(mount.pid), cpu_seconds(em.proc.pid)
            self.record("mount_cold_s", read_file(target, size))
            self.record("daemon_cpu_cold_s", cpu_seconds(mount.pid) - daemon_cpu)
            self.record("emulator_cpu_cold_s", cpu_seconds(em.proc.pid) - em_cpu)
            self.record("daemon_vmhwm_bytes", mount.proc_status("VmHWM") or 0)
            self.record("daemon_rss_before_bytes", rss_before)
            self.record("api_calls_cold_read", em.admin("GET", "/stats")["total"])
            self.record("mount_page_cache_s", read_file(target, size))

            # first bytes of a file this cache has never seen, on an idle mount (its download
            # is cut short by the unmount right after), and the same command on a local file
            head = mount.path("big", "head.bin")
            os.stat(head)
            self.record("mount_head_s", first_bytes(head))
            self.record("local_head_s", first_bytes(work / "random.bin"))
        finally:
            self.stop_mount()

        # remount on the same cache: the kernel's page cache is gone, the disk cache is warm
        mount = self.start_mount(cache)
        try:
            target = mount.path("big", "big.bin")
            os.stat(target)
            self.record("mount_disk_cache_s", read_file(target, size))

            # cp into the mount (upload at close) against a direct multipart upload
            src = work / "random.bin"
            up, up_id = curl_upload(files_url, src, f"curl-{rep}.bin", work / "up.json")
            self.record("curl_upload_s", up)
            em.api("DELETE", f"{files_url.removeprefix(em.base_url)}/{up_id}")
            uploaded = mount.path("big", f"cp-{rep}.bin")
            self.record("mount_cp_s", timed_cp(src, uploaded))
            if os.stat(uploaded).st_size != size:
                raise BenchError("the copy through the mount has the wrong size")
            os.unlink(uploaded)
        finally:
            self.stop_mount()
        shutil.rmtree(cache, ignore_errors=True)

    def check_content(self, src: Path) -> None:
        """Once, untimed: the mount returns the file's bytes."""
        import hashlib

        def digest(path: Path) -> str:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(8 * MIB):
                    h.update(block)
            return h.hexdigest()

        mount = self.start_mount(self.work / "cache-check")
        try:
            same = digest(mount.path("big", "big.bin")) == digest(src)
        finally:
            self.stop_mount()
        if not same:
            raise BenchError("the content read through the mount differs from the file")
        self.result["content_verified"] = True

    def summarize(self) -> None:
        size, runs = self.size, self.runs
        m = {key: med(values) for key, values in runs.items()}
        self.result["runs"] = runs
        self.result["median"] = m
        self.result["mb_per_s"] = {
            name: mbps(size, m[f"{name}_s"])
            for name in ("curl_get", "httpx_get", "curl_to_file", "mount_cold", "mount_page_cache",
                         "mount_disk_cache", "curl_upload", "mount_cp")
        }  # fmt: skip

        def ratio(numerator: str, denominator: str) -> float:
            """Median of the per-pass ratios (each pass against its own baseline)."""
            pairs = zip(runs[numerator], runs[denominator], strict=True)
            return med([a / b for a, b in pairs])

        self.result["ratios"] = {
            # throughput ratios: baseline time / mount time (1.0 = as fast as direct HTTP)
            "cold_read_vs_curl_get": ratio("curl_get_s", "mount_cold_s"),
            "cold_read_vs_httpx_get": ratio("httpx_get_s", "mount_cold_s"),
            "cold_read_vs_curl_to_file": ratio("curl_to_file_s", "mount_cold_s"),
            "cp_vs_curl_upload": ratio("curl_upload_s", "mount_cp_s"),
            # latency ratios: mount time / baseline time (1.0 = as quick)
            "head_vs_httpx_first_chunk": ratio("mount_head_s", "httpx_ttfb_s"),
            "head_vs_curl_first_byte": ratio("mount_head_s", "curl_ttfb_s"),
        }
        self.result["daemon_peak_rss_mib"] = max(runs["daemon_vmhwm_bytes"]) / MIB


def print_table(r: dict[str, Any]) -> None:
    m, rate, ratio = r["median"], r["mb_per_s"], r["ratios"]
    ls = r["ls"]
    ms = {key: value * 1e3 for key, value in m.items() if key.endswith("_s")}
    print(
        f"\ncontainerfs benchmark: {r['size_mib']} MiB file, {r['files']}-file container, "
        f"medians of {r['repeat']} interleaved passes, {r['cpus']} CPUs, "
        f"load {r['loadavg'][0]} -> {r['loadavg'][1]}"
    )
    rows = [
        ("ls -l, API calls: first / repeated",
         f"{ls['first']} / {ls['repeated']}", f"goal {ls['goal_first']} / 0"),
        ("direct GET, curl -o /dev/null", f"{rate['curl_get']:6.0f} MB/s", "baseline"),
        ("direct GET, httpx streaming", f"{rate['httpx_get']:6.0f} MB/s", "baseline"),
        ("direct GET to a local file, curl", f"{rate['curl_to_file']:6.0f} MB/s", ""),
        ("cold read through the mount", f"{rate['mount_cold']:6.0f} MB/s",
         f"x{ratio['cold_read_vs_httpx_get']:.2f} httpx, x{ratio['cold_read_vs_curl_get']:.2f} "
         f"curl, x{ratio['cold_read_vs_curl_to_file']:.2f} curl to file (goal >= 0.8)"),
        ("  API calls during it", f"{m['api_calls_cold_read']:.0f}", "one streaming GET"),
        ("  daemon / emulator CPU during it",
         f"{m['daemon_cpu_cold_s']:.2f} / {m['emulator_cpu_cold_s']:.2f} s",
         f"emulator for a curl GET: {m['emulator_cpu_curl_get_s']:.2f} s"),
        ("  daemon peak RSS (VmHWM)", f"{r['daemon_peak_rss_mib']:6.1f} MiB",
         "max of passes (goal <= 150 MiB)"),
        ("warm re-read, page cache", f"{rate['mount_page_cache']:6.0f} MB/s", ""),
        ("warm re-read, disk cache (remount)", f"{rate['mount_disk_cache']:6.0f} MB/s", ""),
        ("head -c 100 of a cold file, mount", f"{ms['mount_head_s']:6.1f} ms",
         f"x{ratio['head_vs_httpx_first_chunk']:.1f} httpx first chunk; head on a local "
         f"file {ms['local_head_s']:.1f} ms"),
        ("direct GET first chunk, httpx", f"{ms['httpx_ttfb_s']:6.1f} ms", "new connection"),
        ("direct GET first byte, curl", f"{ms['curl_ttfb_s']:6.1f} ms", "new connection"),
        ("cp into the mount (upload at close)", f"{rate['mount_cp']:6.0f} MB/s",
         f"x{ratio['cp_vs_curl_upload']:.2f} curl multipart upload"),
        ("emulator upload, curl multipart", f"{rate['curl_upload']:6.0f} MB/s", ""),
        ("emulator download, curl", f"{rate['curl_get']:6.0f} MB/s", ""),
        ("mount read_ahead_kb", f"{r.get('read_ahead_kb')}", "1024: 1 MiB FUSE reads"),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    for label, value, comment in rows:
        print(f"  {label:<{width}}  {value:>13}  {comment}")
    print("  MB/s = 10^6 bytes/s. Ratios: medians of per-pass ratios against the baseline")
    print("  measured just before in the same pass. Shared machines make these numbers noisy.")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM end the run through the cleanup (even if started with SIGINT ignored)."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="size of the big file")
    parser.add_argument("--files", type=int, default=1000, help="files of the ls container")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved passes")
    parser.add_argument("--warmup", type=int, default=1, help="passes run first, not counted")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    for tool in ("curl", "fusermount3", "cp", "head", "ls"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is needed", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="containerfs-bench-"))
    bench = Bench(args, work)
    try:
        with _interruptible():
            result = bench.run()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except (BenchError, subprocess.CalledProcessError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        # SIGINT/SIGTERM must not cut the cleanup short
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            bench.close()
            shutil.rmtree(work, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
