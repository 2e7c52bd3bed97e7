"""``containerfs sync``: wait until a mount's uploads are on the server. Scripts run it after
every batch of writes, so it starts in the time Python takes: ``cli.main`` hands it the
command line before building the full parser, and it loads neither the daemon's layers nor
the mount's options (``cli``, the command line layer).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from containerfs import mounttable
from containerfs.cliargs import positive_duration
from containerfs.daemon.rundir import default_state_dir, run_dir
from containerfs.errors import CliError, ContainerFsError

SYNC_TIMEOUT = 3600.0  # seconds containerfs sync waits for the daemon's answer


def add_sync_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sync``."""
    sync = sub.add_parser(
        "sync",
        help="wait until every write (under PATH) is on the server",
        description="Wait until every upload of the mount, or of the files under PATH, is on "
        "the server (a --write-back mount uploads after close). Exits 1 naming what failed.",
    )
    sync.add_argument("mountpoint", type=Path, help="a containerfs mountpoint")
    sync.add_argument("path", type=Path, nargs="?", help="a file or directory in the mount")
    sync.add_argument("--state-dir", type=Path, default=None, help="as given to mount")
    sync.add_argument(
        "--timeout",
        type=positive_duration,
        default=SYNC_TIMEOUT,
        metavar="DURATION",
        help="how long to wait for the uploads (default 1h)",
    )
    sync.set_defaults(func=cmd_sync)


def main(argv: list[str]) -> int:
    """``containerfs sync ARGS``, parsed by a parser of this command alone."""
    parser = argparse.ArgumentParser(prog="containerfs")
    add_sync_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sync", *argv])
    return run_command(args.func, args)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command: a failure the user can cause is one line on stderr and its status."""
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except CliError as err:
        print(f"containerfs: {err}", file=sys.stderr)
        return err.status
    except ContainerFsError as err:
        print(f"containerfs: {err}", file=sys.stderr)
        return 1


def run_dir_of(mountpoint: Path, state_dir: Path | None) -> Path:
    """The daemon's run directory: its registration, else the one under the state dir."""
    found = mounttable.registration(mountpoint) if state_dir is None else None
    if found is not None:
        return found.run_dir
    return run_dir(state_dir or default_state_dir(), Path(mounttable.absolute(mountpoint)))


def cmd_sync(args: argparse.Namespace) -> int:
    from containerfs.daemon.control import SyncPath, call, socket_path

    mountpoint = Path(os.path.abspath(args.mountpoint))
    parts: tuple[str, ...] = ()
    if args.path is not None:
        rel = os.path.relpath(os.path.abspath(args.path), mountpoint)
        if rel == ".." or rel.startswith("../"):
            raise CliError(f"{args.path} is not inside the mount {args.mountpoint}", 2)
        parts = tuple(p for p in rel.split("/") if p not in ("", "."))
    sock = socket_path(run_dir_of(args.mountpoint, args.state_dir))
    if not sock.exists():
        raise CliError(f"no containerfs daemon serves {args.mountpoint}", 1)
    # waits as long as the uploads take; a failure is one line naming each failed file
    call(sock, SyncPath(parts), timeout=args.timeout)
    return 0
