"""The tool matrix: editors and everyday tools on a real mount, checked on the server.

Each test works in a container of its own (made with ``mkdir`` at the mount's root), runs a
real tool, then checks what the server holds through the API: exactly the expected files with
the expected bytes, no leftovers, no duplicates, no temp, swap or backup files. The API calls a
save costs are counted by the emulator (``reset_stats`` before the tool, ``requests`` once the
server holds the result) and asserted: ``SEMANTICS.md`` quotes these numbers.

The whole matrix runs once per upload-path policy of the server: ``prefix`` (the real
service's ``/mnt/data/<32 hex>-<name>``) and ``keep`` (the requested path).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulator_proc import EmulatorProcess, start_emulator
from mount_proc import MountProcess, start_mount

pytestmark = pytest.mark.mount

ROOT = "/mnt/data/"
SERVER_PREFIX = re.compile(r"^[0-9a-f]{32}-")
DEADLINE = 15.0  # seconds to wait for the server or the mount to reach a state
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100


@dataclass
class Rig:
    """One emulator and one mount of it, shared by the tests of a policy."""

    emu: EmulatorProcess
    mount: MountProcess
    http: httpx.Client
    policy: str


@dataclass
class Box:
    """A fresh container for one test: its directory on the mount and its name."""

    rig: Rig
    name: str
    dir: Path

    @property
    def emu(self) -> EmulatorProcess:
        return self.rig.emu


@pytest.fixture(scope="module", params=["prefix", "keep"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    policy: str = request.param
    base = tmp_path_factory.mktemp(f"tools-{policy}")
    emu = start_emulator(base / "emulator", "--upload-paths", policy)
    try:
        mp = start_mount(emu, base, "--metadata-ttl", "1")
        try:
            http = httpx.Client(
                base_url=emu.base_url + "/", headers={"Authorization": "Bearer sk-test"}
            )
            with http:
                yield Rig(emu, mp, http, policy)
        finally:
            mp.unmount()
    finally:
        emu.stop()


@pytest.fixture
def box(rig: Rig, request: pytest.FixtureRequest) -> Box:
    name = f"{request.node.originalname[5:25]}-{uuid.uuid4().hex[:6]}"
    path = rig.mount.path(name)
    path.mkdir()
    return Box(rig, name, path)


# ---- helpers ------------------------------------------------------------------------------


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a tool; fail the test with its output if it fails."""
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def shell(script: str, cwd: Path) -> str:
    return run("bash", "-c", script, cwd=cwd)


def server_name(server_path: str) -> str:
    """A server path relative to the root, the server's upload prefix stripped."""
    assert server_path.startswith(ROOT), server_path
    head, _, base = server_path[len(ROOT) :].rpartition("/")
    base = SERVER_PREFIX.sub("", base)
    return f"{head}/{base}" if head else base


def expected_name(box: Box, rel: str) -> str:
    """What the server calls a file the mount shows at ``rel``: with the ``prefix`` policy
    (like the real service) every upload lands flat in the root, so only its base name."""
    return rel if box.rig.policy == "keep" else rel.rpartition("/")[2]


def server_files(box: Box) -> list[dict[str, Any]]:
    for container in box.emu.state()["containers"]:
        if container["name"] == box.name:
            files: list[dict[str, Any]] = container["files"]
            return files
    raise AssertionError(f"container {box.name} is not on the server")


def server_names(box: Box) -> list[str]:
    return sorted(server_name(f["path"]) for f in server_files(box))


def wait_until(predicate: Callable[[], bool], what: Callable[[], str]) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not reached in {DEADLINE} s: {what()}")
        time.sleep(0.02)


def mount_tree(box: Box) -> dict[str, bytes]:
    """Every file under the box on the mount: relative path -> content."""
    return {str(p.relative_to(box.dir)): p.read_bytes() for p in box.dir.rglob("*") if p.is_file()}


def on_server(
    box: Box, expected: dict[str, bytes], *, local: dict[str, bytes] | None = None
) -> dict[str, int]:
    """Wait until the server holds exactly ``expected`` (path on the mount -> bytes), no more
    and no fewer files; returns the API calls counted since the last ``reset_stats`` (or the
    last ``on_server``, which resets the counters after its own content downloads).

    The mount must show the same files plus the ``local`` (local-only) ones and nothing else:
    a temp file still there could be uploaded later, one that is gone never will be.
    """
    wanted = sorted(expected_name(box, rel) for rel in expected)
    wait_until(
        lambda: server_names(box) == wanted,
        lambda: f"server names {wanted}; the server has {server_names(box)}",
    )
    calls = box.emu.requests()
    assert mount_tree(box) == {**expected, **(local or {})}
    held = []
    for f in server_files(box):
        response = box.rig.http.get(f"containers/{f['container_id']}/files/{f['id']}/content")
        response.raise_for_status()
        held.append((server_name(f["path"]), response.content))
    assert sorted(held) == sorted((expected_name(box, r), data) for r, data in expected.items())
    box.emu.reset_stats()
    return calls


def writes(calls: dict[str, int]) -> tuple[int, int, int]:
    """(uploads, deletes, downloads) among counted API calls."""
    return calls.get("upload_file", 0), calls.get("delete_file", 0), calls.get("file_content", 0)


def seed(box: Box, files: dict[str, bytes]) -> None:
    """Write ``files`` through the mount and wait until they are on the server."""
    for rel, data in files.items():
        target = box.dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    on_server(box, files)


def renameat2(src: Path, dst: Path, flags: int) -> int:
    """``renameat2(2)`` through libc; returns 0 or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
    return 0 if result == 0 else ctypes.get_errno()


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(OSError) as info:
        fn()
    assert info.value.errno is not None
    return info.value.errno


NOTES = b"alpha\nbeta\ngamma\n"


# ---- in-place editing ------------------------------------------------------------------------


def test_sed_in_place_costs_one_upload_and_one_delete(box: Box) -> None:
    seed(box, {"notes.txt": NOTES})
    run("sed", "-i", "s/beta/BETA/", box.dir / "notes.txt")
    assert (box.dir / "notes.txt").read_bytes() == b"alpha\nBETA\ngamma\n"
    calls = on_server(box, {"notes.txt": b"alpha\nBETA\ngamma\n"})
    assert writes(calls) == (1, 1, 0)


def test_vim_substitute_and_write_keeps_the_swap_file_local(box: Box) -> None:
    seed(box, {"notes.txt": NOTES})
    run(
        "vim",
        "-u",
        "NONE",
        "-i",
        "NONE",
        "-es",
        "-c",
        "%s/gamma/GAMMA/",
        "-c",
        "wq",
        "notes.txt",
        cwd=box.dir,
    )
    assert (box.dir / "notes.txt").read_bytes() == b"alpha\nbeta\nGAMMA\n"
    calls = on_server(box, {"notes.txt": b"alpha\nbeta\nGAMMA\n"})
    assert writes(calls) == (1, 1, 0)
    assert sorted(os.listdir(box.dir)) == ["notes.txt"]


@pytest.mark.parametrize("backup", ["nobackup", "backup"])
def test_vim_with_swap_and_backup_files_uploads_only_the_file(box: Box, backup: str) -> None:
    seed(box, {"notes.txt": NOTES})
    # backupskip= : vim skips backups of anything under /tmp by default
    settings = f"set swapfile {backup} writebackup backupcopy=auto backupskip="
    run(
        "vim",
        "-N",
        "-u",
        "DEFAULTS",
        "-i",
        "NONE",
        "-es",
        "-c",
        settings,
        "-c",
        "%s/alpha/ALPHA/",
        "-c",
        "wq",
        "notes.txt",
        cwd=box.dir,
    )
    edited = b"ALPHA\nbeta\ngamma\n"
    kept = {"notes.txt~": NOTES} if backup == "backup" else {}  # on this machine only
    calls = on_server(box, {"notes.txt": edited}, local=kept)
    assert writes(calls) == (1, 1, 0)
    if kept:
        (box.dir / "notes.txt~").unlink()
        assert writes(on_server(box, {"notes.txt": edited})) == (0, 0, 0)


def test_emacs_batch_save_keeps_its_backup_and_lock_local(box: Box) -> None:
    seed(box, {"notes.txt": NOTES})
    run(
        "emacs",
        "--batch",
        "-Q",
        # emacs makes no backups of files under /tmp by default
        "--eval",
        "(setq backup-enable-predicate (lambda (_) t))",
        "notes.txt",
        "--eval",
        '(progn (goto-char (point-max)) (insert "delta\\n") (save-buffer))',
        cwd=box.dir,
    )
    edited = NOTES + b"delta\n"
    calls = on_server(box, {"notes.txt": edited}, local={"notes.txt~": NOTES})
    assert writes(calls) == (1, 1, 0)


def test_python_mkstemp_and_replace_costs_one_upload_and_one_delete(box: Box) -> None:
    seed(box, {"data.json": b"{}\n"})
    fd, tmp = tempfile.mkstemp(dir=box.dir)
    with os.fdopen(fd, "wb") as f:
        f.write(b'{"saved": true}\n')
    os.replace(tmp, box.dir / "data.json")
    assert sorted(os.listdir(box.dir)) == ["data.json"]
    assert stat.S_IMODE((box.dir / "data.json").stat().st_mode) == 0o600  # mkstemp's mode
    calls = on_server(box, {"data.json": b'{"saved": true}\n'})
    assert writes(calls) == (1, 1, 0)


# ---- moving --------------------------------------------------------------------------------


def test_mv_within_a_directory_uploads_under_the_new_name_then_deletes(box: Box) -> None:
    seed(box, {"a.txt": b"A"})
    run("mv", box.dir / "a.txt", box.dir / "b.txt")
    calls = on_server(box, {"b.txt": b"A"})
    assert writes(calls) == (1, 1, 0)


def test_mv_over_an_existing_file_replaces_it(box: Box) -> None:
    seed(box, {"a.txt": b"A", "b.txt": b"B"})
    run("mv", box.dir / "a.txt", box.dir / "b.txt")
    assert (box.dir / "b.txt").read_bytes() == b"A"
    calls = on_server(box, {"b.txt": b"A"})
    assert writes(calls) == (1, 2, 0)


def test_mv_across_directories_moves_the_file(box: Box) -> None:
    seed(box, {"in/a.txt": b"A"})
    (box.dir / "out").mkdir()
    run("mv", box.dir / "in" / "a.txt", box.dir / "out" / "a.txt")
    calls = on_server(box, {"out/a.txt": b"A"})
    assert writes(calls) == (1, 1, 0)
    assert sorted(os.listdir(box.dir / "out")) == ["a.txt"]
    assert os.listdir(box.dir / "in") == []


def test_mv_across_containers_copies_then_deletes(box: Box) -> None:
    seed(box, {"a.txt": b"A"})
    other = Box(box.rig, box.name + "-b", box.rig.mount.path(box.name + "-b"))
    other.dir.mkdir()
    run("mv", box.dir / "a.txt", other.dir / "a.txt")
    assert writes(on_server(other, {"a.txt": b"A"})) == (1, 1, 0)
    on_server(box, {})


def test_mv_of_a_directory_moves_everything_under_it(box: Box) -> None:
    seed(box, {"d/a.txt": b"A", "d/sub/b.txt": b"B"})
    run("mv", box.dir / "d", box.dir / "e")
    calls = on_server(box, {"e/a.txt": b"A", "e/sub/b.txt": b"B"})
    assert writes(calls) == (2, 2, 0)
    assert sorted(os.listdir(box.dir)) == ["e"]
    assert (box.dir / "e" / "sub" / "b.txt").read_bytes() == b"B"


def test_mv_of_a_directory_to_another_container_moves_its_files_there(box: Box) -> None:
    seed(box, {"d/a.txt": b"A", "d/sub/b.txt": b"B"})
    other = Box(box.rig, box.name + "-b", box.rig.mount.path(box.name + "-b"))
    other.dir.mkdir()
    run("mv", box.dir / "d", other.dir / "d")
    assert writes(on_server(other, {"d/a.txt": b"A", "d/sub/b.txt": b"B"})) == (2, 2, 0)
    on_server(box, {})


def test_rename_noreplace_onto_an_existing_file_refuses(box: Box) -> None:
    seed(box, {"a.txt": b"A", "b.txt": b"B"})
    assert renameat2(box.dir / "a.txt", box.dir / "b.txt", RENAME_NOREPLACE) == errno.EEXIST
    subprocess.run(["mv", "-n", box.dir / "a.txt", box.dir / "b.txt"], check=False)
    assert (box.dir / "a.txt").read_bytes() == b"A"
    assert (box.dir / "b.txt").read_bytes() == b"B"
    calls = on_server(box, {"a.txt": b"A", "b.txt": b"B"})
    assert writes(calls) == (0, 0, 0)


def test_rename_exchange_is_refused_with_einval(box: Box) -> None:
    seed(box, {"a.txt": b"A", "b.txt": b"B"})
    assert renameat2(box.dir / "a.txt", box.dir / "b.txt", RENAME_EXCHANGE) == errno.EINVAL
    assert writes(on_server(box, {"a.txt": b"A", "b.txt": b"B"})) == (0, 0, 0)


# ---- copying -------------------------------------------------------------------------------


def test_cp_p_keeps_mode_and_mtime_and_a_directory_keeps_its_own(box: Box, tmp_path: Path) -> None:
    (box.dir / "d").mkdir()
    dir_mtime = (box.dir / "d").stat().st_mtime_ns
    source = tmp_path / "report.txt"
    source.write_bytes(b"report\n")
    source.chmod(0o640)
    os.utime(source, ns=(1_500_000_000_000_000_000, 1_500_000_000_123_456_789))
    box.emu.reset_stats()
    run("cp", "-p", source, box.dir / "report.txt")
    st = (box.dir / "report.txt").stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == 1_500_000_000_123_456_789
    calls = on_server(box, {"report.txt": b"report\n"})
    assert writes(calls) == (1, 0, 0)
    time.sleep(1.2)  # past the kernel's attribute timeout: the values come from the mount
    assert (box.dir / "report.txt").stat().st_mtime_ns == 1_500_000_000_123_456_789
    assert (box.dir / "d").stat().st_mtime_ns == dir_mtime  # not "now" at every stat


def test_rsync_of_a_tree_uploads_each_file_once_and_a_checksum_rerun_nothing(
    box: Box, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    expected: dict[str, bytes] = {}
    for i in range(20):
        rel = f"f{i:02d}.txt" if i < 10 else f"sub/s{i:02d}.txt"
        expected[rel] = f"file {i}\n".encode() * (i + 1)
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(expected[rel])
    box.emu.reset_stats()
    run("rsync", "-a", f"{tree}/", f"{box.dir}/")
    calls = on_server(box, expected)
    assert writes(calls) == (20, 0, 0)
    box.emu.reset_stats()
    changes = run("rsync", "-a", "--checksum", "--itemize-changes", f"{tree}/", f"{box.dir}/")
    assert changes == ""
    assert writes(on_server(box, expected)) == (0, 0, 0)


# ---- small changes -------------------------------------------------------------------------


def test_touch_creates_an_empty_file_on_the_server(box: Box) -> None:
    box.emu.reset_stats()
    run("touch", box.dir / "new")
    calls = on_server(box, {"new": b""})
    assert writes(calls) == (1, 0, 0)
    box.emu.reset_stats()
    run("touch", box.dir / "new")  # an existing file: times only, kept on this machine
    assert writes(on_server(box, {"new": b""})) == (0, 0, 0)


def test_echo_append_adds_to_the_end(box: Box) -> None:
    seed(box, {"log.txt": b"one\n"})
    shell("echo two >> log.txt", box.dir)
    calls = on_server(box, {"log.txt": b"one\ntwo\n"})
    assert writes(calls) == (1, 1, 0)


def test_truncate_shrinks_and_extends(box: Box) -> None:
    seed(box, {"t.bin": b"0123456789"})
    run("truncate", "-s", "4", box.dir / "t.bin")
    assert writes(on_server(box, {"t.bin": b"0123"})) == (1, 1, 0)
    box.emu.reset_stats()
    run("truncate", "-s", "6", box.dir / "t.bin")
    assert writes(on_server(box, {"t.bin": b"0123\0\0"})) == (1, 1, 0)
    assert (box.dir / "t.bin").read_bytes() == b"0123\0\0"


def test_redirect_overwrite_uploads_once_and_deletes_the_old_id_after(box: Box) -> None:
    seed(box, {"out.txt": b"old content\n"})
    (old,) = server_files(box)
    shell("echo new > out.txt", box.dir)
    gone = lambda: old["id"] not in {f["id"] for f in server_files(box)}  # noqa: E731
    wait_until(gone, lambda: "the old id deleted")
    log = [(r["route"], r["path"]) for r in box.emu.admin("GET", "/requests")["requests"]]
    calls = on_server(box, {"out.txt": b"new\n"})
    assert writes(calls) == (1, 1, 0)
    upload = next(i for i, (route, _) in enumerate(log) if route == "upload_file")
    delete = next(i for i, (route, path) in enumerate(log) if path.endswith(old["id"]))
    assert log[delete][0] == "delete_file" and upload < delete


def test_git_init_add_commit_leaves_a_clean_repository(box: Box) -> None:
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "gc.auto=0"]
    (box.dir / "repo").mkdir()
    repo = box.dir / "repo"
    (repo / "hello.txt").write_text("hello\n")
    box.emu.reset_stats()
    run(*git, "init", "-q", cwd=repo)
    run(*git, "add", "hello.txt", cwd=repo)
    run(*git, "commit", "-q", "-m", "first", cwd=repo)
    assert run(*git, "status", "--porcelain", cwd=repo) == ""
    assert run(*git, "log", "--format=%s", cwd=repo) == "first\n"
    local = {str(p.relative_to(box.dir)): p.read_bytes() for p in box.dir.rglob("*") if p.is_file()}
    assert not [n for n in local if n.endswith(".lock") or "tmp_obj" in n]
    calls = on_server(box, local)
    uploads, deletes, downloads = writes(calls)
    assert uploads <= len(local) + 8 and deletes <= 8, calls  # no upload of temp files
    assert downloads == 0
    assert run(*git, "fsck", "--no-progress", cwd=repo) == ""


# ---- what the API cannot do ------------------------------------------------------------------


def test_symlink_link_and_mknod_of_a_fifo_are_refused_and_the_mount_carries_on(
    box: Box,
) -> None:
    seed(box, {"a.txt": b"A"})
    assert errno_of(lambda: os.symlink("a.txt", box.dir / "s")) == errno.EPERM
    assert errno_of(lambda: os.link(box.dir / "a.txt", box.dir / "h")) == errno.EPERM
    assert errno_of(lambda: os.mkfifo(box.dir / "fifo")) == errno.EPERM
    (box.dir / "b.txt").write_bytes(b"B")
    assert sorted(os.listdir(box.dir)) == ["a.txt", "b.txt"]
    on_server(box, {"a.txt": b"A", "b.txt": b"B"})


def test_the_root_holds_only_containers_which_cannot_be_renamed(box: Box) -> None:
    root = box.rig.mount.mountpoint
    assert errno_of(lambda: (root / "file.txt").write_bytes(b"x")) == errno.EPERM
    assert errno_of(lambda: os.rename(box.dir, root / (box.name + "-renamed"))) == errno.EPERM


def test_rename_of_a_directory_over_a_non_empty_one_fails_with_enotempty(box: Box) -> None:
    seed(box, {"a/x.txt": b"x", "b/y.txt": b"y"})
    assert errno_of(lambda: os.rename(box.dir / "a", box.dir / "b")) == errno.ENOTEMPTY
    assert errno_of(lambda: os.rename(box.dir / "a/x.txt", box.dir / "b")) == errno.EISDIR
    assert errno_of(lambda: os.rename(box.dir / "a", box.dir / "b/y.txt")) == errno.ENOTDIR
    assert writes(on_server(box, {"a/x.txt": b"x", "b/y.txt": b"y"})) == (0, 0, 0)


def test_mknod_of_a_regular_file_creates_an_empty_file(box: Box) -> None:
    box.emu.reset_stats()
    os.mknod(box.dir / "empty", 0o600 | stat.S_IFREG)
    assert writes(on_server(box, {"empty": b""})) == (1, 0, 0)


def test_chown_to_another_user_is_refused_and_chmod_is_kept(box: Box) -> None:
    seed(box, {"a.txt": b"A"})
    path = box.dir / "a.txt"
    assert errno_of(lambda: os.chown(path, os.getuid() + 1, -1)) == errno.EPERM
    os.chown(path, os.getuid(), os.getgid())
    path.chmod(0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert writes(on_server(box, {"a.txt": b"A"})) == (0, 0, 0)


def test_xattrs_are_read_only(box: Box) -> None:
    seed(box, {"a.txt": b"A"})
    path = box.dir / "a.txt"
    (f,) = server_files(box)
    assert os.getxattr(path, "user.containerfs.id") == f["id"].encode()
    assert os.getxattr(path, "user.containerfs.state") == b"uploaded"
    assert "user.containerfs.path" in os.listxattr(path)
    assert errno_of(lambda: os.getxattr(path, "user.containerfs.nothing")) == errno.ENODATA
    assert errno_of(lambda: os.setxattr(path, "user.note", b"x")) == errno.EOPNOTSUPP
    assert errno_of(lambda: os.removexattr(path, "user.containerfs.id")) == errno.EOPNOTSUPP


def test_exclusive_create_of_an_existing_file_fails_with_eexist(box: Box) -> None:
    seed(box, {"a.txt": b"A"})
    path = box.dir / "a.txt"
    assert errno_of(lambda: os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) == errno.EEXIST
    assert writes(on_server(box, {"a.txt": b"A"})) == (0, 0, 0)


def test_mkdir_and_rmdir_inside_a_container_cost_no_api_call(box: Box) -> None:
    seed(box, {"full/a.txt": b"A"})
    (box.dir / "empty" / "deeper").mkdir(parents=True)
    assert errno_of(lambda: (box.dir / "empty").mkdir()) == errno.EEXIST
    assert errno_of(lambda: box.dir.mkdir()) == errno.EEXIST
    assert sorted(os.listdir(box.dir)) == ["empty", "full"]
    assert errno_of(lambda: (box.dir / "full").rmdir()) == errno.ENOTEMPTY
    assert errno_of(lambda: (box.dir / "full").unlink()) == errno.EISDIR
    assert errno_of(lambda: (box.dir / "full" / "a.txt").rmdir()) == errno.ENOTDIR
    fd = os.open(box.dir / "full", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # fsyncdir: nothing to do, and no error
    finally:
        os.close(fd)
    (box.dir / "empty" / "deeper").rmdir()
    (box.dir / "empty").rmdir()
    calls = on_server(box, {"full/a.txt": b"A"})
    assert writes(calls) == (0, 0, 0) and calls.get("create_container", 0) == 0


def test_rm_deletes_the_server_file_and_a_local_only_one_costs_nothing(box: Box) -> None:
    seed(box, {"a.txt": b"A"})
    (box.dir / ".a.txt.swp").write_bytes(b"swap")
    assert writes(on_server(box, {"a.txt": b"A"}, local={".a.txt.swp": b"swap"})) == (0, 0, 0)
    (box.dir / ".a.txt.swp").unlink()
    (box.dir / "a.txt").unlink()
    assert writes(on_server(box, {})) == (0, 1, 0)
    assert os.listdir(box.dir) == []


def test_a_local_only_file_renamed_to_a_normal_name_is_uploaded_then(box: Box) -> None:
    box.emu.reset_stats()
    (box.dir / "draft~").write_bytes(b"draft")
    assert writes(on_server(box, {}, local={"draft~": b"draft"})) == (0, 0, 0)
    os.rename(box.dir / "draft~", box.dir / "draft")
    assert writes(on_server(box, {"draft": b"draft"})) == (1, 0, 0)


def test_a_file_moved_to_a_backup_name_and_back_costs_nothing(box: Box) -> None:
    seed(box, {"f.txt": b"F"})
    os.rename(box.dir / "f.txt", box.dir / "f.txt~")
    # nothing took its place: the server keeps it under its old name, shown as the backup
    assert os.listdir(box.dir) == ["f.txt~"] and (box.dir / "f.txt~").read_bytes() == b"F"
    assert server_names(box) == ["f.txt"]
    os.rename(box.dir / "f.txt~", box.dir / "f.txt")
    assert os.listdir(box.dir) == ["f.txt"]
    assert writes(on_server(box, {"f.txt": b"F"})) == (0, 0, 0)


def test_a_partial_overwrite_keeps_the_rest_of_the_file(box: Box) -> None:
    seed(box, {"p.txt": b"0123456789"})
    with open(box.dir / "p.txt", "r+b") as f:
        f.seek(3)
        f.write(b"abc")
    assert writes(on_server(box, {"p.txt": b"012abc6789"})) == (1, 1, 0)


# ---- consistency ---------------------------------------------------------------------------


def test_a_reader_keeps_the_version_it_opened(box: Box) -> None:
    seed(box, {"v.txt": b"version one\n"})
    with open(box.dir / "v.txt", "rb") as reader:
        assert reader.read(8) == b"version "
        (box.dir / "v.txt").write_bytes(b"version two\n")
        assert reader.read() == b"one\n"
    assert (box.dir / "v.txt").read_bytes() == b"version two\n"
    assert writes(on_server(box, {"v.txt": b"version two\n"})) == (1, 1, 0)


def test_a_file_of_unknown_size_shows_its_size_and_maps_before_it_is_read(box: Box) -> None:
    (container,) = [c for c in box.emu.state()["containers"] if c["name"] == box.name]
    box.emu.add_file(container["id"], "/mnt/data/out.txt", "assistant output\n", report_bytes=False)
    path = box.dir / "out.txt"
    wait_until(path.exists, lambda: "the new file within the metadata TTL")
    assert path.stat().st_size == 17  # the listing gives no size: the content's headers do
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[:] == b"assistant output\n"
    assert path.read_bytes() == b"assistant output\n"


def test_fsync_reports_a_failed_upload_and_close_uploads_after_all(box: Box) -> None:
    box.emu.faults([{"route": "upload_file", "action": "error", "status": 413, "count": 1}])
    try:
        fd = os.open(box.dir / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"payload")
            assert errno_of(lambda: os.fsync(fd)) == errno.EFBIG
        finally:
            os.close(fd)
    finally:
        box.emu.clear_faults()
    on_server(box, {"big.bin": b"payload"})


def test_close_returns_once_the_upload_is_done(box: Box) -> None:
    box.emu.reset_stats()
    (box.dir / "c.txt").write_bytes(b"closed\n")
    assert server_names(box) == ["c.txt"]  # no waiting: close-to-open
    assert writes(on_server(box, {"c.txt": b"closed\n"})) == (1, 0, 0)


def test_fsync_uploads_before_close(box: Box) -> None:
    box.emu.reset_stats()
    fd = os.open(box.dir / "f.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"synced\n")
        os.fsync(fd)
        assert server_names(box) == ["f.txt"]  # fsync returned: the upload is done
    finally:
        os.close(fd)
    assert writes(on_server(box, {"f.txt": b"synced\n"})) == (1, 0, 0)


def test_concurrent_writers_never_mix_and_the_last_close_wins(box: Box) -> None:
    seed(box, {"c.bin": b"original"})
    path = box.dir / "c.bin"
    block = 4096
    for last in ("A", "B"):
        fa = os.open(path, os.O_WRONLY | os.O_TRUNC)
        fb = os.open(path, os.O_WRONLY | os.O_TRUNC)
        for i in range(32):  # interleaved: A writes every block, B every other one
            os.pwrite(fa, b"A" * block, i * block)
            if i % 2:
                os.pwrite(fb, b"B" * block, i * block)
        first, second = (fb, fa) if last == "A" else (fa, fb)
        os.close(first)
        os.close(second)
        expected = (
            b"A" * 32 * block
            if last == "A"
            else b"".join((b"B" if i % 2 else b"\0") * block for i in range(32))
        )
        assert path.read_bytes() == expected
        assert writes(on_server(box, {"c.bin": expected})) == (2, 2, 0)
        box.emu.reset_stats()


def test_concurrent_appenders_keep_the_appends_of_the_last_to_close(box: Box) -> None:
    seed(box, {"log.txt": b"start\n"})
    path = box.dir / "log.txt"
    fa = os.open(path, os.O_WRONLY | os.O_APPEND)
    fb = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fa, b"a1\n")
    os.write(fb, b"b1\n")
    os.write(fa, b"a2\n")
    os.close(fa)
    os.close(fb)
    assert writes(on_server(box, {"log.txt": b"start\nb1\n"})) == (2, 2, 0)


def test_flock_and_shared_mmap_work_on_this_machine(box: Box) -> None:
    seed(box, {"m.bin": b"0123456789"})
    with open(box.dir / "m.bin", "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with mmap.mmap(f.fileno(), 0) as m:
            assert m[:4] == b"0123"
            m[:4] = b"abcd"
            m.flush()
        fcntl.flock(f, fcntl.LOCK_UN)
    assert (box.dir / "m.bin").read_bytes() == b"abcd456789"
    assert writes(on_server(box, {"m.bin": b"abcd456789"})) == (1, 1, 0)


def test_statfs_reports_free_space(box: Box) -> None:
    st = os.statvfs(box.dir)
    assert st.f_bavail > 0 and st.f_namemax == 255
    assert shutil.disk_usage(box.dir).free > 0


# ---- options -------------------------------------------------------------------------------


def test_a_tool_temp_file_left_in_place_is_uploaded_after_its_grace_period(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--upload-paths", "keep")
    mp = mount_factory(emu)
    (mp.mountpoint / "box").mkdir()
    (mp.mountpoint / "box" / "tmpabcd1234").write_bytes(b"kept")  # Python's tempfile name
    box = Box(Rig(emu, mp, httpx.Client(), "keep"), "box", mp.mountpoint / "box")
    with box.rig.http:
        assert server_names(box) == []  # deferred: the grace period is 5 s
        wait_until(lambda: server_names(box) == ["tmpabcd1234"], lambda: "the deferred upload")


@pytest.mark.parametrize("patterns", ["", "*.tmp"])
def test_local_only_patterns_replace_the_defaults(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
    patterns: str,
) -> None:
    emu = emulator_factory("--upload-paths", "keep")
    mp = mount_factory(emu, "--local-only", patterns)
    top = mp.mountpoint / "box"
    top.mkdir()
    for name in ("a.tmp", "b~", ".c.swp"):
        (top / name).write_bytes(name.encode())
    uploaded = ["a.tmp", "b~", ".c.swp"] if patterns == "" else ["b~", ".c.swp"]
    box = Box(Rig(emu, mp, httpx.Client(), "keep"), "box", top)
    with box.rig.http:
        wait_until(lambda: server_names(box) == sorted(uploaded), lambda: f"{server_names(box)}")


def test_unmount_uploads_deferred_files_at_once_and_local_only_files_end_with_the_mount(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--upload-paths", "keep")
    mp = mount_factory(emu)
    top = mp.mountpoint / "box"
    top.mkdir()
    (top / "tmpabcd1234").write_bytes(b"deferred")
    (top / "notes~").write_bytes(b"local")
    assert mp.unmount(timeout=20) == 0  # well within the 5 s grace period
    assert os.listdir(mp.state_dir / "spool") == []  # nothing left behind
    box = Box(Rig(emu, mp, httpx.Client(), "keep"), "box", top)
    with box.rig.http:
        assert server_names(box) == ["tmpabcd1234"]
    again = mount_factory(emu, name="again", state_dir=mp.state_dir)
    assert os.listdir(again.mountpoint / "box") == ["tmpabcd1234"]
