"""Command-line values and conventions: sizes, durations, modes, and the translation of
``-o name=value`` options and of mount.fuse's calling convention into long options.

Part of the command-line layer; pure functions over strings, no I/O.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

#: mount(8) and mount.fuse options that mean nothing to the filesystem itself
IGNORED_OPTIONS = frozenset(
    [
        "_netdev",
        "nofail",
        "auto",
        "noauto",
        "defaults",
        "user",
        "users",
        "nouser",
        "owner",
        "group",
        "rw",
    ]
)
IGNORED_PREFIXES = ("x-", "comment=", "_")

#: the first words the program accepts; anything else is mount.fuse's ``SOURCE MOUNTPOINT``
COMMANDS = frozenset({"mount", "unmount", "status", "new", "import", "emulator", "demo"})


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 512M, 10G)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(text: str) -> float:
    """Seconds from ``10s``, ``5m``, ``1h``, ``1d``, ``250ms`` or a plain number of seconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 30, 10s, 5m, 1h)")
    return float(m.group(1)) * _SECONDS[(m.group(2) or "s").lower()]


def positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than zero: {text!r}")
    return value


def non_negative_duration(text: str) -> float:
    """A duration that may be 0 (``--metadata-ttl 0``: nothing cached)."""
    value = parse_duration(text)
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    return value


def expiry_minutes(text: str) -> int:
    """Whole minutes: a plain number is minutes (the API's unit); ``2h``, ``90m`` convert."""
    minutes = float(text) if text.strip().isdigit() else parse_duration(text) / 60
    if minutes < 1 or minutes != int(minutes):
        raise argparse.ArgumentTypeError(f"not a whole number of minutes: {text!r}")
    return int(minutes)


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def file_mode(text: str) -> int:
    """Permission bits in octal: ``644``, ``0644``, ``0o644``."""
    try:
        value = int(text.removeprefix("0o"), 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r} (example: 0644)") from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"not a permission mode: {text!r}")
    return value


def owner_id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a numeric id: {text!r}")
    return int(text)


def patterns(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


class OptionError(ValueError):
    """A ``-o`` option or a mount.fuse call that cannot be translated; one line."""


def _split_options(text: str) -> list[str]:
    # commas separate options; a backslash keeps one inside a value (libfuse's own escape)
    items, current, chars = [], [], iter(text)
    for c in chars:
        if c == "\\":
            current.append(next(chars, "\\"))
        elif c == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(c)
    items.append("".join(current))
    return [i for i in items if i]


def expand_options(tokens: Sequence[str], long_options: Mapping[str, bool]) -> list[str]:
    """``-o a=1,b,fuse_opt`` becomes ``--a=1 --b -o fuse_opt``.

    ``long_options`` maps each long option's name (``cache_dir``) to whether it takes a
    value. ``ro`` means ``--read-only``; mount(8)'s own options (``_netdev``, ``nofail``,
    ``defaults``, ``x-systemd.*`` …) are dropped; anything else is a FUSE option for libfuse,
    which names those it does not know.
    """
    out: list[str] = []
    fuse: list[str] = []
    it = iter(tokens)
    for tok in it:
        if tok == "-o":
            text = next(it, None)
            if text is None:
                raise OptionError("-o needs a value")
        elif tok.startswith("-o") and not tok.startswith("--"):
            text = tok[2:]
        else:
            out.append(tok)
            continue
        for item in _split_options(text):
            name, eq, value = item.partition("=")
            key = name.replace("-", "_")
            if item in IGNORED_OPTIONS or item.startswith(IGNORED_PREFIXES):
                continue
            if key == "ro" and not eq:
                out.append("--read-only")
            elif key in long_options:
                takes_value = long_options[key]
                flag = "--" + key.replace("_", "-")
                if takes_value and not eq:
                    raise OptionError(f"-o {name} needs a value: -o {name}=VALUE")
                if not takes_value and eq:
                    raise OptionError(f"-o {name} takes no value")
                out.append(f"{flag}={value}" if takes_value else flag)
            else:
                fuse.append(item)
    if fuse:
        out += ["-o", ",".join(fuse)]
    return out


def from_mount_helper(argv: Sequence[str]) -> list[str]:
    """mount.fuse's convention, ``SOURCE MOUNTPOINT [-n] [-s] [-v] [-o OPTS]``, as ``mount``.

    mount.fuse3 runs ``containerfs SOURCE MOUNTPOINT -o OPTS`` for an fstab type
    ``fuse.containerfs``; mount(8) runs ``mount.fuse.containerfs`` the same way. SOURCE is
    only a label (``containerfs``): the endpoint comes from ``base_url`` or the environment.
    """
    if len(argv) < 2 or argv[1].startswith("-"):
        raise OptionError("usage as a mount helper: containerfs SOURCE MOUNTPOINT [-o OPTIONS]")
    rest: list[str] = []
    it = iter(argv[2:])
    for tok in it:
        if tok in ("-n", "-s", "-v"):  # no mtab, sloppy, verbose: nothing to do here
            continue
        if tok == "-o":
            rest += ["-o", next(it, "")]
        elif tok.startswith("-o"):
            rest.append(tok)
        else:
            raise OptionError(f"unexpected argument {tok!r} after the mountpoint")
    return ["mount", argv[1], *rest]
