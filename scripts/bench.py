#!/usr/bin/env python3
"""containerfs benchmark: the mount against curl, rclone mount and the openai SDK, in one run.

    .venv/bin/python scripts/bench.py [--only NAME[,NAME]] [--json FILE] [--repeat 3]
                                      [--warmup 1] [--size-mib 256] ...  (see --help)

Benchmark tooling, not part of containerfs. Starts the emulator, nginx, rclone and a pacing
proxy (``bench_proxy.py``: a per-request delay and a per-response bandwidth cap, to make
loopback look like a WAN link) as processes of its own, on loopback, and real kernel mounts
of containerfs and of rclone. Scenarios (all by default, or those named by ``--only``):

  core             the mount against direct HTTP: cold/warm reads, head, cp, ls API calls
  cold-read        cold read on loopback: containerfs and rclone mount, each against curl
  cpu-read         the daemon's CPU-seconds per GiB of a cold read
  wan-read         the same through the pacing proxy, one stream and with Range honoured
  first-byte       head -c 100 of a cold file against curl's first byte, through the proxy
  small-read       cp -r of many 16 KiB files at 20 ms/request: rclone, an SDK loop
  big-write        cp into the mount against curl uploads; rclone over webdav likewise
  small-write      cp -r of many 16 KiB files into the mount (+ sync) against an SDK loop
  unknown-size-ls  ls -l of bytes:null files at 20 ms latency: API calls, time, sizes
  rss-2g           the daemon's peak RSS reading and writing a 2 GiB file
  scale            ls -lR of a 100,000-file container: time, API calls, peak RSS

Every measurement is repeated ``--repeat`` times, interleaved with its baseline, after
``--warmup`` uncounted passes, and the median is reported (rss-2g and scale: one pass).
Options a build lacks (``--write-back``, ``containerfs sync``) are probed and reported as
n/a. Nothing here asserts a timing. Everything started is stopped by PID, unmounted and
deleted at the end, also on Ctrl-C or failure; a failing scenario is reported and the run
goes on with the next.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bench_procs
from bench_core import core
from bench_meta import scale, unknown_size_ls
from bench_procs import BenchError
from bench_read import cold_read, cpu_read, first_byte, small_read, wan_read
from bench_run import Run, print_table
from bench_write import big_write, rss_2g, small_write

SCENARIOS: dict[str, Callable[[Run], None]] = {
    "core": core,
    "cold-read": cold_read,
    "cpu-read": cpu_read,
    "wan-read": wan_read,
    "first-byte": first_byte,
    "small-read": small_read,
    "big-write": big_write,
    "small-write": small_write,
    "unknown-size-ls": unknown_size_ls,
    "rss-2g": rss_2g,
    "scale": scale,
}
NEEDS = {  # tools beyond curl, cp, head, ls and fusermount3
    "cold-read": ("nginx", "rclone"),
    "wan-read": ("nginx", "rclone"),
    "first-byte": ("nginx", "rclone"),
    "small-read": ("nginx", "rclone"),
    "big-write": ("rclone",),
}


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _raise_timeout(signum: int, frame: object) -> None:
    raise BenchError("took longer than --scenario-timeout")


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


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or '(none)'}; one of: {', '.join(SCENARIOS)}"
        )
    return names


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        type=_names,
        default=list(SCENARIOS),
        metavar="NAME[,NAME]",
        help="scenarios to run (default: all)",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--repeat", type=_positive, default=3, help="counted, interleaved passes")
    p.add_argument("--warmup", type=_count, default=1, help="passes run first, not counted")
    p.add_argument(
        "--scenario-timeout",
        type=_positive,
        default=900,
        help="seconds a scenario may take before it is stopped and reported",
    )
    p.add_argument(
        "--step-timeout", type=_number, default=600.0, help="seconds any one timed command may take"
    )
    g = p.add_argument_group("sizes")
    g.add_argument("--size-mib", type=_positive, default=256, help="big file on loopback")
    g.add_argument("--files", type=_positive, default=1000, help="files of core's ls container")
    g.add_argument("--wan-mib", type=_positive, default=128, help="file read over the proxy")
    g.add_argument("--wan-delay-ms", type=_number, default=30.0, help="proxy delay per request")
    g.add_argument("--wan-mbps", type=_number, default=50.0, help="proxy MB/s per response")
    g.add_argument("--small-files", type=_positive, default=200, help="small-read files")
    g.add_argument("--small-write-files", type=_positive, default=100, help="small-write files")
    g.add_argument(
        "--small-delay-ms",
        type=_number,
        default=20.0,
        help="proxy delay per request for small-read and small-write",
    )
    g.add_argument("--unknown-files", type=_positive, default=50, help="bytes:null files")
    g.add_argument("--unknown-latency-ms", type=_number, default=20.0)
    g.add_argument("--rss-mib", type=_positive, default=2048, help="rss-2g file size")
    g.add_argument("--scale-files", type=_positive, default=100_000)
    g.add_argument("--scale-dirs", type=_positive, default=50)
    return p.parse_args()  # fmt: skip


def _missing_tools(names: list[str]) -> list[str]:
    tools = {"curl", "fusermount3", "cp", "head", "ls"}
    for name in names:
        tools.update(NEEDS.get(name, ()))
    return sorted(t for t in tools if shutil.which(t) is None)


def main() -> int:
    args = parse_args()
    missing = _missing_tools(args.only)
    if missing:
        print(
            f"bench: needs {', '.join(missing)} (scripts/bench.sh installs them)", file=sys.stderr
        )
        return 2
    bench_procs.STEP_TIMEOUT[0] = args.step_timeout
    work = Path(tempfile.mkdtemp(prefix="containerfs-bench-"))
    run = Run(args, work)
    failed: list[str] = []
    load_start = os.getloadavg()[0]
    began = time.monotonic()
    interrupted = False
    try:
        with _interruptible():
            for name in args.only:
                started = time.monotonic()
                # SIGALRM breaks a stuck scenario out (a hung read returns EINTR); its
                # processes are stopped by the cleanup on the way out, the run goes on
                previous = signal.signal(signal.SIGALRM, _raise_timeout)
                signal.alarm(args.scenario_timeout)
                try:
                    SCENARIOS[name](run)
                except (BenchError, subprocess.SubprocessError, OSError, ValueError) as exc:
                    failed.append(name)
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    print(f"bench: {name} failed: {message}", file=sys.stderr)
                    run.row(name, "failed", "-", message[:120])
                finally:
                    signal.alarm(0)
                    signal.signal(signal.SIGALRM, previous)
                run.result(name, seconds=round(time.monotonic() - started, 1))
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted", file=sys.stderr)
    finally:
        # SIGINT/SIGTERM must not cut the cleanup short
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            shutil.rmtree(work, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    meta = {"repeat": args.repeat, "warmup": args.warmup, "cpus": os.cpu_count(),
            "kernel": os.uname().release, "python": sys.version.split()[0],
            "loadavg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            "seconds": round(time.monotonic() - began, 1), "failed": failed,
            "options": {k: str(v) if isinstance(v, Path) else v
                        for k, v in vars(args).items()}}  # fmt: skip
    print(f"\ncontainerfs benchmark: {meta['cpus']} CPUs, medians of {args.repeat} interleaved"
          f" passes after {args.warmup} warm-up, load {meta['loadavg'][0]} -> "
          f"{meta['loadavg'][1]}, {meta['seconds']:.0f} s")  # fmt: skip
    print_table(run)
    if args.json:
        args.json.write_text(json.dumps({"run": meta, **run.results}, indent=1) + "\n")
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
