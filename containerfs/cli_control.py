"""Command line: ``containerfs new`` and ``containerfs import``, the commands that act through
the daemon serving a mount (over its control channel, ``daemon/control.py``), never around
it, so that the mount shows the result at once and its caches stay right.

Options are checked before the daemon is asked; every failure is one line and exit 1.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from containerfs.config import CONTROL_TIMEOUT, MEMORY_LIMITS
from containerfs.daemon.control import (
    ImportFile,
    NewContainer,
    Request,
    call,
    check_file_id,
    check_file_name,
    parse_network,
    socket_path,
)
from containerfs.errors import ControlError

FSTYPE = "fuse.containerfs"
_ESCAPE = re.compile(r"\\([0-7]{3})")


def add_parsers(sub: argparse._SubParsersAction, *, default_state_dir: Callable[[], Path]) -> None:  # type: ignore[type-arg]
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
        help="minutes of inactivity before the container expires",
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
    for p in (new, imp):
        p.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help="the mount's --state-dir, if it was given one",
        )
        p.add_argument("--timeout", type=float, default=CONTROL_TIMEOUT, metavar="SECONDS")
        p.set_defaults(default_state_dir=default_state_dir)


def cmd_new(args: argparse.Namespace) -> int:
    request = NewContainer(
        name=args.name,
        file_ids=tuple(args.file_id),
        memory_limit=args.memory_limit,
        expires_after_minutes=_minutes(args.expires_after),
        network_policy=parse_network(args.network) if args.network is not None else None,
        skills=tuple(args.skill),
    )
    mountpoint, parts = find_mount(args.mountpoint)
    if parts:
        raise ControlError(f"{args.mountpoint} is inside a mount: give its mountpoint {mountpoint}")
    print(mountpoint / _ask(args, mountpoint, request))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    check_file_id(args.file_id)
    if args.name is not None:
        check_file_name(args.name)
    mountpoint, parts = find_mount(args.directory)
    request = ImportFile(directory=parts, file_id=args.file_id, name=args.name)
    print(mountpoint / _ask(args, mountpoint, request))
    return 0


def _minutes(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ControlError(f"bad expiry {text!r}: a positive number of minutes") from None
    if value < 1:
        raise ControlError(f"bad expiry {text!r}: a positive number of minutes")
    return value


def _ask(args: argparse.Namespace, mountpoint: Path, request: Request) -> str:
    from containerfs.daemon.mount import run_dir  # loads pyfuse3: only once it is needed

    state_dir = args.state_dir or args.default_state_dir()
    path = socket_path(run_dir(state_dir, mountpoint))
    if not path.exists():
        raise ControlError(
            f"no containerfs daemon answers for {mountpoint} here"
            " (mounted with another --state-dir, or by an older version?)"
        )
    if not args.timeout > 0:
        raise ControlError(f"bad timeout {args.timeout!r}: a positive number of seconds")
    return call(path, request, timeout=args.timeout)


def _mounts() -> Iterator[tuple[Path, str]]:
    """(mount point, filesystem type) of every mount this process sees."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            parts = fields.split()
            if len(parts) >= 5 and rest:
                point = _ESCAPE.sub(lambda m: chr(int(m[1], 8)), parts[4])
                yield Path(point), rest.split()[0]


def find_mount(path: Path) -> tuple[Path, tuple[str, ...]]:
    """The containerfs mountpoint ``path`` is on, and ``path``'s components below it."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as err:
        raise ControlError(f"{path}: {err.strerror or err}") from None
    best: tuple[Path, str] | None = None
    for point, fstype in _mounts():
        if (point == real or point in real.parents) and (
            best is None or len(point.parts) >= len(best[0].parts)
        ):
            best = (point, fstype)
    if best is None or best[1] != FSTYPE:
        raise ControlError(f"{path} is not on a containerfs mount")
    return best[0], real.relative_to(best[0]).parts
