"""The mount command's options, as one table: the parser is built from it with one loop, and
``-o name=value`` accepts every long option it names (``cli``, the command line layer).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from containerfs.cliargs import (
    expiry_minutes,
    file_mode,
    non_negative_duration,
    owner_id,
    parse_size,
    patterns,
    positive_duration,
    positive_number,
)
from containerfs.config import IO_TIMEOUT, MEMORY_LIMITS

MOUNT_EPILOG = """\
environment:
  OPENAI_API_KEY     the API key (or --api-key-file FILE, or -o api_key_file=FILE)
  OPENAI_BASE_URL    the endpoint (default https://api.openai.com/v1; or --base-url)
  OPENAI_ORG_ID, OPENAI_PROJECT_ID   sent as the SDKs send them
  XDG_STATE_HOME, XDG_CACHE_HOME     where the default state and cache directories live
  NOTIFY_SOCKET      set by systemd (Type=notify): readiness is sent once mounted

defaults: state in $XDG_STATE_HOME/containerfs (~/.local/state/containerfs), cache in
$XDG_CACHE_HOME/containerfs (~/.cache/containerfs). Logs: stderr with --foreground; else
STATE_DIR/mounts/<id>/log (the path is named in any error), or --log-file FILE.
Durations take 30, 10s, 5m, 1h (a plain number is seconds). Every long option can be
given as -o name=value (-o cache_dir=/var/cache/cfs,read_only); other -o options go to FUSE.
As a mount helper: containerfs SOURCE MOUNTPOINT -o OPTIONS (fstab type fuse.containerfs).
"""

_FLAG: dict[str, Any] = {"action": "store_true"}

# (flags, argparse keywords), in the order --help lists them; ``-o`` is the one option that
# has no long name (it carries the others, and FUSE's)
MOUNT_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("-f", "--foreground"), {**_FLAG, "help": "stay in the foreground, log to stderr"}),
    (
        ("--base-url",),
        {"metavar": "URL", "help": "the API endpoint, ending in /v1 ($OPENAI_BASE_URL)"},
    ),
    (
        ("--api-key-file",),
        {
            "type": Path,
            "metavar": "FILE",
            "help": "read the API key from FILE (mode 600) instead of $OPENAI_API_KEY",
        },
    ),
    (("--read-only",), {**_FLAG, "help": "answer every change with EROFS"}),
    (("--cache-dir",), {"type": Path, "metavar": "DIR", "help": "disk cache of file contents"}),
    (
        ("--no-prefetch",),
        {
            "dest": "prefetch",
            "action": "store_false",
            "help": "do not download the next files of a directory walk before they are opened",
        },
    ),
    (
        ("--cache-max-size",),
        {
            "type": parse_size,
            "default": "2G",
            "metavar": "SIZE",
            "help": "disk cache limit (default 2G)",
        },
    ),
    (
        ("--state-dir",),
        {"type": Path, "metavar": "DIR", "help": "aliases, spools, pending uploads"},
    ),
    (
        ("--metadata-ttl",),
        {
            "type": non_negative_duration,
            "default": 10.0,
            "metavar": "DURATION",
            "help": "how long listings are cached (default 10s; 0: listed again at every lookup)",
        },
    ),
    (
        ("--negative-ttl",),
        {
            "type": positive_duration,
            "default": 1.0,
            "metavar": "DURATION",
            "help": "how long a missing name is remembered (default 1s)",
        },
    ),
    (("--root",), {"default": "/mnt/data", "help": "container path shown as the directory"}),
    (("--show-expired",), {**_FLAG, "help": "show expired containers (read-only, empty)"}),
    (
        ("--local-only",),
        {
            "type": patterns,
            "default": None,
            "metavar": "PATTERNS",
            "help": "comma-separated name patterns never uploaded ('' uploads everything)",
        },
    ),
    (
        ("--container-expiry",),
        {
            "type": expiry_minutes,
            "default": None,
            "metavar": "MINUTES",
            "help": "expires_after for containers made with mkdir (20, or 2h)",
        },
    ),
    (
        ("--container-memory",),
        {
            "choices": MEMORY_LIMITS,
            "default": None,
            "help": "memory_limit for containers made with mkdir",
        },
    ),
    (
        ("--rate-limit",),
        {
            "type": positive_number,
            "default": None,
            "metavar": "PER_MINUTE",
            "help": "client-side API request rate limit",
        },
    ),
    (
        ("--write-back",),
        {
            **_FLAG,
            "help": "close returns once the content is durable on disk; uploads follow in the"
            " background ('containerfs sync' waits for them)",
        },
    ),
    (
        ("--drain-timeout",),
        {
            "type": positive_duration,
            "default": 60.0,
            "metavar": "DURATION",
            "help": "how long unmount waits for pending uploads (default 60s)",
        },
    ),
    (
        ("--io-timeout",),
        {
            "type": positive_duration,
            "default": IO_TIMEOUT,
            "metavar": "DURATION",
            "help": "cut a request that moves less than 1 KiB/s for this long; an operation"
            " waiting on the server fails (EIO) within twice this"
            f" (default {IO_TIMEOUT:g}s)",
        },
    ),
    (
        ("--uid",),
        {"type": owner_id, "help": "owner shown for every file (default: the mounting user)"},
    ),
    (
        ("--gid",),
        {"type": owner_id, "help": "group shown for every file (default: the mounting user's)"},
    ),
    (
        ("--file-mode",),
        {
            "type": file_mode,
            "default": 0o644,
            "metavar": "MODE",
            "help": "permission bits of files, octal (default 0644)",
        },
    ),
    (
        ("--dir-mode",),
        {
            "type": file_mode,
            "default": 0o755,
            "metavar": "MODE",
            "help": "permission bits of directories, octal (default 0755)",
        },
    ),
    (("--allow-other",), {**_FLAG, "help": "let other users see the mount"}),
    (
        ("--allow-non-empty",),
        {**_FLAG, "help": "mount over a directory that has files (they are hidden while mounted)"},
    ),
    (
        ("-o",),
        {
            "dest": "options",
            "action": "append",
            "default": [],
            "metavar": "OPTS",
            "help": "comma-separated options: name=value for any long option, else FUSE options",
        },
    ),
    (("--log-file",), {"type": Path, "metavar": "FILE", "help": "append the log to FILE"}),
    (("--debug",), {**_FLAG, "help": "log at debug level (same as --log-level debug)"}),
    (
        ("--log-level",),
        {
            "default": "warning",
            "choices": ["debug", "info", "warning", "error"],
            "help": "default warning; info logs each upload and download",
        },
    ),
)


def add_mount_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint", type=Path, help="an empty directory")
    for flags, kw in MOUNT_OPTIONS:
        p.add_argument(*flags, **kw)


def mount_long_options() -> dict[str, bool]:
    """Each long option's name (as ``-o`` spells it) and whether it takes a value."""
    return {
        long[2:].replace("-", "_"): kw.get("action") not in ("store_true", "store_false")
        for flags, kw in MOUNT_OPTIONS
        for long in flags
        if long.startswith("--")
    }
