"""Local faults (issue 12): a full cache disk, a full state disk, two mounts on one state
directory, file modes, and the emulator's key in ``ps``. One test per row, real mounts.

Small disks are tmpfs mounts (root only), unmounted at teardown after the FUSE mounts on
them. Every test asserts the behaviour the issue asks for; while a row is not fixed its
test is an expected failure (``strict``: a fix makes it pass, and the mark must go).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bounded_ops import BoundedOps
from emulator_proc import EmulatorProcess
from mount_proc import MountError, MountProcess, is_mounted, start_mount

pytestmark = pytest.mark.mount

MiB = 1 << 20


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``tmpfs(name, size)``: a small filesystem at ``tmp_path/name``; unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made: list[Path] = []

    def make(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
        made.append(path)
        return path

    yield make
    for path in reversed(made):
        if is_mounted(path):
            done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
            if done.returncode:
                subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def mounts(
    tmpfs: Callable[[str, str], Path], emulator: EmulatorProcess, tmp_path: Path
) -> Iterator[Callable[..., MountProcess]]:
    """Like ``mount_factory`` over the session emulator; unmounted before any tmpfs."""
    started: list[MountProcess] = []

    def start(*args: str, **kwargs: Any) -> MountProcess:
        mp = start_mount(emulator, tmp_path, "--drain-timeout", "5", *args, **kwargs)
        started.append(mp)
        return mp

    yield start
    for mp in reversed(started):
        mp.unmount(timeout=15)


@pytest.fixture
def ops() -> Iterator[BoundedOps]:
    made = BoundedOps()
    yield made
    made.close()


@pytest.fixture
def api(emulator: EmulatorProcess) -> Iterator[httpx.Client]:
    client = httpx.Client(
        base_url=emulator.base_url + "/",
        headers={"Authorization": "Bearer sk-test"},
        timeout=60,
    )
    yield client
    client.close()


def new_container(api: httpx.Client, prefix: str) -> tuple[str, str]:
    """A new container on the session emulator: (id, name)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    response = api.post("containers", json={"name": name})
    response.raise_for_status()
    return response.json()["id"], name


def upload(api: httpx.Client, cid: str, name: str, data: bytes) -> None:
    api.post(f"containers/{cid}/files", files={"file": (name, data)}).raise_for_status()


def files_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def test_a_cache_too_small_for_a_file_still_serves_it_and_leaves_nothing(
    tmpfs: Callable[[str, str], Path],
    mounts: Callable[..., MountProcess],
    api: httpx.Client,
    ops: BoundedOps,
) -> None:
    cache = tmpfs("small-cache", "5m")
    cid, name = new_container(api, "bigread")
    data = os.urandom(20 * MiB)
    upload(api, cid, "big.bin", data)
    mp = mounts("--cache-dir", str(cache))
    read = ops.run("read", mp.path(name, "big.bin"), timeout=60)
    mp.unmount(timeout=15)

    assert read.report.get("sha256") == hashlib.sha256(data).hexdigest(), str(read)
    left = {str(p.relative_to(mp.state_dir)): p.stat().st_size for p in files_in(mp.state_dir)}
    big = {p: size for p, size in left.items() if size >= MiB}
    assert not big, f"left behind after unmount: {big}"
    assert "unexpected error" not in mp.log_text()


def test_a_full_state_disk_is_enospc_and_the_file_keeps_its_content(
    tmpfs: Callable[[str, str], Path],
    mounts: Callable[..., MountProcess],
    api: httpx.Client,
    ops: BoundedOps,
) -> None:
    state = tmpfs("small-state", "3m")
    cid, name = new_container(api, "fullstate")
    old = b"the old content\n"
    upload(api, cid, "kept.txt", old)
    mp = mounts("--state-dir", str(state))
    path = mp.path(name, "kept.txt")
    written = ops.run("write", path, str(8 * MiB), timeout=60)
    reread = ops.run("read", path, timeout=30)
    spools = files_in(state / "spool")

    assert written.errno == errno.ENOSPC, str(written)
    assert reread.report.get("sha256") == hashlib.sha256(old).hexdigest(), str(reread)
    assert not spools, f"left behind: {spools}"


def test_a_second_mount_on_one_state_dir_is_refused_with_one_line(
    mounts: Callable[..., MountProcess], tmp_path: Path
) -> None:
    shared = tmp_path / "shared-state"
    mounts("--state-dir", str(shared), name="first")
    with pytest.raises(MountError) as refused:
        mounts("--state-dir", str(shared), name="second")
    message = str(refused.value)
    assert "Traceback" not in message
    assert "state" in message.lower(), message


def test_a_file_read_past_a_full_cache_reads_again_after_a_remount_and_nothing_is_kept(
    tmpfs: Callable[[str, str], Path],
    mounts: Callable[..., MountProcess],
    api: httpx.Client,
    ops: BoundedOps,
    tmp_path: Path,
) -> None:
    cache = tmpfs("full-cache", "5m")
    cid, name = new_container(api, "reread")
    data = os.urandom(12 * MiB)
    upload(api, cid, "big.bin", data)
    digest = hashlib.sha256(data).hexdigest()
    state = tmp_path / "reread-state"
    reads = []
    for run in ("one", "two"):  # the second mount finds what the first left
        mp = mounts("--cache-dir", str(cache), "--state-dir", str(state), name=run)
        path = mp.path(name, "big.bin")
        reads += [ops.run("read", path, timeout=60), ops.run("read", path, timeout=60)]
        mp.unmount(timeout=15)
        assert "unexpected error" not in mp.log_text()
        assert "Traceback" not in mp.log_text()

    assert [r.report.get("sha256") for r in reads] == [digest] * 4, [str(r) for r in reads]
    kept = {p.name: p.stat().st_size for p in files_in(cache)}
    assert not {n: size for n, size in kept.items() if size >= MiB}, kept
    assert not [p for p in files_in(state) if p.stat().st_size >= MiB]


def test_the_first_mount_keeps_working_and_loses_nothing_when_a_second_is_refused(
    mounts: Callable[..., MountProcess], api: httpx.Client, tmp_path: Path
) -> None:
    cid, name = new_container(api, "first")
    shared = tmp_path / "shared-state"
    first = mounts("--state-dir", str(shared), name="first")
    (first.path(name, "before.txt")).write_bytes(b"written before\n")
    with pytest.raises(MountError) as refused:
        mounts("--state-dir", str(shared), name="second")
    assert "in use by the mount of" in str(refused.value) and str(first.mountpoint) in str(
        refused.value
    )
    (first.path(name, "after.txt")).write_bytes(b"written after\n")

    assert sorted(os.listdir(first.path(name))) == ["after.txt", "before.txt"]
    assert first.path(name, "before.txt").read_bytes() == b"written before\n"
    listed = api.get(f"containers/{cid}/files").json()["data"]
    assert sorted(f["path"].rsplit("-", 1)[-1] for f in listed) == ["after.txt", "before.txt"]
    assert first.unmount(timeout=15) == 0
    assert "Traceback" not in first.log_text()


def test_state_and_cache_files_are_private_to_the_user(
    mounts: Callable[..., MountProcess], api: httpx.Client, tmp_path: Path
) -> None:
    cid, name = new_container(api, "modes")
    upload(api, cid, "read.txt", b"cached\n")
    mp = mounts("--local-only", "")
    cache = tmp_path / "mnt-cache"
    assert mp.path(name, "read.txt").read_bytes() == b"cached\n"  # a cache entry and sidecar
    with open(mp.path(name, "open.txt"), "wb") as spooled:  # a spool while open
        spooled.write(b"spooled\n")
        spooled.flush()
        loose = []
        for top in (mp.state_dir, cache):
            for path in [top, *top.rglob("*")]:
                try:
                    mode = stat.S_IMODE(path.lstat().st_mode)
                except FileNotFoundError:  # a temporary file renamed into place meanwhile
                    continue
                if mode & 0o077:
                    loose.append(f"{path.relative_to(tmp_path)} {mode:o}")
    assert not loose, "readable by others: " + ", ".join(sorted(loose))


EMULATOR_KEY_VARIABLE = "CONTAINERFS_EMULATOR_API_KEY"


def test_the_emulator_takes_its_key_from_the_environment(
    emulator_factory: Callable[..., EmulatorProcess],
) -> None:
    emu = emulator_factory(env={EMULATOR_KEY_VARIABLE: "sk-from-env"})
    statuses = {}
    for key in ("sk-from-env", "sk-wrong"):
        with contextlib.closing(
            httpx.Client(base_url=emu.base_url + "/", headers={"Authorization": f"Bearer {key}"})
        ) as client:
            statuses[key] = client.get("containers").status_code
    assert statuses == {"sk-from-env": 200, "sk-wrong": 401}, statuses
