#!/usr/bin/env python3
"""API calls and wall time of ``ls -l`` on a directory of files listed with ``bytes: null``.

    .venv/bin/python scripts/bench_unknown_sizes.py [--files 50] [--latency-ms 20] [--repeat 3]
                                                    [--sizes 1,100,10000,300000,2097152]

Seeds an emulator (``--latency-ms`` on every request) with one container of ``--files``
assistant outputs of unknown size (each of a size picked from ``--sizes``), mounts it with an
empty cache and times the first ``ls -l`` of the directory; the emulator counts the requests
it cost. Once the mount's background downloads are done, it remounts (the disk cache kept)
and times ``ls -l`` again. It reports how many sizes ``ls -l`` showed right. Each pass uses a
fresh emulator and mount; the median time is reported. Nothing here asserts a timing.
Everything started is stopped and unmounted at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def _start(argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[str]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=out, text=True, **kw)


def _admin(root: str, method: str, path: str) -> Any:
    req = urllib.request.Request(
        f"{root}/_emulator{path}", method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def _mount(base_url: str, work: Path, name: str) -> tuple[subprocess.Popen[str], Path]:
    mnt = work / name
    mnt.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "containerfs", "mount", str(mnt), "--foreground",
            "--state-dir", str(work / "state"), "--cache-dir", str(work / "cache"),
            "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench"}
    proc = _start(argv, work / "mount.log", env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"mount failed:\n{(work / 'mount.log').read_text()}")
        time.sleep(0.02)
    return proc, mnt


def _unmount(proc: subprocess.Popen[str], mnt: Path) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    finally:
        for flags in ("-u", "-uz"):
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", flags, str(mnt)], capture_output=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for_downloads(work: Path, mnt: Path) -> None:
    argv = [sys.executable, "-m", "containerfs", "status", str(mnt), "--json",
            "--state-dir", str(work / "state")]  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1.1)  # the daemon writes its status every second
        status = json.loads(subprocess.run(argv, capture_output=True, text=True).stdout)
        if status["cache"]["active_downloads"] == 0:
            return


def _ls(root: str, directory: Path, sizes: dict[str, int]) -> tuple[float, int, dict[str, int]]:
    _admin(root, "POST", "/reset-stats")
    t0 = time.perf_counter()
    out = subprocess.run(["ls", "-l", str(directory)], capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - t0
    shown = {line.split()[-1]: int(line.split()[4]) for line in out.splitlines()[1:]}
    right = sum(shown.get(name) == size for name, size in sizes.items())
    return elapsed, right, _admin(root, "GET", "/stats")["requests"]


def one_pass(files: int, latency_ms: int, choices: list[int]) -> list[Any]:
    rng = random.Random(7)
    sizes = {f"out{i:03d}.bin": rng.choice(choices) for i in range(files)}
    seed = {"containers": [{"name": "outputs", "files": [
        {"path": name, "content_base64": base64.b64encode(rng.randbytes(n)).decode(),
         "source": "assistant", "report_bytes": False} for name, n in sizes.items()]}]}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp:
        work = Path(tmp)
        (work / "seed.json").write_text(json.dumps(seed))
        argv = [sys.executable, "-m", "containerfs", "emulator", "--port", "0",
                "--seed", str(work / "seed.json"), "--latency-ms", str(latency_ms),
                "--log-level", "warning"]  # fmt: skip
        emu = _start(argv, work / "emulator.log", stdout=subprocess.PIPE)
        try:
            assert emu.stdout is not None
            base_url = emu.stdout.readline().removeprefix("listening on ").strip()
            root = base_url.removesuffix("/v1")
            results = []
            for name in ("fresh", "remount"):
                proc, mnt = _mount(base_url, work, name)
                try:
                    os.listdir(mnt)  # the container listing is not what is measured
                    results.append(_ls(root, mnt / "outputs", sizes))
                    _wait_for_downloads(work, mnt)  # what the remount finds in the cache
                finally:
                    _unmount(proc, mnt)
            return results
        finally:
            emu.terminate()
            emu.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--sizes", default="1,100,10000,300000,2097152", help="bytes, chosen at random"
    )
    args = parser.parse_args()
    choices = [int(n) for n in args.sizes.split(",")]
    runs = [one_pass(args.files, args.latency_ms, choices) for _ in range(args.repeat)]
    for i, label in enumerate(("fresh mount, empty cache", "after a remount")):
        times = [run[i][0] for run in runs]
        _, right, requests = runs[-1][i]
        print(f"ls -l, {label}: {statistics.median(times) * 1000:.0f} ms median of "
              f"{[round(t * 1000) for t in times]}; {sum(requests.values())} API calls "
              f"{dict(sorted(requests.items()))}; {right}/{args.files} sizes right")  # fmt: skip


if __name__ == "__main__":
    main()
