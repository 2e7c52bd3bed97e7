"""Command line: ``containerfs mount|unmount|status|emulator|demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from containerfs.emulator import cli as emulator_cli

    parser = argparse.ArgumentParser(
        prog="containerfs",
        description="Mount the containers of an OpenAI-compatible Containers API as a drive.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    emu = sub.add_parser("emulator", help="run a local emulator of the Containers API")
    emulator_cli.add_arguments(emu)
    emu.set_defaults(func=emulator_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
