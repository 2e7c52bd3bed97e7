"""Command line: ``containerfs mount|unmount|status|new|import|emulator|demo``; the
commands live in ``cli_mount`` (its options table in ``cli_options``), ``cli_admin``
(``unmount``, ``status``) and ``cli_control`` (``new`` and ``import``, which act through a
running mount).

Every failure the user can cause (bad mountpoint, wrong key, unreachable endpoint, bad
option) ends with one line on stderr and a non-zero exit: never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from containerfs import __version__, cli_sync
from containerfs.cliargs import COMMANDS, OptionError, expand_options, from_mount_helper
from containerfs.errors import CliError

__all__ = ["CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    # the commands' modules are loaded here, not with this one: `sync` goes without them
    from containerfs import cli_admin, cli_control
    from containerfs.cli_mount import cmd_mount
    from containerfs.cli_options import MOUNT_EPILOG, add_mount_arguments

    parser = argparse.ArgumentParser(
        prog="containerfs",
        description="Mount the containers of an OpenAI-compatible Containers API as a drive.",
        epilog="'containerfs COMMAND --help' describes each command and its options.",
    )
    parser.add_argument("--version", action="version", version=f"containerfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = sub.add_parser(
        "mount",
        help="mount the containers at MOUNTPOINT",
        description="Mount the containers at MOUNTPOINT; returns once mounted.",
        epilog=MOUNT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_mount_arguments(mount)
    mount.set_defaults(func=cmd_mount)
    cli_admin.add_parsers(sub)
    cli_control.add_parsers(sub, find_run_dir=cli_sync.run_dir_of)
    cli_sync.add_sync_parser(sub)

    # the emulator's own parser is built only when it runs: its server libraries are an
    # optional extra, and `mount` must not load them
    emu = sub.add_parser(
        "emulator", help="run a local emulator of the Containers API", add_help=False
    )
    emu.set_defaults(func=cmd_emulator)

    demo = sub.add_parser("demo", help="emulator with sample containers, mounted; Ctrl-C ends")
    demo.add_argument("mountpoint", type=Path, nargs="?", default=Path("mnt"), help="default ./mnt")
    demo.set_defaults(func=cmd_demo)
    return parser


EMULATOR_LIBRARIES = frozenset({"starlette", "uvicorn", "multipart", "python_multipart"})


def _emulator_cli() -> ModuleType:
    """The emulator's command line module, or a one-line CliError without the extra."""
    try:
        from containerfs.emulator import cli as emulator_cli
    except ImportError as err:
        if (err.name or "").split(".")[0] not in EMULATOR_LIBRARIES:
            raise
        raise CliError(
            f"the emulator needs {err.name}: pip install 'containerfs[emulator]'"
        ) from None
    return emulator_cli


def cmd_emulator(args: argparse.Namespace) -> int:
    emulator_cli = _emulator_cli()
    parser = argparse.ArgumentParser(
        prog="containerfs emulator", description="Run a local emulator of the Containers API."
    )
    emulator_cli.add_arguments(parser)
    return int(emulator_cli.run(parser.parse_args(args.rest)))


def cmd_demo(args: argparse.Namespace) -> int:
    _emulator_cli()  # the demo runs the emulator: fail here, before anything starts
    from containerfs.demo import run_demo

    return run_demo(args.mountpoint)


def _translate(argv: list[str], prog: str) -> list[str]:
    """mount.fuse's convention and ``-o name=value`` into the parser's own arguments."""
    # mount.fuse3 always passes -o (it adds dev,suid); without one, a mistyped command
    # must not be taken for a mountpoint
    helper_call = any(a.startswith("-o") for a in argv[2:])
    if prog.startswith("mount.fuse") or (
        helper_call and not argv[0].startswith("-") and argv[0] not in COMMANDS
    ):
        argv = from_mount_helper(argv)
    if argv and argv[0] == "mount":
        from containerfs.cli_options import mount_long_options

        argv = ["mount", *expand_options(argv[1:], mount_long_options())]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else "containerfs"
    try:
        translated = _translate(raw, prog)
    except OptionError as err:
        print(f"containerfs: {err}", file=sys.stderr)
        return 2
    if translated[:1] == ["sync"]:
        return cli_sync.main(translated[1:])  # without building every command's parser
    parser = build_parser()
    args, rest = parser.parse_known_args(translated)
    if args.command == "emulator":
        args.rest = rest  # for the emulator's own parser
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.argv = translated
    return cli_sync.run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
