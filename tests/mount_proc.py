"""Run a real containerfs mount in a subprocess for end-to-end tests.

The daemon runs in its own process (never in the test's thread: touching a mount from the
thread that serves it deadlocks). Teardown always unmounts: ``fusermount3 -u``, then ``-uz``,
then terminate/kill.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from emulator_proc import EmulatorProcess


class MountError(RuntimeError):
    pass


class MountProcess:
    def __init__(
        self, proc: subprocess.Popen[bytes], mountpoint: Path, state_dir: Path, log: Path
    ) -> None:
        self.proc = proc
        self.mountpoint = mountpoint
        self.state_dir = state_dir
        self.log = log

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def unmount(self, *, timeout: float = 30.0) -> int | None:
        """Clean unmount by SIGTERM (finishes uploads), falling back to fusermount3."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        for flags in ("-u", "-uz"):
            if not is_mounted(self.mountpoint):
                break
            subprocess.run(["fusermount3", flags, str(self.mountpoint)], capture_output=True)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.proc.returncode


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mountpoint, from ``/proc/mounts``: ``os.path.ismount`` says no
    for the mount of a daemon that died (``ENOTCONN``), which still needs unmounting."""
    target = os.path.realpath(path)
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts if len(line.split()) > 1)


def mount_env(emulator: EmulatorProcess, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-test"}
    env.update(extra)
    return env


def start_mount(
    emulator: EmulatorProcess,
    tmp_path: Path,
    *args: str,
    state_dir: Path | None = None,
    cache_dir: Path | None = None,
    env: dict[str, Any] | None = None,
    name: str = "mnt",
    timeout: float = 30.0,
) -> MountProcess:
    mountpoint = tmp_path / name
    mountpoint.mkdir(exist_ok=True)
    state_dir = state_dir or tmp_path / f"{name}-state"
    cache_dir = cache_dir or tmp_path / f"{name}-cache"
    log = tmp_path / f"{name}.log"
    argv = [
        sys.executable,
        "-m",
        "containerfs",
        "mount",
        str(mountpoint),
        "--foreground",
        "--state-dir",
        str(state_dir),
        "--cache-dir",
        str(cache_dir),
        "--log-level",
        "info",
        *args,
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env or mount_env(emulator),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    mp = MountProcess(proc, mountpoint, state_dir, log)
    deadline = time.monotonic() + timeout
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None:
            raise MountError(f"mount exited with {proc.returncode}:\n{mp.log_text()}")
        if time.monotonic() > deadline:
            mp.unmount()
            raise MountError(f"mount did not come up in {timeout} s:\n{mp.log_text()}")
        time.sleep(0.02)
    return mp
