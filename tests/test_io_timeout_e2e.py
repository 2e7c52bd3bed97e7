"""Nothing waits forever (issue 12), through a real mount: ``--io-timeout``.

The rows of the issue's table (a stall, a trickle, a dropped connection) are in
``test_hostile_server.py``; these tests cover the rest of the contract: every operation that
waits on a stalled server ends with EIO (or ETIMEDOUT) within a bound, a slow but steady
download is never cut, and ``unmount`` works while requests hang without losing what was
written. Operations run in child processes with a hard bound (``bounded_ops``), so a hang costs
the bound, never the suite.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bounded_ops import Outcome
from emulator_proc import EmulatorProcess
from lying_proxy import Rule, Stall
from mount_proc import is_mounted, mount_env, start_mount
from test_bench_proxy import ProxyProcess
from test_hostile_server import NETWORK_ERRNOS, Hostile, content_path, files_path

pytestmark = pytest.mark.mount

IO = "1"  # --io-timeout of these mounts (seconds): a stalled call gives up after 2 s
BOUND = 8.0  # what an operation may take before the test calls it a hang


@pytest.fixture
def hostile(emulator: EmulatorProcess, tmp_path: Path) -> Iterator[Hostile]:
    made = Hostile(emulator, tmp_path)
    yield made
    made.close()


def failed_in_time(outcome: Outcome) -> bool:
    return not outcome.timed_out and outcome.errno in NETWORK_ERRNOS


def test_every_operation_waiting_on_a_stalled_server_ends_with_eio_in_time(
    hostile: Hostile,
) -> None:
    slow = hostile.container("slow", {"a.txt": b"a\n"})
    empty = hostile.container("empty", {})
    sizes = hostile.container("sizes", {"u.bin": b"size unknown\n"}, report_bytes=False)
    u_bin = hostile.files(sizes)["u.bin"]
    mp = hostile.mount("--io-timeout", IO, "--metadata-ttl", "300")
    slow_dir = hostile.dir_of(mp, slow)
    assert hostile.run("list", slow_dir).errno is None  # cached: only the stalled calls remain
    empty_dir, sizes_dir = hostile.dir_of(mp, empty), hostile.dir_of(mp, sizes)
    for rule in (
        Rule(rf"^/v1/containers/{slow}/files/", Stall(), method="DELETE"),  # rm
        Rule(r"^/v1/containers$", Stall(), method="POST"),  # mkdir of a container
        Rule(files_path(empty), Stall(), method="GET"),  # rmdir lists it afresh first
        Rule(content_path(sizes, u_bin), Stall()),  # the size of a bytes: null file
    ):
        hostile.proxy.add(rule)

    deadline = time.monotonic() + BOUND
    running = {
        "rm": hostile.ops.start("unlink", slow_dir / "a.txt"),
        "mkdir": hostile.ops.start("mkdir", mp.path("new-container")),
        "rmdir": hostile.ops.start("rmdir", empty_dir),
        "stat": hostile.ops.start("stat", sizes_dir / "u.bin"),
    }
    outcomes = {op: hostile.ops.wait(r, deadline=deadline) for op, r in running.items()}

    late = {op: str(o) for op, o in outcomes.items() if not failed_in_time(o)}
    assert not late, late
    # nothing was done that the server did not confirm
    assert "a.txt" in hostile.files(slow) and hostile.exists(empty)


def test_a_slow_but_steady_download_is_never_cut(
    hostile: Hostile, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    data = os.urandom(3_000_000)
    box = hostile.container("steady", {"big.bin": data})
    port = int(emulator.root_url.rsplit(":", 1)[1])
    # 1 MB/s, in bursts of 256 KiB (the proxy's): three seconds for the file, more than a
    # stalled call may take at --io-timeout 1, with no silence as long as the io-timeout
    proxy = ProxyProcess(port, "--delay-ms", "2", "--mbps", "1")
    try:
        env = mount_env(emulator, OPENAI_BASE_URL=proxy.url + "/v1")
        mp = start_mount(emulator, tmp_path, "--io-timeout", IO, env=env, name="steady")
        try:
            started = time.monotonic()
            with open(mp.path(hostile.name_of(box), "big.bin"), "rb") as f:
                got = f.read()
            took = time.monotonic() - started
        finally:
            mp.unmount()
    finally:
        proxy.stop()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert took > 2 * float(IO), "the link was not slow: the test proves nothing"


def test_unmount_while_requests_hang_ends_in_time_and_keeps_what_was_written(
    hostile: Hostile,
) -> None:
    slow = hostile.container("hang", {"r.txt": b"read me\n"})
    # a long io-timeout: the requests are really hanging when the unmount comes
    mp = hostile.mount("--io-timeout", "300", "--metadata-ttl", "300")
    slow_dir = hostile.dir_of(mp, slow)
    assert hostile.run("list", slow_dir).errno is None
    hostile.proxy.add(Rule(rf"^/v1/containers/{slow}/files", Stall()))
    deadline = time.monotonic() + 3 * BOUND
    writing = hostile.ops.start("write", slow_dir / "new.txt", "1000")
    reading = hostile.ops.start("read", slow_dir / "r.txt")
    time.sleep(1.0)  # both wait on the server now

    started = time.monotonic()
    unmount = subprocess.run(
        [sys.executable, "-m", "containerfs", "unmount", "--lazy", str(mp.mountpoint),
         "--state-dir", str(mp.state_dir)],
        capture_output=True, text=True, timeout=3 * BOUND,
    )  # fmt: skip
    took = time.monotonic() - started
    written, read = (
        hostile.ops.wait(writing, deadline=deadline),
        hostile.ops.wait(reading, deadline=deadline),
    )

    assert mp.proc.wait(timeout=BOUND) == 3, mp.log_text()[-2000:]  # 3: uploads left pending
    assert took < 3 * BOUND and not is_mounted(mp.mountpoint), unmount.stderr
    assert unmount.returncode == 3 and "pending" in unmount.stderr, unmount.stderr
    assert failed_in_time(written) and written.report.get("stage") == "close", str(written)
    assert failed_in_time(read), str(read)

    hostile.proxy.clear()  # the server answers again: the next mount uploads what was queued
    again = hostile.mount("--io-timeout", IO, name="mnt")
    deadline = time.monotonic() + 3 * BOUND
    uploaded: list[str] = []
    while not uploaded and time.monotonic() < deadline:
        time.sleep(0.2)
        # the server may prefix the stored name (<32 hex>-new.txt)
        uploaded = [fid for name, fid in hostile.files(slow).items() if name.endswith("new.txt")]
    assert len(uploaded) == 1, again.log_text()[-2000:]
    assert hostile.content(slow, uploaded[0]) == b"n" * 1000


def test_mounting_against_a_stalled_server_fails_with_one_line_in_time(
    hostile: Hostile, tmp_path: Path
) -> None:
    hostile.proxy.add(Rule(r"^/v1/containers$", Stall(), method="GET"))  # the credentials check
    mountpoint = tmp_path / "never"
    mountpoint.mkdir()
    env = mount_env(hostile.emu, OPENAI_BASE_URL=hostile.proxy.base_url)
    dirs = ["--state-dir", str(tmp_path / "never-state"), "--cache-dir", str(tmp_path / "cache")]
    argv = [sys.executable, "-m", "containerfs", "mount", str(mountpoint), "--io-timeout", IO]
    try:
        done = subprocess.run([*argv, *dirs], env=env, capture_output=True, text=True, timeout=30)
    finally:
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "cannot mount" in lines[0] and "did not come up" not in lines[0], lines[0]
