"""``containerfs status`` and ``unmount`` show progress, tried on real mounts of the emulator:
an upload in flight with bytes done of its total (a stalled server holds it part way), then
done; a download in flight as its bytes trickle in; a failed upload by its path in the
mount; ``--json`` and the text carrying the same; ``unmount`` naming what it waits for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from emulator_proc import EmulatorProcess
from lying_proxy import LyingProxy, Rule, Trickle
from mount_proc import MountProcess, mount_env

pytestmark = pytest.mark.mount

CLI = [sys.executable, "-m", "containerfs"]
BIG = 48 << 20  # more than the socket buffers hold while the server does not read
T = TypeVar("T")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def status_json(mp: MountProcess) -> dict[str, Any]:
    result = run_cli("status", str(mp.mountpoint), "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def status_text(mp: MountProcess) -> str:
    result = run_cli("status", str(mp.mountpoint))
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for(find: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def line_of(text: str, path: Path) -> str | None:
    return next((line for line in text.splitlines() if f"  {path}  " in line), None)


@pytest.fixture
def background() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``background(*argv)`` starts a command; it is killed at teardown if still running."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str | Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_status_shows_an_upload_part_way_by_its_path_and_later_done(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
    background: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu)
    src = tmp_path / "big.bin"
    src.write_bytes(b"\x5a" * BIG)
    target = mp.path("scratch", "big.bin")
    # the server takes the request, then reads none of its body for a while
    emu.faults([{"route": "upload_file", "action": "stall", "seconds": 6, "count": 1}])
    cp = background("cp", src, target)

    def part_way() -> dict[str, Any] | None:
        found = [t for t in status_json(mp)["in_flight"] if t["path"] == str(target)]
        # a streamed body's total is known once the file is closed (cp waits for the stalled
        # body a moment before it writes on)
        known = found and found[0]["total"] is not None
        return found[0] if known and found[0]["done"] < found[0]["total"] else None

    item = part_way() or wait_for(part_way, "the upload in flight")
    assert item["direction"] == "upload" and item["total"] == BIG
    assert 0 <= item["done"] < BIG and item["rate"] >= 0
    line = wait_for(lambda: line_of(status_text(mp), target), "the upload in the text")
    assert line.split()[:2] == ["upload", str(target)] and " of 48.0 MiB (" in line

    assert cp.wait(timeout=120) == 0

    def done() -> dict[str, Any] | None:
        status = status_json(mp)
        return status if not status["in_flight"] and status["writer"]["uploads"] else None

    status = wait_for(done, "the upload to be done")
    assert status["api"]["bytes_up"] >= BIG and status["writer"]["uploads"] == 1
    assert line_of(status_text(mp), target) is None
    assert emu.stats()["bytes_uploaded"] == BIG


def test_status_shows_a_download_in_flight_as_its_bytes_arrive(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
    background: Callable[..., subprocess.Popen[bytes]],
) -> None:
    emu = emulator_factory()
    name = f"slow-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=emu.base_url + "/", timeout=30) as api:
        response = api.post("containers", json={"name": name})
        response.raise_for_status()
    cid = response.json()["id"]
    size = 200
    emu.add_file(cid, "/mnt/data/slow.txt", b"s" * size)
    proxy = LyingProxy(emu.root_url)
    try:
        proxy.add(Rule(r"/content$", Trickle(interval=0.05)))  # 20 bytes a second
        mp = mount_factory(emu, env=mount_env(emu, OPENAI_BASE_URL=proxy.base_url))
        target = mp.path(name, "slow.txt")
        cat = background("cat", target)
        seen: list[dict[str, Any]] = []

        def arriving() -> dict[str, Any] | None:
            found = [t for t in status_json(mp)["in_flight"] if t["path"] == str(target)]
            seen.extend(found)
            partial = [t for t in seen if 0 < t["done"] < size]
            moved = len({t["done"] for t in partial}) >= 2  # two snapshots, bytes between
            return partial[-1] if moved and partial[-1]["rate"] > 0 else None

        item = wait_for(arriving, "the download to show progress")
        assert item["direction"] == "download" and item["total"] == size
        dones = [t["done"] for t in seen]
        assert dones == sorted(dones) and len(set(dones)) >= 2, dones
        assert cat.wait(timeout=60) == 0
        wait_for(lambda: not status_json(mp)["in_flight"] or None, "the download to end")
    finally:
        proxy.stop()


def test_a_failed_upload_is_shown_by_its_path_in_the_mount(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu)
    emu.faults([{"route": "upload_file", "action": "error", "status": 500, "count": None}])
    target = mp.path("scratch", "stuck.txt")
    with pytest.raises(OSError), open(target, "w") as f:
        f.write("not uploaded yet")

    def listed() -> dict[str, Any] | None:
        found = [p for p in status_json(mp)["pending"] if p["path"] == str(target)]
        return found[0] if found else None

    item = wait_for(listed, "the failed upload in the status")
    assert (item["name"], item["state"], item["bytes"]) == ("stuck.txt", "failed", 16)
    assert item["container_id"].startswith("cntr_") and item["error"]
    line = line_of(status_text(mp), target)
    assert line is not None and "failed" in line and "cntr_" not in line
    emu.clear_faults()  # the unmount at teardown uploads it, without waiting out its drain


def test_unmount_names_each_upload_it_waits_for_with_its_progress(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
    tmp_path: Path,
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu, "--drain-timeout", "90s")
    emu.faults([{"route": "upload_file", "action": "error", "status": 500, "count": None}])
    target = mp.path("scratch", "big.bin")
    with pytest.raises(OSError), open(target, "wb") as f:
        f.write(b"\x33" * BIG)
    # from now on every attempt is held a while before the server reads its body
    emu.faults([{"route": "upload_file", "action": "stall", "seconds": 4, "count": None}])
    result = run_cli("unmount", str(mp.mountpoint))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "containerfs: waiting for 1 pending upload(s):" in lines
    uploading = [line for line in lines if line.startswith(f"  {target}  uploading ")]
    assert uploading, result.stderr
    assert " of 48.0 MiB (" in uploading[0]
    assert "cntr_" not in result.stderr
    assert mp.proc.wait(timeout=30) == 0
    assert emu.stats()["bytes_uploaded"] == BIG
