"""``containerfs demo``: the emulator with sample containers, mounted; Ctrl-C ends it all."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

TRY = """
containerfs demo: the built-in emulator, seeded with sample containers, is mounted at {mp}

In another shell, first paste:
  export PATH={bindir}:$PATH OPENAI_BASE_URL={url} OPENAI_API_KEY=sk-demo

then try:
  ls -l {mp}                         # one directory per container
  ls -lR {mp}/analysis               # files, nested assistant outputs in out/
  cat {mp}/analysis/data.csv
  cp /etc/hostname {mp}/scratch/     # uploads on close
  getfattr -d {mp}/analysis/data.csv # ids, server path, source
  containerfs status                 # every containerfs mount: API calls, cache, uploads

Ctrl-C unmounts and stops the emulator.
"""


def _start_emulator(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "containerfs",
            "emulator",
            "--port",
            "0",
            "--seed",
            "demo",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit("containerfs: the emulator did not start")
    return proc, line.removeprefix("listening on ")


def _start_mount(mountpoint: Path, work: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The mount daemon in the foreground, its state and cache under ``work``."""
    argv = ["mount", str(mountpoint), "--foreground", "--state-dir", str(work / "state")]
    argv += ["--cache-dir", str(work / "cache"), "--log-level", "warning"]
    return subprocess.Popen([sys.executable, "-m", "containerfs", *argv], env=env)


def _stop_mount(mount: subprocess.Popen[bytes], mountpoint: Path) -> None:
    """SIGTERM (the daemon uploads what is pending, then unmounts), then what is left."""
    if mount.poll() is None:
        mount.send_signal(signal.SIGTERM)
        try:
            mount.wait(timeout=90)
        except subprocess.TimeoutExpired:
            mount.kill()
    if os.path.ismount(mountpoint):
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(mountpoint: Path) -> int:
    # `kill` or a closed terminal ends the demo as Ctrl-C does: unmounted, emulator stopped
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(mountpoint):
        print(f"containerfs: {mountpoint} is already a mountpoint", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="containerfs-demo-") as tmp:
        work = Path(tmp)
        emulator, url = _start_emulator(work / "emulator")
        env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-demo"}
        mount = _start_mount(mountpoint, work, env)
        try:
            while not os.path.ismount(mountpoint):
                if mount.poll() is not None:
                    return mount.returncode or 1
                time.sleep(0.05)
            bindir = shlex.quote(sysconfig.get_path("scripts"))
            mp = shlex.quote(str(mountpoint.resolve()))
            print(TRY.format(mp=mp, url=url, bindir=bindir), flush=True)
            try:
                mount.wait()
            except KeyboardInterrupt:
                print("\nunmounting…", flush=True)
        finally:
            _stop_mount(mount, mountpoint)
            emulator.terminate()
            emulator.wait(timeout=10)
    return 0
