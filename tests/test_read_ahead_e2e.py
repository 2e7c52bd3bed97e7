"""Reads ahead through a real mount: ``cp -r`` of a directory of small files is prefetched
(and is not with ``--no-prefetch``), a large file comes in parallel ranged pieces when the
server honours Range and in one stream when it does not, byte-exact either way."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from emulator_proc import EmulatorProcess
from mount_proc import MountProcess

EmulatorFactory = Callable[..., EmulatorProcess]
MountFactory = Callable[..., MountProcess]


def _container(emu: EmulatorProcess, name: str) -> str:
    response = httpx.post(
        emu.base_url + "/containers",
        json={"name": name},
        headers={"Authorization": "Bearer sk-test"},
    )
    response.raise_for_status()
    cid: str = response.json()["id"]
    return cid


def _status(mp: MountProcess) -> str:
    argv = [sys.executable, "-m", "containerfs", "status", str(mp.mountpoint)]
    argv += ["--state-dir", str(mp.state_dir)]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])
def test_cp_r_of_small_files_is_byte_exact_and_prefetched_unless_turned_off(
    emulator_factory: EmulatorFactory, mount_factory: MountFactory, tmp_path: Path, prefetch: bool
) -> None:
    emu = emulator_factory()
    cid = _container(emu, "walk")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        data = os.urandom(16 * 1024 + i)
        (src / f"f{i:02d}.bin").write_bytes(data)
        emu.add_file(cid, f"/mnt/data/d/f{i:02d}.bin", data)
    mp = mount_factory(emu, *([] if prefetch else ["--no-prefetch"]))
    emu.reset_stats()
    subprocess.run(["cp", "-r", str(mp.path("walk", "d")), str(tmp_path / "out")], check=True)
    names = sorted(p.name for p in src.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(src, tmp_path / "out", names, shallow=False)
    assert (len(match), mismatch, errors) == (30, [], [])
    assert emu.requests()["file_content"] == 30  # each file fetched once, prefetched or not
    if prefetch:
        started, used = _prefetch_counts(mp)
        assert started >= 20 and used == started
    else:
        time.sleep(1.5)  # the daemon writes its status every second
        assert "prefetch" not in _status(mp)


def _prefetch_counts(mp: MountProcess) -> tuple[int, int]:
    """(started, used) from the status line, once the daemon wrote one where all were used
    (it writes its status every second)."""
    deadline = time.monotonic() + 30
    while True:
        lines = [line for line in _status(mp).splitlines() if line.startswith("prefetch")]
        if lines:
            words = lines[0].replace(",", " ").split()
            started, used = int(words[1]), int(words[7])
            if used == started or time.monotonic() > deadline:
                return started, used
        elif time.monotonic() > deadline:
            return 0, 0
        time.sleep(0.2)


@pytest.mark.parametrize("honoured", [True, False], ids=["range", "no-range"])
def test_a_large_file_reads_byte_exact_in_pieces_or_one_stream(
    emulator_factory: EmulatorFactory, mount_factory: MountFactory, honoured: bool
) -> None:
    emu = emulator_factory(*(["--range"] if honoured else []))
    cid = _container(emu, "big")
    data = os.urandom(20 << 20)
    emu.add_file(cid, "/mnt/data/big.bin", data)
    mp = mount_factory(emu)
    emu.reset_stats()
    with open(mp.path("big", "big.bin"), "rb") as f:
        assert f.read() == data
    calls = emu.requests()["file_content"]
    assert calls > 2 if honoured else calls == 1
