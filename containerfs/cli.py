"""Command line: ``containerfs mount|unmount|status|new|import|emulator|demo`` (``new`` and
``import``, which act through a running mount, live in ``cli_control``).

Every failure the user can cause (bad mountpoint, wrong key, unreachable endpoint, bad
option) ends with one line on stderr and a non-zero exit: never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from containerfs import __version__, cli_control, mounttable
from containerfs.cliargs import (
    COMMANDS,
    OptionError,
    expand_options,
    expiry_minutes,
    file_mode,
    from_mount_helper,
    non_negative_duration,
    owner_id,
    parse_size,
    patterns,
    positive_duration,
    positive_number,
)
from containerfs.config import IO_TIMEOUT, MEMORY_LIMITS
from containerfs.errors import (
    ApiConnectionError,
    AuthenticationError,
    ContainerFsError,
    NotFound,
)
from containerfs.private import private_dir, private_umask

if TYPE_CHECKING:
    from containerfs.daemon.status import Status

log = logging.getLogger("containerfs")


class CliError(Exception):
    """A one-line message for the user; exit status 1 unless given."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _default_dir(env: str, fallback: str) -> Path:
    base = os.environ.get(env) or os.path.join(os.path.expanduser("~"), fallback)
    return Path(base) / "containerfs"


def default_state_dir() -> Path:
    return _default_dir("XDG_STATE_HOME", ".local/state")


def default_cache_dir() -> Path:
    return _default_dir("XDG_CACHE_HOME", ".cache")


_MOUNT_EPILOG = """\
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


def _add_mount_arguments(p: argparse.ArgumentParser) -> dict[str, bool]:
    """Add the mount options; returns each long option's name and whether it takes a value."""
    names: dict[str, bool] = {}

    def opt(*flags: str, **kw: Any) -> None:
        p.add_argument(*flags, **kw)
        long = next(f for f in flags if f.startswith("--"))
        names[long[2:].replace("-", "_")] = kw.get("action") != "store_true"

    p.add_argument("mountpoint", type=Path, help="an empty directory")
    opt("-f", "--foreground", action="store_true", help="stay in the foreground, log to stderr")
    opt("--base-url", metavar="URL", help="the API endpoint, ending in /v1 ($OPENAI_BASE_URL)")
    opt(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="read the API key from FILE (mode 600) instead of $OPENAI_API_KEY",
    )
    opt("--read-only", action="store_true", help="answer every change with EROFS")
    opt("--cache-dir", type=Path, metavar="DIR", help="disk cache of file contents")
    opt(
        "--no-prefetch",
        dest="prefetch",
        action="store_false",
        help="do not download the next files of a directory walk before they are opened",
    )
    opt(
        "--cache-max-size",
        type=parse_size,
        default="2G",
        metavar="SIZE",
        help="disk cache limit (default 2G)",
    )
    opt("--state-dir", type=Path, metavar="DIR", help="aliases, spools, pending uploads")
    opt(
        "--metadata-ttl",
        type=non_negative_duration,
        default=10.0,
        metavar="DURATION",
        help="how long listings are cached (default 10s; 0: listed again at every lookup)",
    )
    opt(
        "--negative-ttl",
        type=positive_duration,
        default=1.0,
        metavar="DURATION",
        help="how long a missing name is remembered (default 1s)",
    )
    opt("--root", default="/mnt/data", help="container path shown as the directory")
    opt("--show-expired", action="store_true", help="show expired containers (read-only, empty)")
    opt(
        "--local-only",
        type=patterns,
        default=None,
        metavar="PATTERNS",
        help="comma-separated name patterns never uploaded ('' uploads everything)",
    )
    opt(
        "--container-expiry",
        type=expiry_minutes,
        default=None,
        metavar="MINUTES",
        help="expires_after for containers made with mkdir (20, or 2h)",
    )
    opt(
        "--container-memory",
        choices=MEMORY_LIMITS,
        default=None,
        help="memory_limit for containers made with mkdir",
    )
    opt(
        "--rate-limit",
        type=positive_number,
        default=None,
        metavar="PER_MINUTE",
        help="client-side API request rate limit",
    )
    opt(
        "--write-back",
        action="store_true",
        help="close returns once the content is durable on disk; uploads follow in the "
        "background ('containerfs sync' waits for them)",
    )
    opt(
        "--drain-timeout",
        type=positive_duration,
        default=60.0,
        metavar="DURATION",
        help="how long unmount waits for pending uploads (default 60s)",
    )
    opt(
        "--io-timeout",
        type=positive_duration,
        default=IO_TIMEOUT,
        metavar="DURATION",
        help="cut a request that moves less than 1 KiB/s for this long; an operation waiting"
        f" on the server fails (EIO) within twice this (default {IO_TIMEOUT:g}s)",
    )
    opt("--uid", type=owner_id, help="owner shown for every file (default: the mounting user)")
    opt("--gid", type=owner_id, help="group shown for every file (default: the mounting user's)")
    opt(
        "--file-mode",
        type=file_mode,
        default=0o644,
        metavar="MODE",
        help="permission bits of files, octal (default 0644)",
    )
    opt(
        "--dir-mode",
        type=file_mode,
        default=0o755,
        metavar="MODE",
        help="permission bits of directories, octal (default 0755)",
    )
    opt("--allow-other", action="store_true", help="let other users see the mount")
    opt(
        "--allow-non-empty",
        action="store_true",
        help="mount over a directory that has files (they are hidden while mounted)",
    )
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPTS",
        help="comma-separated options: name=value for any long option, else FUSE options",
    )
    opt("--log-file", type=Path, metavar="FILE", help="append the log to FILE")
    opt("--debug", action="store_true", help="log at debug level (same as --log-level debug)")
    opt(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="default warning; info logs each upload and download",
    )
    return names


def mount_long_options() -> dict[str, bool]:
    return _add_mount_arguments(argparse.ArgumentParser())


def build_parser() -> argparse.ArgumentParser:
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
        epilog=_MOUNT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_mount_arguments(mount)
    mount.set_defaults(func=cmd_mount)

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

    cli_control.add_parsers(sub, find_run_dir=_run_dir)
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


def _setup_logging(level: str, log_file: Path | None) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.FileHandler(log_file)
        except OSError as err:
            raise CliError(f"cannot open log file {log_file}: {err.strerror or err}") from err
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _read_key_file(path: Path) -> str:
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise CliError(
                f"the key file {path} is open to group or others"
                f" (mode {st.st_mode & 0o777:04o}): chmod 600 {path}"
            )
        key = path.read_text().strip()
    except OSError as err:
        raise CliError(f"cannot read the key file {path}: {err.strerror or err}") from err
    if not key:
        raise CliError(f"the key file {path} is empty")
    return key


SYNC_TIMEOUT = 3600.0  # seconds containerfs sync waits for the daemon's answer


def _mount_config(args: argparse.Namespace) -> Any:
    from containerfs.config import DEFAULT_LOCAL_ONLY, ApiConfig, MountConfig

    overrides: dict[str, Any] = {
        "rate_limit_per_minute": args.rate_limit,
        "io_timeout": args.io_timeout,
    }
    if args.base_url:
        overrides["base_url"] = args.base_url.rstrip("/")
    if args.api_key_file is not None:
        overrides["api_key"] = _read_key_file(args.api_key_file)
    api = ApiConfig.from_env(**overrides)
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
        prefetch=args.prefetch,
        root=args.root,
        show_expired=args.show_expired,
        local_only=DEFAULT_LOCAL_ONLY if args.local_only is None else args.local_only,
        container_expires_minutes=args.container_expiry,
        container_memory_limit=args.container_memory,
        allow_other=args.allow_other,
        write_back=args.write_back,
        drain_timeout=args.drain_timeout,
        fuse_options=options,
        uid=args.uid,
        gid=args.gid,
        file_mode=args.file_mode,
        dir_mode=args.dir_mode,
    )


def _explain(err: ContainerFsError, endpoint: str) -> str:
    if isinstance(err, AuthenticationError):
        return f"the API at {endpoint} rejected the credentials ({err})"
    if isinstance(err, ApiConnectionError):
        return f"cannot reach the API at {endpoint} ({err})"
    if isinstance(err, NotFound):
        hint = "" if endpoint.endswith("/v1") else f"; did you mean {endpoint}/v1 ?"
        return f"the API at {endpoint} answered 404 Not Found to a container listing{hint}"
    return str(err)


def _check_fuse_device() -> None:
    device = Path("/dev/fuse")
    if not device.exists():
        raise CliError(
            "/dev/fuse does not exist: load the fuse module (modprobe fuse), or give the"
            " container the device (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
        )
    if not os.access(device, os.R_OK | os.W_OK):
        st = device.stat()
        raise CliError(
            f"no permission to open /dev/fuse (mode {st.st_mode & 0o777:04o}, owner uid"
            f" {st.st_uid} gid {st.st_gid}): ask for read-write access to it"
        )


def _check_target(mountpoint: Path, *, allow_non_empty: bool) -> None:
    """What is wrong with the mountpoint, said before any daemon starts."""
    from containerfs.daemon.mount import check_mountpoint

    entry = mounttable.find_mount(mountpoint)
    if entry is not None and mounttable.is_dead(mountpoint):
        raise CliError(
            f"{mountpoint} is a {entry.fstype} mount whose daemon has died (transport endpoint"
            f" is not connected); clear it with: containerfs unmount {mountpoint}"
        )
    if entry is not None and entry.fstype == mounttable.FSTYPE:
        raise CliError(
            f"{mountpoint} is already mounted by containerfs (see: containerfs status {mountpoint})"
        )
    check_mountpoint(mountpoint)
    if not allow_non_empty:
        try:
            has_files = any(os.scandir(mountpoint))
        except OSError as err:
            raise CliError(f"cannot list {mountpoint}: {err.strerror or err}") from err
        if has_files:
            raise CliError(
                f"{mountpoint} is not empty: its files would be hidden while mounted"
                " (--allow-non-empty mounts over them anyway)"
            )


def cmd_mount(args: argparse.Namespace) -> int:
    import trio

    from containerfs.daemon.mount import run_dir, serve
    from containerfs.errors import MountError

    if isinstance(args.cache_max_size, str):
        args.cache_max_size = parse_size(args.cache_max_size)
    # before the state, cache and run directories and the daemon's log are made
    private_umask()
    level = "debug" if args.debug else args.log_level
    cfg = _mount_config(args)
    _check_fuse_device()
    _check_target(cfg.mountpoint, allow_non_empty=args.allow_non_empty)
    _usable_dir("state", cfg.state_dir)
    _usable_dir("cache", cfg.cache_dir)
    rdir = run_dir(cfg.state_dir, cfg.mountpoint)
    if not args.foreground:
        return _spawn_daemon(args, rdir)
    _setup_logging(level, args.log_file)
    where = f" (log: {args.log_file})" if args.log_file else ""

    def ready() -> None:
        mounttable.register(cfg.mountpoint, rdir)
        mounttable.sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=mounted {cfg.mountpoint}")

    try:
        return trio.run(partial(serve, cfg, ready=ready))
    except Exception as exc:
        err = _single(exc)
        if isinstance(err, MountError):
            raise CliError(f"{err}{where}") from exc
        if isinstance(err, ContainerFsError):
            explained = _explain(err, cfg.api.base_url)
            raise CliError(f"cannot mount {cfg.mountpoint}: {explained}{where}") from exc
        if isinstance(err, OSError):
            raise CliError(f"cannot mount {cfg.mountpoint}: {err}{where}") from exc
        log.exception("the mount ended with an unexpected error")
        raise CliError(f"the mount of {cfg.mountpoint} failed: {err!r}{where}") from exc
    finally:
        mounttable.unregister(cfg.mountpoint)
        mounttable.sd_notify("STOPPING=1")


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
    private_dir(rdir)
    logfile = Path(os.path.abspath(args.log_file or rdir / "log"))
    argv = [sys.executable, "-m", "containerfs", *args.argv, "--foreground"]
    try:
        out = open(logfile, "ab")  # noqa: SIM115 - handed to the child, closed right after
    except OSError as err:
        raise CliError(f"cannot open log file {logfile}: {err.strerror or err}") from err
    with out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    # the child's credentials check gives up after two io-timeouts on a stalled server: wait
    # longer than that, so that its own one-line error is what the user reads
    wait = max(60.0, 2 * args.io_timeout + 10)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        entry = mounttable.find_mount(args.mountpoint)
        if entry is not None and entry.fstype == mounttable.FSTYPE:
            return 0
        code = child.poll()
        if code is not None:
            lines = logfile.read_text(errors="replace").strip().splitlines()
            # the child's last line is its own one-line error, already "containerfs: "-prefixed
            last = lines[-1].removeprefix("containerfs: ") if lines else ""
            last = last.removesuffix(f" (log: {logfile})")
            raise CliError(f"{last or f'mount failed (exit {code})'} (log: {logfile})", code or 1)
        time.sleep(0.05)
    child.terminate()
    raise CliError(
        f"mount of {args.mountpoint} did not come up within {wait:.0f} s (log: {logfile})"
    )


def _run_dir(mountpoint: Path, state_dir: Path | None) -> Path:
    """The daemon's run directory: its registration, else the one under the state dir."""
    from containerfs.daemon.rundir import run_dir

    found = mounttable.registration(mountpoint) if state_dir is None else None
    if found is not None:
        return found.run_dir
    return run_dir(state_dir or default_state_dir(), Path(mounttable.absolute(mountpoint)))


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
    rdir = _run_dir(mp, args.state_dir)
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
    status = _read_status(_run_dir(mountpoint, state_dir))
    if status is None or not _alive(status.pid):
        return None, f"no containerfs daemon serves {mountpoint}"
    return status, ""


def cmd_sync(args: argparse.Namespace) -> int:
    from containerfs.daemon.control import SyncPath, call, socket_path

    mountpoint = Path(os.path.abspath(args.mountpoint))
    parts: tuple[str, ...] = ()
    if args.path is not None:
        rel = os.path.relpath(os.path.abspath(args.path), mountpoint)
        if rel == ".." or rel.startswith("../"):
            raise CliError(f"{args.path} is not inside the mount {args.mountpoint}", 2)
        parts = tuple(p for p in rel.split("/") if p not in ("", "."))
    sock = socket_path(_run_dir(args.mountpoint, args.state_dir))
    if not sock.exists():
        raise CliError(f"no containerfs daemon serves {args.mountpoint}", 1)
    # waits as long as the uploads take; a failure is one line naming each failed file
    call(sock, SyncPath(parts), timeout=args.timeout)
    return 0


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
    parser = build_parser()
    args, rest = parser.parse_known_args(translated)
    if args.command == "emulator":
        args.rest = rest  # for the emulator's own parser
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.argv = translated
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
