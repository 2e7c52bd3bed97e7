"""End-to-end, real kernel mounts with ``--write-back``: close returns before the upload,
``containerfs sync`` and ``fsync`` of a directory wait for the uploads and report failures, and
a daemon killed right after the writes loses nothing once remounted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from emulator_proc import EmulatorProcess
from mount_proc import MountProcess, is_mounted

pytestmark = pytest.mark.mount
MountFactory = Callable[..., MountProcess]
# refused at once (no retries by the client): the tests wait for no backoff
FAIL_UPLOADS = [{"route": "upload_file", "action": "error", "status": 400, "count": None}]


def container(emu: EmulatorProcess) -> tuple[str, str]:
    name = f"wb-{uuid.uuid4().hex[:8]}"
    with emu.http() as http:
        response = http.post("containers", json={"name": name})
        response.raise_for_status()
        return name, str(response.json()["id"])


def sync(mp: MountProcess, *path: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "containerfs", "sync", str(mp.mountpoint), *map(str, path)]
    argv += ["--state-dir", str(mp.state_dir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)  # open, write, close: a close error would raise here


def files(count: int) -> dict[str, bytes]:
    return {f"f{i:03d}.txt": os.urandom(100 + i) for i in range(count)}


def test_write_back_close_returns_before_the_upload_and_sync_reports_failures(
    emulator: EmulatorProcess, mount_factory: MountFactory
) -> None:
    name, cid = container(emulator)
    mp = mount_factory(emulator, "--write-back")
    emulator.faults(FAIL_UPLOADS)
    try:
        write(mp.path(name, "a.txt"), b"first\n")  # no EIO: close did not wait for the upload
        assert emulator.server_files(cid) == []
        failed = sync(mp)
        assert failed.returncode == 1
        assert "a.txt" in failed.stderr
        assert "Traceback" not in failed.stderr
    finally:
        emulator.clear_faults()
    done = sync(mp, mp.path(name))
    assert done.returncode == 0, done.stderr
    assert emulator.server_files(cid) == [("a.txt", b"first\n")]


def test_fsync_of_a_directory_waits_for_its_write_back_uploads(
    emulator: EmulatorProcess, mount_factory: MountFactory
) -> None:
    name, cid = container(emulator)
    mp = mount_factory(emulator, "--write-back")
    wanted = files(5)
    emulator.faults(FAIL_UPLOADS)
    try:
        for fname, data in wanted.items():
            write(mp.path(name, fname), data)
        fd = os.open(mp.path(name), os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(OSError) as failed:
                os.fsync(fd)
            assert failed.value.errno == 5  # EIO: the uploads failed
            emulator.clear_faults()
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        emulator.clear_faults()
    assert emulator.server_files(cid) == sorted(wanted.items())


def test_a_daemon_killed_after_write_back_closes_loses_nothing_once_remounted(
    emulator_factory: Callable[..., EmulatorProcess], mount_factory: MountFactory
) -> None:
    emu = emulator_factory("--latency-ms", "20")
    name, cid = container(emu)
    mp = mount_factory(emu, "--write-back")
    wanted = files(40)
    src = mp.mountpoint.parent / "src"
    src.mkdir()
    for fname, data in wanted.items():
        (src / fname).write_bytes(data)
    subprocess.run(["cp", "-r", f"{src}/.", str(mp.path(name))], check=True, timeout=120)
    mp.proc.send_signal(signal.SIGKILL)  # right after cp returned: uploads still in flight
    mp.proc.wait(timeout=10)
    for flags in ("-u", "-uz"):
        if is_mounted(mp.mountpoint):
            subprocess.run(["fusermount3", flags, str(mp.mountpoint)], capture_output=True)

    again = mount_factory(emu, "--write-back", state_dir=mp.state_dir)
    done = sync(again)
    assert done.returncode == 0, done.stderr
    held: list[tuple[str, Any]] = emu.server_files(cid)
    assert held == sorted(wanted.items())  # each file once, byte-exact


def test_sync_answers_bad_input_with_one_line_and_a_non_zero_exit(
    emulator: EmulatorProcess, mount_factory: MountFactory, tmp_path: Path
) -> None:
    name, _ = container(emulator)
    mp = mount_factory(emulator, "--write-back")
    outside = sync(mp, tmp_path)
    missing = sync(mp, mp.path(name, "no-such-file"))
    argv = [
        sys.executable,
        "-m",
        "containerfs",
        "sync",
        str(tmp_path),
        "--state-dir",
        str(tmp_path),
    ]
    nobody = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    for done, words in (
        (outside, "not inside"),
        (missing, "no such file"),
        (nobody, "no containerfs"),
    ):
        assert done.returncode != 0
        assert words in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
