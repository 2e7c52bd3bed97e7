"""``containerfs unmount`` and ``containerfs status``: find a mount's daemon by its run
directory, stop it (saying what it still uploads) and read its typed status snapshot
(``cli``, the command line layer; ``sync`` is ``cli_sync``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from containerfs import mounttable
from containerfs.cli_sync import run_dir_of
from containerfs.cliargs import positive_duration
from containerfs.errors import CliError

if TYPE_CHECKING:
    from containerfs.daemon.status import Status


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``unmount`` and ``status``."""
    unmount = sub.add_parser("unmount", help="finish pending uploads, then unmount")
    unmount.add_argument("mountpoint", type=Path, help="a containerfs mountpoint")
    unmount.add_argument("--state-dir", type=Path, default=None, help="as given to mount")
    unmount.add_argument(
        "--timeout",
        type=positive_duration,
        default=120.0,
        metavar="DURATION",
        help="how long to wait for the daemon to finish (default 120s)",
    )
    unmount.add_argument(
        "--lazy",
        action="store_true",
        help="detach a busy mount now; it goes away once its users are done",
    )
    unmount.set_defaults(func=cmd_unmount)

    status = sub.add_parser("status", help="pending uploads, cache use, API calls")
    status.add_argument(
        "mountpoint", type=Path, nargs="?", help="a containerfs mountpoint (default: every one)"
    )
    status.add_argument("--state-dir", type=Path, default=None, help="as given to mount")
    status.add_argument("--json", action="store_true", help="the full status as JSON")
    status.set_defaults(func=cmd_status)


def _read_status(rdir: Path) -> Status | None:
    from containerfs.daemon.status import Status
    from containerfs.errors import StatusError

    try:
        return Status.from_json((rdir / "status.json").read_text())
    except (OSError, StatusError):  # none yet, or written by another version: no daemon
        return None


def _daemon_pid(rdir: Path) -> int:
    try:
        return int((rdir / "pid").read_text())
    except (OSError, ValueError):
        return 0


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid: int) -> bool:
    if pid <= 0 or not _exists(pid):
        return False
    # a daemon that has exited but is not yet reaped by its parent is done too
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _refuse_busy(mountpoint: Path) -> None:
    busy = mounttable.busy_processes(mountpoint)
    if busy:
        names = ", ".join(f"{b.name} (pid {b.pid})" for b in busy[:8])
        more = f" and {len(busy) - 8} more" if len(busy) > 8 else ""
        raise CliError(
            f"{mountpoint} is busy, used by {names}{more}: leave it and close its files,"
            " or detach it now with --lazy"
        )


def cmd_unmount(args: argparse.Namespace) -> int:
    mp = args.mountpoint
    entry = mounttable.find_mount(mp)
    rdir = run_dir_of(mp, args.state_dir)
    pid = _daemon_pid(rdir)
    if entry is None and not _alive(pid):
        raise CliError(f"{mp} is not mounted")
    if not args.lazy:
        _refuse_busy(mp)
    if _alive(pid):
        return _stop_daemon(args, pid, rdir)
    # no daemon: a mount whose daemon died (ENOTCONN) or one this user cannot signal
    tool = shutil.which("fusermount3") or "fusermount3"
    flags = "-uz" if args.lazy else "-u"
    result = subprocess.run([tool, flags, str(mp)], capture_output=True, text=True)
    if result.returncode:
        raise CliError(result.stderr.strip() or f"fusermount3 failed ({result.returncode})")
    mounttable.forget(mp)
    return 0


def _stop_daemon(args: argparse.Namespace, pid: int, rdir: Path) -> int:
    """SIGTERM: the daemon uploads what is pending, then unmounts; say what it waits for."""
    from containerfs.clistatus import WaitReport

    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    report = WaitReport()
    while _alive(pid) and time.monotonic() < deadline:
        for line in report.lines(_read_status(rdir), time.monotonic()):
            # a heading says who speaks; the items under it are indented
            print(line if line.startswith(" ") else f"containerfs: {line}", file=sys.stderr)
        sys.stderr.flush()
        time.sleep(0.1)
    if _alive(pid):
        raise CliError(f"the daemon (pid {pid}) did not finish within {args.timeout:.0f} s")
    # an exited daemon is reaped by its parent (init for a background mount) in a moment;
    # one whose parent is busy elsewhere (a test, a supervisor) may stay a zombie for long
    reaped = time.monotonic() + 2
    while time.monotonic() < reaped and _exists(pid):
        time.sleep(0.02)
    status = _read_status(rdir)
    left = len(status.pending) if status else 0
    if left:
        raise CliError(f"unmounted with {left} upload(s) pending; the next mount resumes them", 3)
    return 0


def _status_of(mountpoint: Path, state_dir: Path | None) -> tuple[Status | None, str]:
    """The daemon's status snapshot, or None and why there is none."""
    entry = mounttable.find_mount(mountpoint)
    if entry is not None and mounttable.is_dead(mountpoint):
        return None, f"{mountpoint}: the daemon has died; clear it with: containerfs unmount"
    status = _read_status(run_dir_of(mountpoint, state_dir))
    if status is None or not _alive(status.pid):
        return None, f"no containerfs daemon serves {mountpoint}"
    return status, ""


def cmd_status(args: argparse.Namespace) -> int:
    from containerfs.clistatus import status_text

    if args.mountpoint is not None:
        status, why = _status_of(args.mountpoint, args.state_dir)
        if status is None:
            raise CliError(why)
        print(status.to_json() if args.json else status_text(status))
        return 0
    found = [Path(m.mountpoint) for m in mounttable.containerfs_mounts()]
    results = [(mp, *_status_of(mp, args.state_dir)) for mp in found]
    if args.json:
        listing = [
            json.loads(s.to_json()) if s is not None else {"mountpoint": str(mp), "error": why}
            for mp, s, why in results
        ]
        print(json.dumps(listing, indent=1))
        return 0
    if not results:
        print("no containerfs mounts")
    texts = [status_text(s) if s is not None else why for _, s, why in results]
    print("\n\n".join(texts))
    return 0
