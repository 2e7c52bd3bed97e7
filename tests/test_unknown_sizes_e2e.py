"""End-to-end: assistant outputs listed with ``bytes: null`` copied out by tools that trust
``st_size`` (rsync, tar, Python's shutil, ``cp -a``, cmp, mmap), on real kernel mounts.

Each test mounts afresh with an empty disk cache, so the first thing the kernel asks about a
file is also the first time the mount hears of it. Copies are compared byte for byte.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulator_proc import EmulatorProcess
from mount_proc import MountProcess

from containerfs.daemon.mount import run_dir

pytestmark = pytest.mark.mount

MountFactory = Callable[..., MountProcess]
MIB = 1 << 20

# display path -> content; all listed with bytes: null except LISTED
_rng = random.Random(7)
OUTPUTS: dict[str, bytes] = {
    "report.md": b"# ok\n",
    "empty.txt": b"",
    "out/summary.txt": b"assistant output\n" * 300,
    "out/plots/chart.png": _rng.randbytes(4096 + 3),
    "out/plots/deep/table.csv": _rng.randbytes(200_000),  # over one 128 KiB kernel read
    "out/model.bin": _rng.randbytes(3 * MIB + 11),
    "big.bin": _rng.randbytes(6 * MIB + 1),
}
LISTED = "listed.txt"
ALL = {**OUTPUTS, LISTED: b"a size the listing gives\n"}


class Box:
    """A container in the session emulator holding ``ALL``; the mount is per test."""

    def __init__(self, emulator: EmulatorProcess, name: str, cid: str) -> None:
        self.emu = emulator
        self.name = name
        self.cid = cid

    def content_requests(self) -> int:
        return self.emu.requests().get("file_content", 0)


def create_container(emulator: EmulatorProcess, name: str) -> str:
    response = httpx.post(
        f"{emulator.base_url}/containers",
        json={"name": name},
        headers={"Authorization": "Bearer sk-test"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def box(emulator: EmulatorProcess) -> Box:
    name = f"outputs-{uuid.uuid4().hex[:8]}"
    cid = create_container(emulator, name)
    for path, data in OUTPUTS.items():
        made = emulator.add_file(cid, f"/mnt/data/{path}", data, report_bytes=False)
        assert made["bytes"] is None
    emulator.add_file(cid, f"/mnt/data/{LISTED}", ALL[LISTED])
    return Box(emulator, name, cid)


@pytest.fixture
def no_faults(emulator: EmulatorProcess) -> Iterator[None]:
    yield
    emulator.clear_faults()


def tree(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file under ``root``."""
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stderr}"
    return done


def ls_sizes(directory: Path) -> dict[str, int]:
    """Relative path -> size, as ``ls -lR`` shows them on its first listing."""
    out = run("ls", "-lnR", "--time-style=+%s", directory).stdout
    sizes: dict[str, int] = {}
    prefix = ""
    for line in out.splitlines():
        if line.endswith(":"):
            sub = Path(line[:-1]).relative_to(directory).as_posix()
            prefix = "" if sub == "." else sub + "/"
        elif line.startswith("-"):
            _, _, _, _, size, _, name = line.split(maxsplit=6)
            sizes[prefix + name] = int(size)
    return sizes


def mount_status(mp: MountProcess, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The daemon's status snapshot (rewritten every second) once ``ready`` holds."""
    path = run_dir(mp.state_dir, mp.mountpoint) / "status.json"
    deadline = time.monotonic() + 10
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            status = json.loads(path.read_text())
            if ready(status):
                break
        time.sleep(0.1)
    return status


def expected_sizes() -> dict[str, int]:
    return {path: len(data) for path, data in ALL.items()}


# ---- copying out -----------------------------------------------------------------------


def rsync_a(src: Path, dst: Path) -> None:
    run("rsync", "-a", f"{src}/", f"{dst}/")


def tar_c(src: Path, dst: Path) -> None:
    archive = dst.parent / "out.tar"
    run("tar", "-C", src, "-cf", archive, ".")
    dst.mkdir()
    run("tar", "-C", dst, "-xf", archive)


def copytree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def cp_a(src: Path, dst: Path) -> None:
    run("cp", "-a", src, dst)


@pytest.mark.parametrize("copy", [rsync_a, tar_c, copytree, cp_a], ids=lambda f: f.__name__)
def test_tools_that_trust_st_size_copy_every_output_whole(
    copy: Callable[[Path, Path], None],
    box: Box,
    emulator: EmulatorProcess,
    mount_factory: MountFactory,
    tmp_path: Path,
) -> None:
    mp = mount_factory(emulator)
    dst = tmp_path / "copy"

    copy(mp.path(box.name), dst)

    assert tree(dst) == ALL


def test_ls_l_shows_the_true_sizes_on_the_first_listing(
    box: Box, emulator: EmulatorProcess, mount_factory: MountFactory
) -> None:
    mp = mount_factory(emulator)
    emulator.reset_stats()

    assert ls_sizes(mp.path(box.name)) == expected_sizes()

    assert box.content_requests() == len(OUTPUTS)  # one per file of unknown size
    status = mount_status(mp, lambda s: s["sizes"].get("learned") == len(OUTPUTS))
    assert status["sizes"] == {"learned": len(OUTPUTS), "known": 0, "failed": 0, "corrected": 0}


def test_cmp_and_mmap_see_the_whole_content(
    box: Box, emulator: EmulatorProcess, mount_factory: MountFactory, tmp_path: Path
) -> None:
    mp = mount_factory(emulator)
    local = tmp_path / "model.bin"
    local.write_bytes(ALL["out/model.bin"])

    run("cmp", mp.path(box.name, "out", "model.bin"), local)
    with (
        open(mp.path(box.name, "big.bin"), "rb") as f,
        mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m,
    ):
        assert len(m) == len(ALL["big.bin"])
        assert m[:] == ALL["big.bin"]


def test_sizes_are_right_with_a_metadata_ttl_of_zero(
    box: Box, emulator: EmulatorProcess, mount_factory: MountFactory, tmp_path: Path
) -> None:
    mp = mount_factory(emulator, "--metadata-ttl", "0")
    assert ls_sizes(mp.path(box.name)) == expected_sizes()
    rsync_a(mp.path(box.name), tmp_path / "copy")
    assert tree(tmp_path / "copy") == ALL
    assert ls_sizes(mp.path(box.name)) == expected_sizes()


def test_after_a_remount_sizes_come_from_the_cache_without_a_download(
    box: Box, emulator: EmulatorProcess, mount_factory: MountFactory, tmp_path: Path
) -> None:
    cache, state = tmp_path / "cache", tmp_path / "state"
    first = mount_factory(emulator, cache_dir=cache, state_dir=state, name="first")
    assert tree(first.path(box.name)) == ALL  # read whole: complete cache entries
    assert first.unmount() == 0

    second = mount_factory(emulator, cache_dir=cache, state_dir=state, name="second")
    emulator.reset_stats()
    assert ls_sizes(second.path(box.name)) == expected_sizes()
    rsync_a(second.path(box.name), tmp_path / "copy")
    assert tree(tmp_path / "copy") == ALL
    assert box.content_requests() == 0


def test_a_file_whose_content_request_fails_is_eio_on_stat_not_empty(
    emulator: EmulatorProcess, mount_factory: MountFactory, no_faults: None
) -> None:
    name = f"failing-{uuid.uuid4().hex[:8]}"
    cid = create_container(emulator, name)
    emulator.add_file(cid, "/mnt/data/out.txt", "content nobody can fetch", report_bytes=False)
    emulator.add_file(cid, "/mnt/data/listed.txt", "fine")
    mp = mount_factory(emulator)
    emulator.faults([{"route": "file_content", "action": "error", "status": 403, "count": None}])

    with pytest.raises(OSError) as failed:
        os.stat(mp.path(name, "out.txt"))
    assert failed.value.errno == errno.EIO
    listing = subprocess.run(
        ["ls", "-l", str(mp.path(name))], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode != 0
    assert "out.txt" in listing.stderr and "Input/output error" in listing.stderr
    assert " 4 " in listing.stdout and "listed.txt" in listing.stdout
    assert os.stat(mp.path(name, "listed.txt")).st_size == 4
