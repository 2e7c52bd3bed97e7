"""Operating a mount: the command line around it, tried against real mounts of the emulator.

Covers what a new user meets in the first hour (version, durations, one-line errors that name
their cause, dead, busy and non-empty mountpoints, status found from the mount table) and
boot-time mounts (mount.fuse's calling convention, fstab options, a key file, sd_notify).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from emulator_proc import EmulatorProcess
from mount_proc import MountProcess, mount_env

from containerfs import __version__

pytestmark = pytest.mark.mount

CLI = [sys.executable, "-m", "containerfs"]
HELPER = Path("/sbin/mount.fuse.containerfs")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one ``containerfs:`` line on stderr and no traceback."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("containerfs: ")
    return lines[0]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def in_mount_table(path: Path) -> bool:
    with open("/proc/mounts") as table:
        return any(line.split()[1] == str(path) for line in table)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A mountpoint with state and cache directories; whatever gets mounted there is unmounted."""
    paths = {"mnt": tmp_path / "mnt", "state": tmp_path / "state", "cache": tmp_path / "cache"}
    paths["mnt"].mkdir()
    yield paths
    for flags in ("-u", "-uz"):
        if in_mount_table(paths["mnt"]):
            subprocess.run(["fusermount3", flags, str(paths["mnt"])], capture_output=True)


def dir_args(d: dict[str, Path]) -> list[str]:
    return ["--state-dir", str(d["state"]), "--cache-dir", str(d["cache"])]


def test_version_names_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"containerfs {__version__}"


def test_every_mount_option_has_help_and_the_epilog_names_the_environment() -> None:
    text = run_cli("mount", "--help", env={**os.environ, "COLUMNS": "100"}).stdout
    for needle in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "XDG_STATE_HOME", "log", "10s"):
        assert needle in text.split("environment:")[1]
    options = text.split("options:")[1].split("environment:")[0]
    entries: list[str] = []
    for line in options.splitlines():
        if line.startswith("  -"):
            entries.append(line)
        elif entries and line.strip():
            entries[-1] += "\n" + line
    assert len(entries) > 20
    for entry in entries:
        flags_and_help = re.split(r"\s{2,}", entry.strip(), maxsplit=1)
        assert len(flags_and_help) == 2, f"no help text: {entry!r}"


def test_durations_are_accepted_as_options_and_as_dash_o(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(
        emu, "--metadata-ttl", "5s", "--drain-timeout", "1m", "-o", "negative_ttl=500ms"
    )
    assert sorted(p.name for p in mp.mountpoint.iterdir()) == ["analysis", "scratch"]
    bad = run_cli("mount", str(mp.mountpoint), "--metadata-ttl", "5 fortnights")
    assert bad.returncode == 2 and "not a duration" in bad.stderr and "Traceback" not in bad.stderr


def test_owner_and_modes_from_options_and_dash_o(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu, "--uid", "1234", "-o", "gid=4321,file_mode=0600,dir_mode=0750")
    d = mp.path("analysis").stat()
    f = mp.path("analysis", "data.csv").stat()
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (1234, 4321, 0o750)
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1234, 4321, 0o600)


def test_a_dead_mount_is_explained_by_mount_and_cleared_by_unmount(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu)
    mp.proc.send_signal(signal.SIGKILL)
    mp.proc.wait(timeout=10)
    with pytest.raises(OSError) as dead:
        os.statvfs(mp.mountpoint)
    assert dead.value.errno == errno.ENOTCONN

    again = run_cli("mount", str(mp.mountpoint), env=mount_env(emu))
    line = one_line_error(again)
    assert "daemon has died" in line and f"containerfs unmount {mp.mountpoint}" in line

    # no --state-dir: the mount is found in the mount table
    cleared = run_cli("unmount", str(mp.mountpoint))
    assert cleared.returncode == 0, cleared.stderr
    assert not in_mount_table(mp.mountpoint)
    assert mp.mountpoint.is_dir()


def test_a_busy_mount_is_not_detached_without_lazy_and_the_users_are_named(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu)
    user = subprocess.Popen(["sleep", "120"], cwd=mp.path("analysis"))
    try:
        refused = run_cli("unmount", str(mp.mountpoint))
        line = one_line_error(refused)
        assert f"sleep (pid {user.pid})" in line and "--lazy" in line
        assert in_mount_table(mp.mountpoint) and mp.proc.poll() is None

        lazy = run_cli("unmount", str(mp.mountpoint), "--lazy")
        assert lazy.returncode == 0, lazy.stderr
        assert not in_mount_table(mp.mountpoint)
        assert mp.proc.wait(timeout=30) == 0
    finally:
        user.kill()
        user.wait()


def test_unmount_without_users_finishes_the_daemon(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu)
    mp.path("scratch", "note.txt").write_text("kept")
    done = run_cli("unmount", str(mp.mountpoint))
    assert done.returncode == 0, done.stderr
    assert mp.proc.wait(timeout=30) == 0
    assert not in_mount_table(mp.mountpoint)


def test_unmount_says_which_uploads_it_is_waiting_for(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu, "--drain-timeout", "3s")
    emu.faults([{"route": "upload_file", "action": "error", "status": 500, "count": None}])
    with pytest.raises(OSError), open(mp.path("scratch", "stuck.txt"), "w") as f:
        f.write("not uploaded yet")
    result = run_cli("unmount", str(mp.mountpoint))
    assert result.returncode == 3
    assert "waiting for 1 pending upload(s)" in result.stderr
    assert "stuck.txt" in result.stderr
    assert "the next mount resumes them" in result.stderr.splitlines()[-1]


def test_a_non_empty_mountpoint_is_refused_unless_allowed(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
    tmp_path: Path,
) -> None:
    emu = emulator_factory("--seed", "demo")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "precious.txt").write_text("mine")
    refused = run_cli(
        "mount",
        str(mnt),
        *dir_args({"state": tmp_path / "s", "cache": tmp_path / "c"}),
        env=mount_env(emu),
    )
    line = one_line_error(refused)
    assert "not empty" in line and "--allow-non-empty" in line
    assert not in_mount_table(mnt)

    mp = mount_factory(emu, "--allow-non-empty")
    assert sorted(p.name for p in mp.mountpoint.iterdir()) == ["analysis", "scratch"]
    mp.unmount()
    assert (mnt / "precious.txt").read_text() == "mine"


def test_an_unknown_dash_o_option_fails_with_libfuse_reason_and_the_log_path(
    emulator: EmulatorProcess, dirs: dict[str, Path]
) -> None:
    result = run_cli(
        "mount", str(dirs["mnt"]), *dir_args(dirs), "-o", "no_such_option", env=mount_env(emulator)
    )
    line = one_line_error(result)
    assert "unknown option" in line and "no_such_option" in line
    assert line.count("cannot mount") == 1
    log = line.rsplit("(log: ", 1)[1].rstrip(")")
    assert Path(log).is_file() and "no_such_option" in Path(log).read_text()
    assert not in_mount_table(dirs["mnt"])


def test_a_base_url_without_v1_suggests_it(
    emulator: EmulatorProcess, dirs: dict[str, Path]
) -> None:
    env = mount_env(emulator, OPENAI_BASE_URL=emulator.root_url)
    line = one_line_error(run_cli("mount", str(dirs["mnt"]), *dir_args(dirs), env=env))
    assert "404" in line and f"did you mean {emulator.root_url}/v1" in line


def test_log_file_records_uploads_and_downloads_with_size_and_time(
    emulator_factory: Callable[..., EmulatorProcess], dirs: dict[str, Path], tmp_path: Path
) -> None:
    emu = emulator_factory("--seed", "demo")
    log = tmp_path / "containerfs.log"
    args = [
        "mount",
        str(dirs["mnt"]),
        *dir_args(dirs),
        "--log-file",
        str(log),
        "-o",
        "log_level=info",
    ]
    started = run_cli(*args, env=mount_env(emu))
    assert started.returncode == 0, started.stderr
    try:
        data = (dirs["mnt"] / "analysis" / "data.csv").read_bytes()
        (dirs["mnt"] / "scratch" / "up.bin").write_bytes(b"x" * 5000)
    finally:
        assert run_cli("unmount", str(dirs["mnt"])).returncode == 0
    text = log.read_text()
    assert f"({len(data)} bytes) in " in text and "downloaded" in text
    assert "uploaded 'up.bin' (5000 bytes) in " in text


def test_status_finds_every_mount_without_state_dir_and_shows_the_cache(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    first = mount_factory(emu, name="one")
    second = mount_factory(emu, name="two")
    assert first.path("analysis", "data.csv").read_text().startswith("city,")

    def cached() -> bool:
        result = run_cli("status", str(first.mountpoint), "--json")
        return result.returncode == 0 and json.loads(result.stdout)["cache"]["cache_bytes_used"] > 0

    wait_for(cached, "the status snapshot to show the cached file")
    text = run_cli("status", str(first.mountpoint))
    assert text.returncode == 0, text.stderr
    [cache_line] = [line for line in text.stdout.splitlines() if line.startswith("cache ")]
    assert cache_line.split()[1:3] != ["0", "B"], cache_line

    everything = run_cli("status", "--json")
    assert everything.returncode == 0, everything.stderr
    listed = {s["mountpoint"]: s for s in json.loads(everything.stdout)}
    for mp in (first, second):
        assert listed[str(mp.mountpoint)]["pid"] == mp.proc.pid
    plain = run_cli("status")
    assert str(first.mountpoint) in plain.stdout and str(second.mountpoint) in plain.stdout


def test_readiness_is_notified_once_the_mount_is_up(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
    tmp_path: Path,
) -> None:
    emu = emulator_factory("--seed", "demo")
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        mp = mount_factory(emu, env=mount_env(emu, NOTIFY_SOCKET=address))
        message = sock.recv(4096).decode()
        assert in_mount_table(mp.mountpoint)
        fields = dict(line.split("=", 1) for line in message.splitlines())
        assert fields["READY"] == "1" and fields["MAINPID"] == str(mp.proc.pid)
        mp.unmount()
        assert sock.recv(4096).decode() == "STOPPING=1"


def test_a_key_file_readable_by_others_is_refused(
    emulator: EmulatorProcess, dirs: dict[str, Path], tmp_path: Path
) -> None:
    key = tmp_path / "key"
    key.write_text("sk-test\n")
    key.chmod(0o644)
    env = mount_env(emulator)
    del env["OPENAI_API_KEY"]
    line = one_line_error(
        run_cli("mount", str(dirs["mnt"]), *dir_args(dirs), "--api-key-file", str(key), env=env)
    )
    assert "open to group or others" in line and "chmod 600" in line


def _fstab_options(emu: EmulatorProcess, d: dict[str, Path], key: Path) -> str:
    return (
        f"base_url={emu.base_url},api_key_file={key},state_dir={d['state']},"
        f"cache_dir={d['cache']},_netdev,nofail,defaults,x-systemd.automount"
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    key = tmp_path / "key"
    key.touch(mode=0o600)
    key.write_text("sk-test\n")
    return key


def _env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}


def test_mount_fuse_runs_the_program_found_on_path(
    emulator_factory: Callable[..., EmulatorProcess],
    dirs: dict[str, Path],
    key_file: Path,
    tmp_path: Path,
) -> None:
    """fstab's type ``fuse.containerfs``: mount.fuse3 runs ``containerfs SOURCE MNT -o …``."""
    helper = shutil.which("mount.fuse3")
    if helper is None:
        pytest.skip("mount.fuse3 is not installed")
    emu = emulator_factory("--seed", "demo")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "containerfs").symlink_to(Path(sys.executable).parent / "containerfs")
    env = {**_env_without_key(), "PATH": f"{bindir}:{os.environ['PATH']}"}
    result = subprocess.run(
        [
            helper,
            "containerfs",
            str(dirs["mnt"]),
            "-t",
            "containerfs",
            "-o",
            _fstab_options(emu, dirs, key_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dirs["mnt"].iterdir()) == ["analysis", "scratch"]
    assert run_cli("unmount", str(dirs["mnt"])).returncode == 0
    assert not in_mount_table(dirs["mnt"])


def test_mount_dash_t_fuse_containerfs_mounts_with_a_key_file(
    emulator_factory: Callable[..., EmulatorProcess],
    dirs: dict[str, Path],
    key_file: Path,
) -> None:
    """``mount -t fuse.containerfs`` runs the ``mount.fuse.containerfs`` helper (no PATH)."""
    if os.getuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8)")
    if HELPER.exists() or HELPER.is_symlink():
        pytest.skip(f"{HELPER} already exists; not replacing it")
    emu = emulator_factory("--seed", "demo")
    HELPER.symlink_to(Path(sys.executable).parent / "containerfs")
    try:
        result = subprocess.run(
            ["mount", "-t", "fuse.containerfs", "containerfs", str(dirs["mnt"]),
             "-o", _fstab_options(emu, dirs, key_file)],
            env=_env_without_key(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        with contextlib.suppress(OSError):
            HELPER.unlink()
    assert result.returncode == 0, result.stderr
    assert (dirs["mnt"] / "analysis" / "data.csv").read_text().startswith("city,")
    assert run_cli("unmount", str(dirs["mnt"])).returncode == 0
    assert not in_mount_table(dirs["mnt"])


def test_the_demo_prints_a_paste_ready_environment_for_a_second_shell(tmp_path: Path) -> None:
    mnt = tmp_path / "demo"
    demo = subprocess.Popen(
        [*CLI, "demo", str(mnt)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert demo.stdout is not None
        export = next(line for line in demo.stdout if line.strip().startswith("export "))
        env = dict(item.split("=", 1) for item in export.split()[1:])
        assert env["OPENAI_API_KEY"] == "sk-demo"
        bindir = env["PATH"].removesuffix(":$PATH")
        shell = {**os.environ, **env, "PATH": f"{bindir}:/usr/bin:/bin"}
        listed = subprocess.run(
            ["containerfs", "status", "--json"], env=shell, capture_output=True, text=True
        )
        assert listed.returncode == 0, listed.stderr
        [ours] = [s for s in json.loads(listed.stdout) if s["mountpoint"] == str(mnt)]
        assert ours["endpoint"] == env["OPENAI_BASE_URL"]
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
        if demo.stdout is not None:
            demo.stdout.close()
        for flags in ("-u", "-uz"):
            if in_mount_table(mnt):
                subprocess.run(["fusermount3", flags, str(mnt)], capture_output=True)
    assert not in_mount_table(mnt)


def test_the_demo_ends_on_sigterm_as_on_ctrl_c(tmp_path: Path) -> None:
    mnt = tmp_path / "demo"
    demo = subprocess.Popen(
        [*CLI, "demo", str(mnt)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert demo.stdout is not None
        next(line for line in demo.stdout if line.strip().startswith("export "))
        assert in_mount_table(mnt)
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
        # the demo's own cleanup unmounted it, not the teardown below
        assert not in_mount_table(mnt)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=10)
        if demo.stdout is not None:
            demo.stdout.close()
        for flags in ("-u", "-uz"):
            if in_mount_table(mnt):
                subprocess.run(["fusermount3", flags, str(mnt)], capture_output=True)
