"""End-to-end: a real kernel mount (daemon in a subprocess) against a live emulator.

Every test checks both what ordinary tools see through the mount and what the server holds
(through the API). Each mount is unmounted at teardown, also when the test fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulator_proc import EmulatorProcess
from mount_proc import MountProcess, mount_env

from containerfs.daemon.mount import run_dir

pytestmark = pytest.mark.mount

MountFactory = Callable[..., MountProcess]
EmulatorFactory = Callable[..., EmulatorProcess]

PNG = bytes.fromhex("89504e470d0a1a0a") + b"\0" * 62


class Api:
    """The emulator through its public API, as another client of the service would use it."""

    def __init__(self, emu: EmulatorProcess, key: str = "sk-test") -> None:
        self.emu = emu
        self.http = httpx.Client(
            base_url=emu.base_url + "/", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def close(self) -> None:
        self.http.close()

    def _ok(self, response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()

    def create_container(self, name: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(self.http.post("containers", json={"name": name, **body}))
        return result

    def containers(self) -> list[dict[str, Any]]:
        return self._all("containers")

    def upload(self, cid: str, name: str, data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(
            self.http.post(f"containers/{cid}/files", files={"file": (name, data)})
        )
        return result

    def files(self, cid: str) -> list[dict[str, Any]]:
        return self._all(f"containers/{cid}/files")

    def content(self, cid: str, fid: str) -> bytes:
        response = self.http.get(f"containers/{cid}/files/{fid}/content")
        response.raise_for_status()
        return response.content

    def contents_by_name(self, cid: str) -> dict[str, bytes]:
        """Basename (server prefix stripped) -> content of every file of a container."""
        out: dict[str, bytes] = {}
        for f in self.files(cid):
            base = os.path.basename(f["path"])
            name = base[33:] if len(base) > 33 and base[32] == "-" else base
            assert name not in out, f"two server files named {name}"
            out[name] = self.content(cid, f["id"])
        return out

    def _all(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, "order": "asc"}
            if after:
                params["after"] = after
            page = self._ok(self.http.get(url, params=params))
            items += page["data"]
            if not page["has_more"]:
                return items
            after = page["last_id"]


@pytest.fixture
def api(emulator: EmulatorProcess) -> Iterator[Api]:
    client = Api(emulator)
    yield client
    client.close()


@pytest.fixture
def api_factory() -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(emu: EmulatorProcess, key: str = "sk-test") -> Api:
        made.append(Api(emu, key))
        return made[-1]

    yield make
    for client in made:
        client.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=check, timeout=60
    )


def containerfs(
    *argv: str | Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "containerfs", *(str(a) for a in argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Relative path -> content (None for a directory) of a whole tree."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        for d in dirnames:
            out[str((base / d).relative_to(top))] = None
        for f in filenames:
            out[str((base / f).relative_to(top))] = (base / f).read_bytes()
    return out


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(OSError) as info:
        fn()
    assert info.value.errno is not None
    return info.value.errno


def wait_for(predicate: Callable[[], bool], *, deadline: float = 20.0) -> bool:
    """Poll until ``predicate()`` holds; False if it never did (the caller asserts)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture
def background_mounts(tmp_path: Path) -> Iterator[list[tuple[Path, Path]]]:
    """(mountpoint, state dir) of mounts made by ``containerfs mount`` without --foreground;
    whatever is left of them is unmounted and its daemon stopped at teardown."""
    made: list[tuple[Path, Path]] = []
    yield made
    for mountpoint, state_dir in made:
        pid_file = run_dir(state_dir, mountpoint) / "pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else 0
        for flags in ("-u", "-uz"):
            if os.path.ismount(mountpoint):
                run("fusermount3", flags, mountpoint, check=False)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# ---- reading ---------------------------------------------------------------------------


def test_ls_shows_containers_at_the_root_and_their_files_inside(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    first, second = unique("ls-a"), unique("ls-b")
    a = api.create_container(first)
    api.create_container(second)
    api.upload(a["id"], "data.csv", b"x,y\n1,2\n")
    emulator.add_file(a["id"], "/mnt/data/notes.txt", "n")
    mp = mount_factory(emulator)

    root = run("ls", "-1", mp.mountpoint).stdout.split()
    assert {first, second} <= set(root)
    assert run("ls", "-1", mp.path(first)).stdout.split() == ["data.csv", "notes.txt"]
    assert run("ls", "-1", mp.path(second)).stdout.split() == []


def test_cat_prints_the_server_content(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("cat")
    c = api.create_container(name)
    text = "".join(f"line {i}\n" for i in range(5000))
    api.upload(c["id"], "lines.txt", text.encode())
    mp = mount_factory(emulator)

    assert run("cat", mp.path(name, "lines.txt")).stdout == text


def test_cp_in_of_a_5_mib_file_lands_byte_for_byte_on_the_server(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory, tmp_path: Path
) -> None:
    name = unique("cp-in")
    c = api.create_container(name)
    data = random.randbytes(5 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    mp = mount_factory(emulator)

    run("cp", tmp_path / "big.bin", mp.path(name, "big.bin"))

    assert api.contents_by_name(c["id"]) == {"big.bin": data}
    assert mp.path(name, "big.bin").stat().st_size == len(data)


def test_cp_out_copies_the_server_content(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory, tmp_path: Path
) -> None:
    name = unique("cp-out")
    c = api.create_container(name)
    data = random.randbytes(1 << 20)
    api.upload(c["id"], "blob.bin", data)
    mp = mount_factory(emulator)

    run("cp", mp.path(name, "blob.bin"), tmp_path / "copy.bin")

    assert (tmp_path / "copy.bin").read_bytes() == data


def test_rm_deletes_the_file_on_the_server(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("rm")
    c = api.create_container(name)
    api.upload(c["id"], "doomed.txt", b"bye")
    api.upload(c["id"], "kept.txt", b"stay")
    mp = mount_factory(emulator)

    run("rm", mp.path(name, "doomed.txt"))

    assert set(api.contents_by_name(c["id"])) == {"kept.txt"}
    assert os.listdir(mp.path(name)) == ["kept.txt"]


def test_mkdir_and_rmdir_at_the_root_create_and_delete_containers(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("made")
    mp = mount_factory(emulator, "--container-expiry", "45", "--container-memory", "4g")

    run("mkdir", mp.path(name))
    made = [c for c in api.containers() if c["name"] == name]
    assert len(made) == 1
    assert made[0]["expires_after"]["minutes"] == 45
    assert made[0]["memory_limit"] == "4g"
    assert mp.path(name).is_dir()

    mp.path(name, "inside.txt").write_text("occupied")
    assert errno_of(lambda: os.rmdir(mp.path(name))) == errno.ENOTEMPTY
    assert [c["name"] for c in api.containers() if c["id"] == made[0]["id"]] == [name]

    os.unlink(mp.path(name, "inside.txt"))
    run("rmdir", mp.path(name))
    assert all(c["id"] != made[0]["id"] for c in api.containers())
    assert name not in os.listdir(mp.mountpoint)


def test_nested_assistant_outputs_read_whole_even_without_a_size(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("outputs")
    c = api.create_container(name)
    report = random.randbytes(300_000)  # several kernel reads
    emulator.add_file(c["id"], "/mnt/data/out/plots/chart.png", PNG)
    emulator.add_file(c["id"], "/mnt/data/out/report.bin", report, report_bytes=False)
    assert [f["bytes"] for f in api.files(c["id"]) if f["path"].endswith(".bin")] == [None]
    mp = mount_factory(emulator)

    assert sorted(os.listdir(mp.path(name, "out"))) == ["plots", "report.bin"]
    assert os.listdir(mp.path(name, "out", "plots")) == ["chart.png"]
    assert mp.path(name, "out", "plots", "chart.png").read_bytes() == PNG
    run("ls", "-l", mp.path(name, "out"))  # the kernel now holds the attributes it was given
    assert mp.path(name, "out", "report.bin").read_bytes() == report
    assert mp.path(name, "out", "report.bin").stat().st_size == len(report)


def test_a_file_added_through_the_api_appears_within_the_ttl(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("ttl")
    c = api.create_container(name)
    mp = mount_factory(emulator, "--metadata-ttl", "1")
    assert os.listdir(mp.path(name)) == []

    emulator.add_file(c["id"], "/mnt/data/later.txt", "arrived")

    assert wait_for(lambda: os.listdir(mp.path(name)) == ["later.txt"])
    assert mp.path(name, "later.txt").read_text() == "arrived"


# ---- writing trees ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["prefix", "keep"])
def test_cp_r_of_a_tree_keeps_its_structure_after_the_ttl_and_a_remount(
    policy: str,
    emulator_factory: EmulatorFactory,
    api_factory: Callable[..., Api],
    mount_factory: MountFactory,
    tmp_path: Path,
) -> None:
    emu = emulator_factory("--upload-paths", policy)
    api = api_factory(emu)
    c = api.create_container("trees")
    src = tmp_path / "tree"
    (src / "l1" / "l2").mkdir(parents=True)
    (src / "l1" / "empty").mkdir()
    (src / "top.txt").write_text("top")
    (src / "l1" / "mid.txt").write_text("mid")
    (src / "l1" / "l2" / "deep.bin").write_bytes(random.randbytes(70_000))
    (src / "l1" / "l2" / "top.txt").write_text("same name, other directory")
    expected = snapshot(src)
    state_dir = tmp_path / "state"
    mp = mount_factory(emu, "--metadata-ttl", "1", state_dir=state_dir)

    run("cp", "-r", src, mp.path("trees"))
    assert snapshot(mp.path("trees", "tree")) == expected

    listings = emu.requests()["list_files"]
    time.sleep(1.5)  # past the metadata TTL: the next look lists the container again
    assert snapshot(mp.path("trees", "tree")) == expected
    assert emu.requests()["list_files"] > listings

    mp.unmount()
    again = mount_factory(emu, state_dir=state_dir, name="again")
    assert snapshot(again.path("trees", "tree")) == expected
    uploaded = sorted(v for v in expected.values() if v is not None)
    assert sorted(api.content(c["id"], f["id"]) for f in api.files(c["id"])) == uploaded


# ---- metadata --------------------------------------------------------------------------


def test_xattrs_describe_files_and_containers(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("xattr")
    c = api.create_container(
        name, expires_after={"anchor": "last_active_at", "minutes": 33}, memory_limit="4g"
    )
    f = api.upload(c["id"], "doc.txt", b"words")
    mp = mount_factory(emulator)
    file_path, dir_path = mp.path(name, "doc.txt"), mp.path(name)

    file_attrs = {
        "user.containerfs.id": f["id"],
        "user.containerfs.path": f["path"],
        "user.containerfs.source": "user",
        "user.containerfs.created_at": str(f["created_at"]),
    }
    assert set(file_attrs) <= set(os.listxattr(file_path))
    assert {k: os.getxattr(file_path, k).decode() for k in file_attrs} == file_attrs
    container_attrs = {
        "user.containerfs.id": c["id"],
        "user.containerfs.status": "running",
        "user.containerfs.memory_limit": "4g",
        "user.containerfs.expires_after_minutes": "33",
    }
    assert set(container_attrs) <= set(os.listxattr(dir_path))
    assert {k: os.getxattr(dir_path, k).decode() for k in container_attrs} == container_attrs
    assert errno_of(lambda: os.getxattr(file_path, "user.containerfs.nope")) == errno.ENODATA


def test_statfs_answers_so_df_works(emulator: EmulatorProcess, mount_factory: MountFactory) -> None:
    mp = mount_factory(emulator)

    out = run("df", "-P", mp.mountpoint).stdout.splitlines()
    assert out[-1].split()[-1] == str(mp.mountpoint)
    st = os.statvfs(mp.mountpoint)
    assert st.f_namemax == 255
    assert st.f_blocks > 0 and st.f_bavail > 0


def test_names_over_255_bytes_are_refused_with_enametoolong(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("long")
    c = api.create_container(name)
    mp = mount_factory(emulator)
    long_name = "é" * 128  # 256 bytes

    assert errno_of(lambda: mp.path(name, long_name).write_text("x")) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.mkdir(mp.path(long_name))) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.stat(mp.path(name, long_name))) == errno.ENAMETOOLONG
    mp.path(name, "é" * 127 + "x").write_text("fits")  # 255 bytes
    assert api.contents_by_name(c["id"]) == {"é" * 127 + "x": b"fits"}


# ---- mount options ---------------------------------------------------------------------


def test_read_only_mount_refuses_every_change_and_serves_reads(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("ro")
    c = api.create_container(name)
    api.upload(c["id"], "keep.txt", b"read me")
    emulator.add_file(c["id"], "/mnt/data/sizeless.txt", "size unknown", report_bytes=False)
    mp = mount_factory(emulator, "--read-only")
    target = mp.path(name, "keep.txt")

    assert target.read_bytes() == b"read me"
    run("ls", "-l", mp.path(name))
    assert mp.path(name, "sizeless.txt").read_bytes() == b"size unknown"
    assert mp.path(name, "sizeless.txt").stat().st_size == len(b"size unknown")
    assert errno_of(lambda: mp.path(name, "new.txt").write_text("x")) == errno.EROFS
    assert errno_of(lambda: target.write_text("x")) == errno.EROFS
    assert errno_of(lambda: os.unlink(target)) == errno.EROFS
    assert errno_of(lambda: os.mkdir(mp.path(unique("ro-new")))) == errno.EROFS
    assert errno_of(lambda: os.rmdir(mp.path(name))) == errno.EROFS
    assert set(api.contents_by_name(c["id"])) == {"keep.txt", "sizeless.txt"}


def test_expired_containers_are_hidden_unless_shown_on_request(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("expired")
    c = api.create_container(name)
    api.upload(c["id"], "gone.txt", b"lost")
    emulator.expire(c["id"])

    hidden = mount_factory(emulator)
    assert name not in os.listdir(hidden.mountpoint)
    assert not hidden.path(c["id"]).exists()

    shown = mount_factory(emulator, "--show-expired", name="shown")
    assert name in os.listdir(shown.mountpoint)
    assert os.listdir(shown.path(name)) == []
    assert os.getxattr(shown.path(name), "user.containerfs.status") == b"expired"
    assert errno_of(lambda: shown.path(name, "x.txt").write_text("x")) == errno.EROFS


def test_containers_with_the_same_name_are_shown_with_their_ids(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("twin")
    one, two = api.create_container(name), api.create_container(name)
    api.upload(one["id"], "one.txt", b"1")
    mp = mount_factory(emulator)

    shown = {n for n in os.listdir(mp.mountpoint) if n.startswith(name)}
    assert shown == {f"{name}~{one['id']}", f"{name}~{two['id']}"}
    assert os.listdir(mp.path(f"{name}~{one['id']}")) == ["one.txt"]
    assert os.listdir(mp.path(f"{name}~{two['id']}")) == []


def test_a_container_id_resolves_by_lookup_though_not_listed(
    emulator: EmulatorProcess, api: Api, mount_factory: MountFactory
) -> None:
    name = unique("by-id")
    c = api.create_container(name)
    api.upload(c["id"], "inside.txt", b"found")
    mp = mount_factory(emulator)

    assert c["id"] not in os.listdir(mp.mountpoint)
    assert mp.path(c["id"]).is_dir()
    assert mp.path(c["id"], "inside.txt").read_bytes() == b"found"
    assert os.getxattr(mp.path(c["id"]), "user.containerfs.id").decode() == c["id"]


# ---- API economy -----------------------------------------------------------------------


def test_ls_l_of_250_files_costs_one_listing_per_page_and_nothing_within_the_ttl(
    emulator_factory: EmulatorFactory, api_factory: Callable[..., Api], mount_factory: MountFactory
) -> None:
    emu = emulator_factory()
    c = api_factory(emu).create_container("many")
    for i in range(250):
        emu.add_file(c["id"], f"/mnt/data/f{i:03}.txt", str(i))
    mp = mount_factory(emu, "--metadata-ttl", "600")
    emu.reset_stats()

    first = run("ls", "-l", mp.path("many")).stdout
    assert len(first.splitlines()) == 251  # "total" and 250 files
    assert {k: v for k, v in emu.requests().items() if v} == {"list_containers": 1, "list_files": 3}

    emu.reset_stats()
    assert run("ls", "-l", mp.path("many")).stdout == first
    assert {k: v for k, v in emu.requests().items() if v} == {}


# ---- failures --------------------------------------------------------------------------


def test_a_failed_upload_fails_close_stays_pending_and_is_uploaded_later(
    emulator_factory: EmulatorFactory,
    api_factory: Callable[..., Api],
    mount_factory: MountFactory,
    tmp_path: Path,
) -> None:
    emu = emulator_factory()
    api = api_factory(emu)
    c = api.create_container("flaky")
    data = random.randbytes(1 << 20)
    (tmp_path / "precious.bin").write_bytes(data)
    mp = mount_factory(emu)
    env = mount_env(emu)

    emu.faults([{"route": "upload_file", "action": "error", "status": 500, "count": 100}])
    try:
        copy = run("cp", tmp_path / "precious.bin", mp.path("flaky", "precious.bin"), check=False)
        assert copy.returncode != 0
        assert "Input/output error" in copy.stderr

        def listed_pending() -> bool:
            status = containerfs("status", mp.mountpoint, "--state-dir", mp.state_dir, env=env)
            return status.returncode == 0 and "precious.bin" in status.stdout

        assert wait_for(listed_pending)
        assert api.files(c["id"]) == []
    finally:
        emu.clear_faults()

    assert mp.unmount() == 0  # the retry loop or the unmount uploads it
    assert api.contents_by_name(c["id"]) == {"precious.bin": data}
    assert list((mp.state_dir / "spool").iterdir()) == []


def test_mount_with_a_wrong_key_fails_with_one_line_and_mounts_nothing(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    background_mounts: list[tuple[Path, Path]],
) -> None:
    emu = emulator_factory("--api-key", "right")
    mountpoint, state_dir = tmp_path / "mp", tmp_path / "state"
    mountpoint.mkdir()
    background_mounts.append((mountpoint, state_dir))

    result = containerfs(
        "mount",
        mountpoint,
        "--state-dir",
        state_dir,
        "--cache-dir",
        tmp_path / "cache",
        env=mount_env(emu, OPENAI_API_KEY="sk-not-the-right-one"),
    )

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("containerfs: ")
    assert "containerfs: containerfs:" not in result.stderr
    assert "credentials" in result.stderr and "Traceback" not in result.stderr
    assert "not-the-right-one" not in result.stderr  # the key is never printed
    assert result.stdout == ""
    assert not os.path.ismount(mountpoint)


def test_mount_of_an_unreachable_endpoint_fails_with_one_line_and_mounts_nothing(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    background_mounts: list[tuple[Path, Path]],
) -> None:
    emu = emulator_factory()
    mountpoint, state_dir = tmp_path / "mp", tmp_path / "state"
    mountpoint.mkdir()
    background_mounts.append((mountpoint, state_dir))
    env = mount_env(emu, OPENAI_BASE_URL=emu.base_url)
    emu.stop()  # its port now refuses connections

    result = containerfs(
        "mount", mountpoint, "--state-dir", state_dir, "--cache-dir", tmp_path / "cache", env=env
    )

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot reach" in result.stderr and "Traceback" not in result.stderr
    assert "containerfs: containerfs:" not in result.stderr
    assert not os.path.ismount(mountpoint)


def test_mount_on_a_missing_mountpoint_fails_with_one_line(
    emulator: EmulatorProcess, tmp_path: Path
) -> None:
    result = containerfs(
        "mount", tmp_path / "missing", "--state-dir", tmp_path / "state", env=mount_env(emulator)
    )

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("option", ["--state-dir", "--cache-dir"])
@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_mount_with_an_unusable_directory_fails_with_one_line(
    option: str, foreground: bool, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    (tmp_path / "mp").mkdir()
    (tmp_path / "a-file").write_text("not a directory")
    dirs = {"--state-dir": tmp_path / "state", "--cache-dir": tmp_path / "cache"}
    dirs[option] = tmp_path / "a-file" / "sub"
    argv = [a for item in dirs.items() for a in item]

    result = containerfs(
        "mount",
        tmp_path / "mp",
        *argv,
        *(["--foreground"] if foreground else []),
        env=mount_env(emulator),
    )

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "a-file/sub" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.ismount(tmp_path / "mp")


def test_unmount_command_unmounts_a_background_mount_after_its_uploads(
    emulator: EmulatorProcess,
    api: Api,
    tmp_path: Path,
    background_mounts: list[tuple[Path, Path]],
) -> None:
    name = unique("bg")
    c = api.create_container(name)
    mountpoint, state_dir = tmp_path / "mp", tmp_path / "state"
    mountpoint.mkdir()
    background_mounts.append((mountpoint, state_dir))
    env = mount_env(emulator)
    common = ("--state-dir", state_dir)

    mounted = containerfs("mount", mountpoint, *common, "--cache-dir", tmp_path / "c", env=env)
    assert mounted.returncode == 0, mounted.stderr
    assert os.path.ismount(mountpoint)
    pid = int((run_dir(state_dir, mountpoint) / "pid").read_text())
    (mountpoint / name / "note.txt").write_text("written before unmount")

    unmounted = containerfs("unmount", mountpoint, *common, env=env)

    assert unmounted.returncode == 0, unmounted.stderr
    assert not os.path.ismount(mountpoint)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert api.contents_by_name(c["id"]) == {"note.txt": b"written before unmount"}
