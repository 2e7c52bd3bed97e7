"""Command line: ``containerfs mount|unmount|status|new|import|emulator|demo`` (``new`` and
``import`` live in ``cli_control``).

Every failure the user can cause (bad mountpoint, wrong key, unreachable endpoint, bad
option) ends with one line on stderr and a non-zero exit: never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from containerfs import cli_control
from containerfs.config import MEMORY_LIMITS
from containerfs.errors import ApiConnectionError, AuthenticationError, ContainerFsError

if TYPE_CHECKING:
    from containerfs.daemon.status import Status

log = logging.getLogger("containerfs")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class CliError(Exception):
    """A one-line message for the user; exit status 1 unless given."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 512M, 10G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number: {text!r}")
    return value


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _default_dir(env: str, fallback: str) -> Path:
    base = os.environ.get(env) or os.path.join(os.path.expanduser("~"), fallback)
    return Path(base) / "containerfs"


def default_state_dir() -> Path:
    return _default_dir("XDG_STATE_HOME", ".local/state")


def default_cache_dir() -> Path:
    return _default_dir("XDG_CACHE_HOME", ".cache")


def _add_mount_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint", type=Path)
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--read-only", action="store_true", help="answer every change with EROFS")
    p.add_argument("--cache-dir", type=Path, default=None, help="disk cache of file contents")
    p.add_argument("--cache-max-size", type=parse_size, default="2G", help="default 2G")
    p.add_argument("--state-dir", type=Path, default=None, help="aliases, spools, pending uploads")
    p.add_argument(
        "--metadata-ttl",
        type=_non_negative,
        default=10.0,
        metavar="SECONDS",
        help="how long listings are cached (default 10; 0: listed again at every lookup)",
    )
    p.add_argument("--negative-ttl", type=_positive, default=1.0, metavar="SECONDS")
    p.add_argument("--root", default="/mnt/data", help="container path shown as the directory")
    p.add_argument(
        "--show-expired", action="store_true", help="show expired containers (read-only, empty)"
    )
    p.add_argument(
        "--local-only",
        type=_patterns,
        default=None,
        metavar="PATTERNS",
        help="comma-separated name patterns never uploaded ('' uploads everything)",
    )
    p.add_argument(
        "--container-expiry",
        type=int,
        default=None,
        metavar="MINUTES",
        help="expires_after for containers made with mkdir",
    )
    p.add_argument("--container-memory", choices=MEMORY_LIMITS, default=None)
    p.add_argument(
        "--rate-limit",
        type=_positive,
        default=None,
        metavar="PER_MINUTE",
        help="client-side API request rate limit",
    )
    p.add_argument(
        "--drain-timeout",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="how long unmount waits for pending uploads",
    )
    p.add_argument("--allow-other", action="store_true")
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPTS",
        help="extra FUSE mount options, comma-separated",
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="containerfs",
        description="Mount the containers of an OpenAI-compatible Containers API as a drive.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = sub.add_parser("mount", help="mount the containers at MOUNTPOINT")
    _add_mount_arguments(mount)
    mount.set_defaults(func=cmd_mount)

    unmount = sub.add_parser("unmount", help="finish pending uploads, then unmount")
    unmount.add_argument("mountpoint", type=Path)
    unmount.add_argument("--state-dir", type=Path, default=None)
    unmount.add_argument("--timeout", type=_positive, default=120.0)
    unmount.set_defaults(func=cmd_unmount)

    status = sub.add_parser("status", help="pending uploads, cache use, API calls")
    status.add_argument("mountpoint", type=Path)
    status.add_argument("--state-dir", type=Path, default=None)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    cli_control.add_parsers(sub, default_state_dir=default_state_dir)

    # the emulator's own parser is built only when it runs: its server libraries are an
    # optional extra, and `mount` must not load them
    emu = sub.add_parser(
        "emulator", help="run a local emulator of the Containers API", add_help=False
    )
    emu.set_defaults(func=cmd_emulator)

    demo = sub.add_parser("demo", help="emulator with sample containers, mounted; Ctrl-C ends")
    demo.add_argument("mountpoint", type=Path, nargs="?", default=Path("mnt"))
    demo.set_defaults(func=cmd_demo)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _mount_config(args: argparse.Namespace) -> Any:
    from containerfs.config import DEFAULT_LOCAL_ONLY, ApiConfig, MountConfig

    api = ApiConfig.from_env(rate_limit_per_minute=args.rate_limit)
    state_dir = args.state_dir or default_state_dir()
    options = tuple(o for opts in args.options for o in opts.split(",") if o)
    return MountConfig(
        mountpoint=args.mountpoint,
        api=api,
        state_dir=state_dir,
        cache_dir=args.cache_dir or default_cache_dir(),
        cache_max_size=args.cache_max_size,
        metadata_ttl=args.metadata_ttl,
        negative_ttl=args.negative_ttl,
        read_only=args.read_only,
        root=args.root,
        show_expired=args.show_expired,
        local_only=DEFAULT_LOCAL_ONLY if args.local_only is None else args.local_only,
        container_expires_minutes=args.container_expiry,
        container_memory_limit=args.container_memory,
        allow_other=args.allow_other,
        drain_timeout=args.drain_timeout,
        fuse_options=options,
    )


def _explain(err: ContainerFsError, endpoint: str) -> str:
    if isinstance(err, AuthenticationError):
        return f"the API at {endpoint} rejected the credentials ({err})"
    if isinstance(err, ApiConnectionError):
        return f"cannot reach the API at {endpoint} ({err})"
    return str(err)


def cmd_mount(args: argparse.Namespace) -> int:
    import trio

    from containerfs.daemon.mount import check_mountpoint, run_dir, serve

    if isinstance(args.cache_max_size, str):
        args.cache_max_size = parse_size(args.cache_max_size)
    cfg = _mount_config(args)
    check_mountpoint(cfg.mountpoint)
    _usable_dir("state", cfg.state_dir)
    _usable_dir("cache", cfg.cache_dir)
    if not args.foreground:
        return _spawn_daemon(args, run_dir(cfg.state_dir, cfg.mountpoint))
    _setup_logging(args.log_level)
    try:
        return trio.run(serve, cfg)
    except Exception as exc:
        err = _single(exc)
        if isinstance(err, ContainerFsError):
            explained = _explain(err, cfg.api.base_url)
            raise CliError(f"cannot mount {cfg.mountpoint}: {explained}") from exc
        if isinstance(err, OSError):
            raise CliError(f"cannot mount {cfg.mountpoint}: {err}") from exc
        log.exception("the mount ended with an unexpected error")
        raise CliError(f"the mount of {cfg.mountpoint} failed: {err!r}") from exc


def _usable_dir(kind: str, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise CliError(f"cannot use {kind} directory {path}: {err.strerror or err}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise CliError(f"cannot use {kind} directory {path}: no write access")


def _single(err: BaseException) -> BaseException:
    """The error inside (nested) one-error exception groups, as trio's nurseries raise them."""
    while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
        err = err.exceptions[0]
    return err


def _spawn_daemon(args: argparse.Namespace, rdir: Path) -> int:
    """Run the mount in a detached child; return once it is live or has failed."""
    rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logfile = rdir / "log"
    argv = [sys.executable, "-m", "containerfs", *args.argv, "--foreground"]
    with open(logfile, "ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.ismount(args.mountpoint):
            return 0
        code = child.poll()
        if code is not None:
            lines = logfile.read_text(errors="replace").strip().splitlines()
            # the child's last line is its own one-line error, already "containerfs: "-prefixed
            last = lines[-1].removeprefix("containerfs: ") if lines else ""
            raise CliError(last or f"mount failed (exit {code})", code or 1)
        time.sleep(0.05)
    child.terminate()
    raise CliError(f"mount of {args.mountpoint} did not come up within 60 s (log: {logfile})")


def _read_status(mountpoint: Path, state_dir: Path | None) -> tuple[Path, Status | None]:
    """The daemon's run directory and its last status snapshot (None: no readable one)."""
    from containerfs.daemon.mount import run_dir
    from containerfs.daemon.status import Status
    from containerfs.errors import StatusError

    rdir = run_dir(state_dir or default_state_dir(), mountpoint)
    try:
        return rdir, Status.from_json((rdir / "status.json").read_text())
    except (OSError, StatusError):  # none yet, or written by another version: no daemon
        return rdir, None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_unmount(args: argparse.Namespace) -> int:
    rdir, _ = _read_status(args.mountpoint, args.state_dir)
    try:
        pid = int((rdir / "pid").read_text())
    except (OSError, ValueError):
        pid = 0
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            raise CliError(f"the daemon (pid {pid}) did not finish within {args.timeout:.0f} s")
        _, status = _read_status(args.mountpoint, args.state_dir)
        left = len(status.pending) if status else 0
        if left:
            raise CliError(
                f"unmounted with {left} upload(s) pending; the next mount resumes them", 3
            )
        return 0
    if not os.path.ismount(args.mountpoint):
        raise CliError(f"{args.mountpoint} is not mounted")
    tool = shutil.which("fusermount3") or "fusermount3"
    result = subprocess.run([tool, "-u", str(args.mountpoint)], capture_output=True, text=True)
    if result.returncode:
        raise CliError(result.stderr.strip() or f"fusermount3 failed ({result.returncode})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _, status = _read_status(args.mountpoint, args.state_dir)
    if status is None or not _alive(status.pid):
        raise CliError(f"no containerfs daemon serves {args.mountpoint}")
    if args.json:
        print(status.to_json())
        return 0
    api = status.api
    print(f"mountpoint   {status.mountpoint}  (pid {status.pid})")
    print(f"endpoint     {status.endpoint}")
    print(
        f"api calls    {api.total_requests}  "
        + " ".join(f"{k}={v}" for k, v in sorted(api.requests.items()))
    )
    print(f"transferred  up {api.bytes_up} B, down {api.bytes_down} B, retries {api.retries}")
    if api.errors:
        print("api errors   " + " ".join(f"{k}={v}" for k, v in sorted(api.errors.items())))
    cache = status.cache
    if cache is not None:
        print(
            f"cache        {cache.cache_bytes_used} B in {cache.entries} entries,"
            f" hits {cache.hits}, misses {cache.misses}"
        )
    writer = status.writer
    if writer is not None:
        print(f"uploads      {writer.uploads} done, {writer.upload_failures} failed")
    print(f"pending      {len(status.pending)}")
    for item in status.pending:
        error = f"  ({item.error})" if item.error else ""
        print(f"  {item.container_id}/{item.path}  {item.bytes} B  {item.state}{error}")
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "emulator":
        args.rest = rest  # for the emulator's own parser
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except CliError as err:
        print(f"containerfs: {err}", file=sys.stderr)
        return err.status
    except ContainerFsError as err:
        print(f"containerfs: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
