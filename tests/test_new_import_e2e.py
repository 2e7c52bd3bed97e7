"""End-to-end: ``containerfs new`` and ``containerfs import`` through a real mount (daemon in a
subprocess, control socket, live emulator).

Each test checks what the mount shows, what the server holds, and the API calls the command
cost (the emulator's own request counters).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulator_proc import EmulatorProcess
from mount_proc import MountProcess

pytestmark = pytest.mark.mount

MountFactory = Callable[..., MountProcess]
EmulatorFactory = Callable[..., EmulatorProcess]
XATTR = "user.containerfs."


class FilesApi:
    """The emulator's Files API and containers, as another client of the service sees them."""

    def __init__(self, emu: EmulatorProcess) -> None:
        self.http = httpx.Client(
            base_url=emu.base_url + "/", headers={"Authorization": "Bearer sk-test"}, timeout=30
        )

    def upload(self, filename: str, data: bytes) -> str:
        response = self.http.post(
            "files", files={"file": (filename, data)}, data={"purpose": "user_data"}
        )
        response.raise_for_status()
        return str(response.json()["id"])

    def container_named(self, name: str) -> dict[str, Any]:
        page = self.http.get("containers", params={"name": name, "limit": 100}).json()
        [found] = page["data"]
        return dict(found)

    def files(self, cid: str) -> list[dict[str, Any]]:
        page = self.http.get(f"containers/{cid}/files", params={"limit": 100}).json()
        return list(page["data"])

    def content(self, cid: str, fid: str) -> bytes:
        response = self.http.get(f"containers/{cid}/files/{fid}/content")
        response.raise_for_status()
        return response.content


@pytest.fixture
def emu(emulator_factory: EmulatorFactory) -> EmulatorProcess:
    return emulator_factory()


@pytest.fixture
def files_api(emu: EmulatorProcess) -> Iterator[FilesApi]:
    client = FilesApi(emu)
    yield client
    client.http.close()


def cli(mp: MountProcess, *args: str, state_dir: bool = True) -> subprocess.CompletedProcess[str]:
    """``containerfs ARGS --state-dir …`` as a user runs it (no API credentials needed);
    without ``state_dir``, the daemon is found through its registration, as ``status`` does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    argv = [sys.executable, "-m", "containerfs", *args]
    if state_dir:
        argv += ["--state-dir", str(mp.state_dir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("containerfs: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def xattr(path: Path, name: str) -> str:
    return os.getxattr(path, XATTR + name).decode()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_new_container_shows_its_options_and_holds_its_files_byte_identical(
    emu: EmulatorProcess, files_api: FilesApi, mount_factory: MountFactory
) -> None:
    data = os.urandom(300_000)
    csv = b"a,b\n1,2\n"
    big, small = files_api.upload("input.bin", data), files_api.upload("table.csv", csv)
    mp = mount_factory(emu)
    os.listdir(mp.mountpoint)  # the container listing is cached, as in a session in use
    emu.reset_stats()
    result = cli(
        mp, "new", str(mp.mountpoint), "proj",
        "--file-id", big, "--file-id", small,
        "--memory-limit", "4g", "--expires-after", "30",
        "--network", "allow:example.com,pypi.org", "--skill", "skill_abc",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{mp.path('proj')}\n"
    # one call made it, and the directory shows without listing the containers again
    assert "proj" in os.listdir(mp.mountpoint)
    assert emu.requests().get("create_container") == 1
    assert emu.requests().get("list_containers", 0) == 0
    box = mp.path("proj")
    assert xattr(box, "memory_limit") == "4g"
    assert xattr(box, "expires_after_minutes") == "30"
    assert xattr(box, "network_policy") == "allowlist:example.com,pypi.org"
    assert xattr(box, "file_ids") == f"{big},{small}"
    assert xattr(box, "skills") == "skill_abc"
    assert sorted(os.listdir(box)) == ["input.bin", "table.csv"]
    assert (box / "input.bin").read_bytes() == data
    assert (box / "table.csv").read_bytes() == csv
    server = files_api.container_named("proj")
    assert server["network_policy"] == {
        "type": "allowlist",
        "allowed_domains": ["example.com", "pypi.org"],
    }
    assert xattr(box, "id") == server["id"]
    [made] = [c for c in emu.state()["containers"] if c["id"] == server["id"]]
    assert made["created_with"]["file_ids"] == [big, small]
    assert made["created_with"]["skills"] == [{"type": "skill_reference", "skill_id": "skill_abc"}]


def test_container_made_elsewhere_shows_its_policy_but_no_creation_files(
    emu: EmulatorProcess, files_api: FilesApi, mount_factory: MountFactory
) -> None:
    fid = files_api.upload("seed.txt", b"seed\n")
    files_api.http.post(
        "containers", json={"name": "elsewhere", "file_ids": [fid]}
    ).raise_for_status()
    mp = mount_factory(emu)
    box = mp.path("elsewhere")
    assert xattr(box, "network_policy") == "disabled"  # the service's default
    names = os.listxattr(box)
    assert XATTR + "file_ids" not in names and XATTR + "skills" not in names
    made = cli(mp, "new", str(mp.mountpoint), "here")
    assert made.returncode == 0, made.stderr
    assert xattr(mp.path("here"), "file_ids") == ""  # made here, with no files


def test_import_with_a_name_costs_one_call_and_survives_a_remount(
    emu: EmulatorProcess, files_api: FilesApi, mount_factory: MountFactory, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    fid = files_api.upload("upstream-name.dat", data)
    files_api.http.post("containers", json={"name": "work"}).raise_for_status()
    state = tmp_path / "state"
    mp = mount_factory(emu, state_dir=state)
    (mp.path("work", "in")).mkdir()
    os.listdir(mp.path("work", "in"))  # listings cached, as after any ls
    emu.reset_stats()
    result = cli(mp, "import", str(mp.path("work", "in")), "--file-id", fid, "--name", "mine.dat")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{mp.path('work', 'in', 'mine.dat')}\n"
    assert emu.requests() == {"upload_file": 1}
    assert os.listdir(mp.path("work", "in")) == ["mine.dat"]
    assert mp.path("work", "in", "mine.dat").read_bytes() == data
    cid = files_api.container_named("work")["id"]
    [server] = files_api.files(cid)
    assert server["path"] == "/mnt/data/upstream-name.dat"  # the server's own choice
    assert files_api.content(cid, server["id"]) == data
    assert mp.unmount() == 0
    again = mount_factory(emu, state_dir=state, name="again")
    assert again.path("work", "in", "mine.dat").read_bytes() == data
    assert os.listdir(again.path("work")) == ["in"]


def test_import_without_a_name_takes_the_files_api_filename(
    emu: EmulatorProcess, files_api: FilesApi, mount_factory: MountFactory
) -> None:
    fid = files_api.upload("report.pdf", b"%PDF-1.4 tiny\n")
    files_api.http.post("containers", json={"name": "docs"}).raise_for_status()
    mp = mount_factory(emu)
    os.listdir(mp.path("docs"))
    emu.reset_stats()
    result = cli(mp, "import", str(mp.path("docs")), "--file-id", fid, state_dir=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{mp.path('docs', 'report.pdf')}\n"
    assert emu.requests() == {"retrieve_api_file": 1, "upload_file": 1}
    assert mp.path("docs", "report.pdf").read_bytes() == b"%PDF-1.4 tiny\n"


def test_bad_ids_and_options_give_one_line_errors_and_change_nothing(
    emu: EmulatorProcess, files_api: FilesApi, mount_factory: MountFactory, tmp_path: Path
) -> None:
    fid = files_api.upload("x.txt", b"x")
    files_api.http.post("containers", json={"name": "box"}).raise_for_status()
    mp = mount_factory(emu)
    mnt = str(mp.mountpoint)
    os.listdir(mp.path("box"))
    before = emu.state()
    cases = {
        ("new", mnt, "n1", "--file-id", "file-nope"): "unknown file id",
        ("new", mnt, "n2", "--memory-limit", "2g"): "bad memory limit '2g'",
        ("new", mnt, "n3", "--network", "allow:"): "bad network policy",
        ("new", mnt, "n4", "--network", "open"): "bad network policy 'open'",
        ("new", mnt, "n5", "--expires-after", "soon"): "bad expiry 'soon'",
        ("new", mnt, "box"): "box: name taken",
        ("new", mnt, "n6", "--file-id", "../containers"): "not a file id",
        ("import", str(mp.path("box")), "--file-id", "file-nope"): "unknown file id file-nope",
        ("import", str(mp.path("box")), "--file-id", fid, "--name", "a/b"): "not a usable",
        ("import", str(tmp_path), "--file-id", fid): "is not on a containerfs mount",
        ("new", str(tmp_path), "n7"): "is not on a containerfs mount",
        ("import", mnt, "--file-id", fid): "not the mount's root",
    }
    for args, message in cases.items():
        line = one_line_error(cli(mp, *args))
        assert message in line, (args, line)
    (mp.path("box", "x.txt")).write_bytes(b"mine")
    line = one_line_error(cli(mp, "import", str(mp.path("box")), "--file-id", fid))
    assert "box/x.txt: name taken" in line
    assert mp.path("box", "x.txt").read_bytes() == b"mine"
    after = emu.state()
    assert [c["name"] for c in after["containers"]] == [c["name"] for c in before["containers"]]
    cid = files_api.container_named("box")["id"]
    assert len(files_api.files(cid)) == 1  # only the file written above


def test_import_into_an_expired_container_says_so(
    emu: EmulatorProcess, files_api: FilesApi, mount_factory: MountFactory
) -> None:
    fid = files_api.upload("late.txt", b"late")
    cid = files_api.http.post("containers", json={"name": "old"}).json()["id"]
    mp = mount_factory(emu)
    os.listdir(mp.path("old"))  # the mount still believes it is running
    emu.expire(cid)
    line = one_line_error(cli(mp, "import", str(mp.path("old")), "--file-id", fid))
    assert "old: the container has expired" in line
    # the mount asked the server again: an expired container is hidden (no --show-expired)
    assert "old" not in os.listdir(mp.mountpoint)


def test_commands_need_the_daemon_of_the_mount(
    emu: EmulatorProcess, mount_factory: MountFactory, tmp_path: Path
) -> None:
    mp = mount_factory(emu)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    argv = [sys.executable, "-m", "containerfs", "new", str(mp.mountpoint), "x"]
    wrong = subprocess.run(
        [*argv, "--state-dir", str(tmp_path / "other")], capture_output=True, text=True, env=env
    )
    line = one_line_error(wrong)
    assert "no containerfs daemon answers" in line
    sock = next(mp.state_dir.glob("mounts/*/control"))
    assert sock.stat().st_mode & 0o777 == 0o600


def test_a_name_looked_up_before_it_existed_shows_once_made(
    emu: EmulatorProcess, files_api: FilesApi, mount_factory: MountFactory
) -> None:
    fid = files_api.upload("late.txt", b"late\n")
    # the kernel keeps "no such file" for a minute: only the daemon's notice can clear it
    mp = mount_factory(emu, "--negative-ttl", "60")
    assert not mp.path("later").exists()
    assert cli(mp, "new", str(mp.mountpoint), "later").returncode == 0
    assert mp.path("later").is_dir()
    assert not mp.path("later", "x.txt").exists()
    result = cli(mp, "import", str(mp.path("later")), "--file-id", fid, "--name", "x.txt")
    assert result.returncode == 0, result.stderr
    assert mp.path("later", "x.txt").read_bytes() == b"late\n"
