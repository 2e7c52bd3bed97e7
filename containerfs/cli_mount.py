"""``containerfs mount``: the options checked and turned into a ``MountConfig``, the
mountpoint and the FUSE device checked before any daemon starts, then the mount run in the
foreground or in a detached child that is waited for until it is live (``cli``, the command
line layer).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from containerfs import mounttable
from containerfs.cliargs import parse_size
from containerfs.daemon.rundir import default_cache_dir, default_state_dir
from containerfs.errors import (
    ApiConnectionError,
    AuthenticationError,
    CliError,
    ContainerFsError,
    NotFound,
)
from containerfs.private import private_dir, private_umask

log = logging.getLogger("containerfs")


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
