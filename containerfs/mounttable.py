"""The system side of mounts, for the command line: the kernel's mount table, dead mounts,
the processes using a mount, the registry that finds a mount's daemon, and sd_notify.

Plain synchronous code over ``/proc`` and a small per-user directory of registry entries;
no FUSE, no HTTP. The daemon registers itself once mounted, so ``status`` and ``unmount``
find its run directory whatever ``--state-dir`` it was given.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

FSTYPE = "fuse.containerfs"


@dataclass(frozen=True)
class MountEntry:
    """One line of the kernel's mount table."""

    source: str
    mountpoint: str
    fstype: str


@dataclass(frozen=True)
class Registration:
    """Where a running daemon keeps its pid, log and status."""

    mountpoint: str
    run_dir: Path
    pid: int


@dataclass(frozen=True)
class BusyProcess:
    pid: int
    name: str


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts(table: Path = Path("/proc/mounts")) -> list[MountEntry]:
    try:
        lines = table.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            found.append(MountEntry(_unescape(parts[0]), _unescape(parts[1]), parts[2]))
    return found


def containerfs_mounts() -> list[MountEntry]:
    return [m for m in mounts() if m.fstype == FSTYPE]


def absolute(path: Path) -> str:
    """The mountpoint as the mount table spells it, without touching a (dead) mount itself.

    ``realpath`` would stat the last component, which fails with ENOTCONN on a dead mount;
    resolving the parent only is enough for the table's canonical paths.
    """
    path = Path(os.path.abspath(path))
    return os.path.join(os.path.realpath(path.parent), path.name) if path.name else str(path)


def find_mount(path: Path) -> MountEntry | None:
    """The topmost mount at ``path``, if there is one."""
    target = absolute(path)
    found = None
    for entry in mounts():
        if entry.mountpoint == target:
            found = entry  # later lines are mounted over earlier ones
    return found


def is_dead(path: Path) -> bool:
    """A FUSE mount whose daemon is gone answers every access with ENOTCONN."""
    try:
        # statfs always reaches the daemon; stat may be answered from cached attributes
        os.statvfs(path)
    except OSError as err:
        return err.errno == errno.ENOTCONN
    return False


def busy_processes(path: Path) -> list[BusyProcess]:
    """Processes whose working directory, root or an open file is inside the mount at ``path``.

    Only the links in /proc are read (never the mount itself), so this is safe on a dead
    or hung mount. Processes of other users that cannot be inspected are skipped.
    """
    top = absolute(path)
    prefix = top.rstrip("/") + "/"
    me = os.getpid()
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
            continue
        links = [pid_dir / "cwd", pid_dir / "root"]
        with contextlib.suppress(OSError):
            links += list((pid_dir / "fd").iterdir())
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target == top or target.startswith(prefix):
                try:
                    name = (pid_dir / "comm").read_text().strip()
                except OSError:
                    name = "?"
                found.append(BusyProcess(int(pid_dir.name), name))
                break
    return found


# -- the registry of running daemons ------------------------------------------------------


def registry_dir() -> Path:
    """Per user: $XDG_RUNTIME_DIR/containerfs, else /run/containerfs for root, else /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "containerfs"
    if os.getuid() == 0:
        return Path("/run/containerfs")
    return Path(f"/tmp/containerfs-{os.getuid()}")


def _entry_path(mountpoint: str) -> Path:
    return registry_dir() / (hashlib.sha256(mountpoint.encode()).hexdigest()[:16] + ".json")


def register(mountpoint: Path, run_dir: Path) -> None:
    """Best effort: a mount whose registration fails is still found with --state-dir."""
    target = absolute(mountpoint)
    entry = {"mountpoint": target, "run_dir": str(run_dir.resolve()), "pid": os.getpid()}
    with contextlib.suppress(OSError):
        directory = registry_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = directory / f".{os.getpid()}.tmp"
        tmp.write_text(json.dumps(entry))
        tmp.replace(_entry_path(target))


def unregister(mountpoint: Path) -> None:
    path = _entry_path(absolute(mountpoint))
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def forget(mountpoint: Path) -> None:
    """Drop a registration left by a daemon that died without unregistering."""
    with contextlib.suppress(OSError):
        _entry_path(absolute(mountpoint)).unlink()


def registration(mountpoint: Path) -> Registration | None:
    target = absolute(mountpoint)
    try:
        data = json.loads(_entry_path(target).read_text())
        found = Registration(str(data["mountpoint"]), Path(data["run_dir"]), int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if found.mountpoint == target else None


# -- systemd readiness ------------------------------------------------------------------


def sd_notify(message: str, *, environ: dict[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd's $NOTIFY_SOCKET; False if none.

    The protocol is one datagram on a unix socket; an address starting with ``@`` is in
    the abstract namespace.
    """
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
