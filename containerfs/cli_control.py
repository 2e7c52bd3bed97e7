"""Command line: ``containerfs new`` and ``containerfs import``, the commands that act through
the daemon serving a mount (over its control channel, ``daemon/control.py``), never around
it, so that the mount shows the result at once and its caches stay right.

Options are checked before the daemon is asked; every failure is one line and exit 1.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from containerfs import mounttable
from containerfs.cliargs import expiry_minutes, positive_duration
from containerfs.config import CONTROL_TIMEOUT, MEMORY_LIMITS
from containerfs.errors import ControlError

if TYPE_CHECKING:
    from containerfs.daemon.control import Request

RunDirFinder = Callable[[Path, Path | None], Path]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], *, find_run_dir: RunDirFinder
) -> None:
    """Add ``new`` and ``import``; ``find_run_dir(mountpoint, state_dir)`` is the daemon's
    run directory, found as ``status`` finds it."""
    for p in (_add_new(sub), _add_import(sub)):
        p.add_argument("--state-dir", type=Path, default=None, help="as given to mount")
        p.add_argument(
            "--timeout",
            default=None,
            metavar="DURATION",
            help=f"how long to wait for the daemon (default {CONTROL_TIMEOUT:.0f}s)",
        )
        p.set_defaults(find_run_dir=find_run_dir)


def _add_new(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    new = sub.add_parser(
        "new", help="create a container with options through the mount; print its directory"
    )
    new.add_argument("mountpoint", type=Path)
    new.add_argument("name")
    new.add_argument(
        "--file-id",
        action="append",
        default=[],
        metavar="ID",
        help="a Files-API file copied in at creation (repeatable)",
    )
    new.add_argument("--memory-limit", metavar="|".join(MEMORY_LIMITS))
    new.add_argument(
        "--expires-after",
        metavar="MINUTES",
        help="minutes of inactivity before the container expires (or 2h)",
    )
    new.add_argument("--network", metavar="disabled|allow:DOMAIN,DOMAIN")
    new.add_argument(
        "--skill",
        action="append",
        default=[],
        metavar="ID",
        help="a skill referenced by id (repeatable)",
    )
    new.set_defaults(func=cmd_new)
    return new


def _add_import(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    imp = sub.add_parser(
        "import", help="copy a Files-API file into a container directory; print its path"
    )
    imp.add_argument("directory", type=Path)
    imp.add_argument("--file-id", required=True, metavar="ID")
    imp.add_argument(
        "--name",
        default=None,
        help="the file's name (default: its Files-API filename, one more API call)",
    )
    imp.set_defaults(func=cmd_import)
    return imp


# the control module (and trio with it) loads only when one of these commands runs: every
# other command, `status` included, starts faster without it


def cmd_new(args: argparse.Namespace) -> int:
    from containerfs.daemon.control import NewContainer, parse_network

    request = NewContainer(
        name=args.name,
        file_ids=tuple(args.file_id),
        memory_limit=args.memory_limit,
        expires_after_minutes=_minutes(args.expires_after),
        network_policy=parse_network(args.network) if args.network is not None else None,
        skills=tuple(args.skill),
    )
    _timeout(args.timeout)
    mountpoint, parts = find_mount(args.mountpoint)
    if parts:
        raise ControlError(f"{args.mountpoint} is inside a mount: give its mountpoint {mountpoint}")
    print(mountpoint / _ask(args, mountpoint, request))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from containerfs.daemon.control import ImportFile, check_file_id, check_file_name

    check_file_id(args.file_id)
    if args.name is not None:
        check_file_name(args.name)
    _timeout(args.timeout)
    mountpoint, parts = find_mount(args.directory)
    request = ImportFile(directory=parts, file_id=args.file_id, name=args.name)
    print(mountpoint / _ask(args, mountpoint, request))
    return 0


def _minutes(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return expiry_minutes(text)
    except argparse.ArgumentTypeError:
        raise ControlError(f"bad expiry {text!r}: a whole number of minutes (or 2h)") from None


def _timeout(text: str | None) -> float:
    if text is None:
        return CONTROL_TIMEOUT
    try:
        return positive_duration(text)
    except argparse.ArgumentTypeError as err:
        raise ControlError(f"bad timeout: {err}") from None


def _ask(args: argparse.Namespace, mountpoint: Path, request: Request) -> str:
    from containerfs.daemon.control import call, socket_path

    timeout = _timeout(args.timeout)
    path = socket_path(args.find_run_dir(mountpoint, args.state_dir))
    if not path.exists():
        raise ControlError(
            f"no containerfs daemon answers for {mountpoint}"
            " (mounted with another --state-dir, or by an older version?)"
        )
    return call(path, request, timeout=timeout)


def find_mount(path: Path) -> tuple[Path, tuple[str, ...]]:
    """The containerfs mountpoint ``path`` is on, and ``path``'s components below it."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as err:
        raise ControlError(f"{path}: {err.strerror or err}") from None
    best: mounttable.MountEntry | None = None
    for entry in mounttable.mounts():  # the innermost mount wins; later lines are on top
        point = Path(entry.mountpoint)
        if (point == real or point in real.parents) and (
            best is None or len(point.parts) >= len(Path(best.mountpoint).parts)
        ):
            best = entry
    if best is None or best.fstype != mounttable.FSTYPE:
        raise ControlError(f"{path} is not on a containerfs mount")
    return Path(best.mountpoint), real.relative_to(best.mountpoint).parts
