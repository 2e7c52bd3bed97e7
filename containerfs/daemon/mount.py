"""Daemon lifecycle: build the layers, mount, serve, finish uploads, unmount.

``serve`` runs in the foreground process; ``containerfs mount`` without ``--foreground`` starts
it in a detached child and returns once the mountpoint is live (or prints the child's one-line
error). The daemon leaves its pid, log and a status snapshot in a per-mount run directory
under the state directory, which ``unmount`` and ``status`` read, and listens there on the
control socket that ``new`` and ``import`` talk to (``control.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from containerfs.api.client import ApiClient
from containerfs.config import STATUS_INTERVAL
from containerfs.config import ApiConfig as ApiConfig
from containerfs.config import MountConfig as MountConfig
from containerfs.daemon.commands import MountCommands
from containerfs.daemon.control import socket_path
from containerfs.daemon.control_server import serve_control
from containerfs.daemon.layers import build_layers
from containerfs.daemon.rundir import run_dir as run_dir
from containerfs.daemon.status import Status, pending_in_mount, transfers_in_mount
from containerfs.errors import MountError as MountError
from containerfs.fs.operations import Operations
from containerfs.fs.sizes import Sizes
from containerfs.ns.namespace import Namespace
from containerfs.private import make_private, private_dir, private_umask
from containerfs.read.reader import Reader
from containerfs.state import State, StateLock
from containerfs.write.writer import Writer

log = logging.getLogger(__name__)

#: After the requests in flight were cancelled, handlers answer at once; the FUSE main loop is
#: cancelled if it has not returned within this many seconds (a handler stuck elsewhere).
SHUTDOWN_GRACE = 5.0


def check_mountpoint(mountpoint: Path) -> None:
    try:
        os.stat(mountpoint)
    except OSError as err:
        if err.errno == errno.ENOTCONN:
            raise MountError(
                f"{mountpoint} is a mount whose daemon has died (transport endpoint is not"
                f" connected); clear it with: containerfs unmount {mountpoint}"
            ) from err
    if not mountpoint.exists():
        raise MountError(f"mountpoint {mountpoint} does not exist")
    if not mountpoint.is_dir():
        raise MountError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already a mountpoint")
    if not os.access(mountpoint, os.W_OK | os.X_OK):
        raise MountError(f"no write access to mountpoint {mountpoint}")


def _tune_readahead(real: str) -> None:
    """1 MiB kernel reads instead of 128 KiB (root only; best effort).

    Only after the kernel's INIT has been answered: reading that answer, the kernel caps the
    mount's readahead at the 128 KiB it offered, undoing an earlier raise. ``real`` is the
    resolved mountpoint, computed before mounting: resolving it now would stat the mount
    from the thread that serves it, a deadlock.
    """
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == real:
                bdi = Path("/sys/class/bdi") / parts[2] / "read_ahead_kb"
                bdi.write_text("1024")
                log.debug("%s: read_ahead_kb %s", bdi.parent.name, bdi.read_text().strip())


# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _tune_malloc() -> None:
    """Keep the download's ~1 MiB buffers in the heap instead of fresh pages (glibc; best effort).

    By default glibc returns free memory above 2 MiB at the top of the heap to the kernel, and
    the next 1 MiB buffer faults its pages back in, zeroed: a 256 MiB download paid ~20% of
    the daemon's CPU for that. A fixed mmap threshold above the buffer size and a 32 MiB trim
    threshold keep them reused. Left alone when the environment tunes malloc itself.
    """
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        name.startswith("MALLOC_") for name in os.environ
    ):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, 8 << 20)
    mallopt(_M_TRIM_THRESHOLD, 32 << 20)


class _DaemonOperations(Operations):
    """The operations, plus ``after_init``: called while pyfuse3 answers the kernel's INIT."""

    after_init: Callable[[], None] | None = None

    def init(self) -> None:
        super().init()
        if self.after_init is not None:
            self.after_init()


async def _tune_readahead_soon(real: str) -> None:
    # started from init(): runs at the next checkpoint, once the INIT answer has been sent
    _tune_readahead(real)


def _init_session(ops: Operations, mountpoint: Path, options: set[str]) -> None:
    """``pyfuse3.init``, with libfuse's own reason in the error when the mount fails.

    libfuse (and the fusermount3 it may run) explains a failure only on stderr, and
    pyfuse3 raises a bare "fuse_session_mount failed": stderr is captured meanwhile, its
    last line becomes the error, and it is passed on to the real stderr either way.
    """
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            pyfuse3.init(ops, str(mountpoint), options)
        except RuntimeError as err:
            failure: RuntimeError | None = err
        else:
            failure = None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    if text and failure is None:
        os.write(2, text.encode())
    if failure is not None:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = lines[-1] if lines else str(failure)
        raise MountError(f"cannot mount {mountpoint}: {reason}") from failure


class Daemon:
    """One mount: the layers, the FUSE session and the status snapshot."""

    def __init__(self, cfg: MountConfig, client: ApiClient) -> None:
        self.cfg = cfg
        self.client = client
        self.run_dir = run_dir(cfg.state_dir, cfg.mountpoint)
        self.started = time.time()
        self.real_mountpoint = os.path.realpath(cfg.mountpoint)
        self.reader: Reader | None = None
        self.writer: Writer | None = None
        self.ns: Namespace | None = None
        self.sizes: Sizes | None = None
        self._stopping = False

    async def check_credentials(self) -> None:
        """One API call before mounting: a wrong key or endpoint fails here, cleanly."""
        await self.client.list_containers_page(limit=1)

    def status(self) -> Status:
        ns, mountpoint = self.ns, self.real_mountpoint
        return Status(
            pid=os.getpid(),
            mountpoint=mountpoint,
            endpoint=self.cfg.api.base_url,
            started=self.started,
            api=self.client.statistics(),
            cache=self.reader.statistics() if self.reader else None,
            writer=self.writer.statistics() if self.writer else None,
            namespace=ns.statistics() if ns else None,
            sizes=self.sizes.statistics() if self.sizes else None,
            pending=(
                pending_in_mount(self.writer.pending(), ns, mountpoint)
                if self.writer and ns
                else ()
            ),
            in_flight=transfers_in_mount(self.client.transfers(), ns, mountpoint) if ns else (),
        )

    def write_status(self, text: str | None = None) -> None:
        """Write the status snapshot; ``text`` is one taken on the trio loop."""
        if text is None:
            text = self.status_text()
        tmp = self.run_dir / "status.json.tmp"
        tmp.write_text(text)
        tmp.replace(self.run_dir / "status.json")

    def status_text(self) -> str:
        return self.status().to_json()

    async def _status_loop(self) -> None:
        written = ""
        while True:
            due = trio.current_time() + STATUS_INTERVAL  # a period, whatever the write took
            try:
                # snapshot on the loop (the layers change under a thread); write in a thread,
                # and only what changed: an idle mount does no disk writes
                text = self.status_text()
                if text != written:
                    await trio.to_thread.run_sync(self.write_status, text)
                    written = text
            except Exception:  # the status file is a convenience; never let it end the mount
                log.exception("cannot write the status file")
            await trio.sleep_until(due)

    async def _signals(self, nursery: trio.Nursery, fuse: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as sigs:
            async for signum in sigs:
                if not self._stopping:
                    log.info("signal %d: finishing uploads, then unmounting", signum)
                    self._stopping = True
                    nursery.start_soon(self._shutdown, fuse)
                elif self.writer is not None:
                    log.info("signal %d again: not waiting for uploads any longer", signum)
                    self.writer.stop_draining()

    async def _shutdown(self, fuse: trio.CancelScope) -> None:
        """Finish what uploads can (``--drain-timeout``), then end every request in flight and
        the FUSE main loop. What is still pending stays queued in the state directory."""
        if self.writer is not None:
            left = not await self.writer.drain(self.cfg.drain_timeout)
            if left:
                log.error("unmounting with uploads still pending; the next mount resumes them")
        # a read or a listing waiting on a stalled server fails now (EIO), not at its deadline
        self.client.abort()
        if not fuse.cancel_called:  # the FUSE loop still runs (not unmounted meanwhile)
            pyfuse3.terminate()
            fuse.deadline = trio.current_time() + SHUTDOWN_GRACE

    def _commands(self, ops: Operations) -> MountCommands:
        assert self.ns is not None
        defaults = {
            "expires_after_minutes": self.cfg.container_expires_minutes,
            "memory_limit": self.cfg.container_memory_limit,
        }
        return MountCommands(
            self.ns,
            self.client,
            container_defaults=defaults,
            entry_added=ops.entry_added,
            uploads=self.writer,
        )

    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        cfg = self.cfg
        # first: every file the daemon creates from here on is private to the user
        private_umask()
        check_mountpoint(cfg.mountpoint)
        real_mountpoint = self.real_mountpoint
        # one mount per state directory: two would resume (and delete) each other's uploads
        lock = StateLock.acquire(cfg.state_dir, mountpoint=real_mountpoint)
        try:
            await self._serve_locked(ready)
        finally:
            lock.release()

    async def _serve_locked(self, ready: Callable[[], None] | None) -> None:
        cfg = self.cfg
        real_mountpoint = self.real_mountpoint
        await self.check_credentials()
        private_dir(self.run_dir)
        make_private([self.run_dir.parent])  # mounts/
        state = State(cfg.state_dir, endpoint=cfg.api.base_url)
        try:
            async with trio.open_nursery() as nursery:
                layers = await build_layers(
                    cfg, self.client, state, nursery=nursery, operations=_DaemonOperations
                )
                self.reader, self.ns, self.writer = layers.reader, layers.ns, layers.writer
                ops = layers.ops
                assert isinstance(ops, _DaemonOperations)
                self.sizes = ops.sizes
                ops.after_init = lambda: nursery.start_soon(_tune_readahead_soon, real_mountpoint)
                options = set(pyfuse3.default_options)
                options |= {"fsname=containerfs", "subtype=containerfs", *cfg.fuse_options}
                if cfg.read_only:
                    options.add("ro")
                if cfg.allow_other:
                    options.add("allow_other")
                _init_session(ops, cfg.mountpoint, options)
                try:
                    (self.run_dir / "pid").write_text(str(os.getpid()))
                    await nursery.start(
                        serve_control, socket_path(self.run_dir), self._commands(ops).run
                    )
                    with trio.CancelScope() as fuse:
                        nursery.start_soon(self._signals, nursery, fuse)
                        nursery.start_soon(self._status_loop)
                        log.info("mounted %s on %s", cfg.api.base_url, cfg.mountpoint)
                        if ready is not None:
                            ready()
                        await pyfuse3.main()
                        fuse.cancel()  # ended (unmounted): a later shutdown leaves it alone
                    if fuse.cancelled_caught:
                        log.error("handlers still busy %g s after unmounting began", SHUTDOWN_GRACE)
                finally:
                    pyfuse3.close(unmount=True)
                    log.info("unmounted %s", cfg.mountpoint)
                await self.writer.discard_local_only()
                self.write_status()
                nursery.cancel_scope.cancel()
        finally:
            with contextlib.suppress(OSError):
                (self.run_dir / "pid").unlink()
            state.close()


async def serve(cfg: MountConfig, *, ready: Callable[[], None] | None = None) -> int:
    """Mount and serve until unmounted; 0 on a clean exit, 3 if uploads were left pending."""
    _tune_malloc()
    async with ApiClient(cfg.api) as client:
        daemon = Daemon(cfg, client)
        await daemon.serve(ready=ready)
        return 3 if daemon.writer is not None and daemon.writer.pending() else 0
