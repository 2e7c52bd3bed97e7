"""Drivers for the model test (``test_model.py``): one synchronous interface to a containerfs
mount, either the pyfuse3 handlers called directly or a real kernel mount.

Both drivers speak in display paths: ``(container name, "d/e/a")``. The handler driver runs
the layers (built by ``fs_harness.build_fs``) in a trio loop on a thread of its own and calls
into it with ``trio.from_thread``; the mount driver makes real syscalls from the test thread
into a daemon running in a subprocess (``mount_proc``), never from the daemon's own thread.
Both reach the server through its HTTP API (``/v1``) and the emulator's test controls.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pyfuse3
import trio
from emulator_proc import EmulatorProcess
from fs_harness import CTX, Fs, build_fs, close_fs, setattr_fields
from mount_proc import MountProcess, start_mount

ROOT = "/mnt/data"
T = TypeVar("T")


class Driver(Protocol):
    """What the state machine needs of a mount. Errors are ``OSError`` with an errno."""

    def write(self, c: str, path: str, data: bytes, *, how: str, offset: int = 0) -> None: ...
    def truncate(self, c: str, path: str, size: int) -> None: ...
    def read(self, c: str, path: str) -> bytes: ...
    def size(self, c: str, path: str) -> int: ...
    def listdir(self, c: str, path: str) -> set[str]: ...
    def exists(self, c: str, path: str) -> bool: ...
    def rename(self, c: str, path: str, c2: str, path2: str) -> None: ...
    def unlink(self, c: str, path: str) -> None: ...
    def mkdir(self, c: str, path: str) -> None: ...
    def rmdir(self, c: str, path: str) -> None: ...
    def settle(self, c: str) -> None: ...
    def remount(self) -> bool: ...
    def finish(self) -> bool: ...
    def close(self) -> None: ...
    def dispose(self) -> None: ...
    def request(self, method: str, url: str, body: Any = None) -> tuple[int, bytes]: ...
    def admin(self, method: str, url: str, body: Any = None) -> Any: ...
    @property
    def kernel(self) -> bool: ...


def _write_flags(how: str) -> int:
    return {
        "trunc": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "append": os.O_WRONLY | os.O_APPEND,
        "at": os.O_RDWR,
    }[how]


# -- the handlers, called directly ------------------------------------------------------------


class HandlerDriver:
    """The layers over the emulator app in-process, in a trio loop on a thread of its own."""

    kernel = False

    def __init__(self, tmp_path: Path, app: Any) -> None:
        self._tmp = tmp_path
        self._app = app
        self._fs: Fs | None = None
        self._scope: trio.CancelScope | None = None
        self._ended: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait(30)
        self._call(self._start_fs)

    # the loop and the filesystem's lifetime
    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self._app), base_url="http://emulator"
            ) as http,
            trio.open_nursery() as nursery,
        ):
            self._http = http
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        ended = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    fs = await build_fs(self._tmp, nursery, self._app)
                    task_status.started((fs, scope, ended))
                    await trio.sleep_forever()
            await close_fs(fs)
        finally:
            ended.set()

    async def _start_fs(self) -> None:
        self._fs, self._scope, self._ended = await self._nursery.start(self._serve)

    async def _stop_fs(self, drain: float) -> bool:
        assert self._fs is not None and self._scope is not None and self._ended is not None
        drained = await self._fs.writer.drain(drain)
        self._scope.cancel()
        await self._ended.wait()
        self._fs = None
        return bool(drained)

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def _op(self, fn: Callable[[Fs], Awaitable[T]]) -> T:
        """Run one operation; a FUSE error becomes the ``OSError`` a syscall would raise."""

        async def run() -> T:
            assert self._fs is not None
            return await fn(self._fs)

        try:
            return self._call(run)
        except pyfuse3.FUSEError as exc:
            raise OSError(exc.errno, os.strerror(exc.errno)) from None

    @staticmethod
    async def _inode(fs: Fs, c: str, path: str) -> int:
        inode = pyfuse3.ROOT_INODE
        for part in [c, *filter(None, path.split("/"))]:
            entry = await fs.lookup(inode, part)
            if not entry.st_ino:
                raise pyfuse3.FUSEError(errno.ENOENT)
            inode = entry.st_ino
        return int(inode)

    async def _parent(self, fs: Fs, c: str, path: str) -> tuple[int, bytes]:
        head, name = posixpath.split(path)
        return await self._inode(fs, c, head), name.encode()

    # the operations
    def write(self, c: str, path: str, data: bytes, *, how: str, offset: int = 0) -> None:
        async def run(fs: Fs) -> None:
            flags = _write_flags(how)
            if how == "trunc":
                parent, name = await self._parent(fs, c, path)
                info, _ = await fs.ops.create(parent, name, 0o644, flags, CTX)
            else:
                info = await fs.ops.open(await self._inode(fs, c, path), flags, CTX)
            try:
                await fs.ops.write(info.fh, offset, data)
                if how == "at":
                    await fs.ops.fsync(info.fh, False)
                await fs.ops.flush(info.fh)
            finally:
                await fs.ops.release(info.fh)

        self._op(run)

    def truncate(self, c: str, path: str, size: int) -> None:
        async def run(fs: Fs) -> None:
            attr = pyfuse3.EntryAttributes()
            attr.st_size = size
            inode = await self._inode(fs, c, path)
            await fs.ops.setattr(inode, attr, setattr_fields("size"), None, CTX)

        self._op(run)

    def read(self, c: str, path: str) -> bytes:
        async def run(fs: Fs) -> bytes:
            return await fs.read_file(await self._inode(fs, c, path))

        return self._op(run)

    def size(self, c: str, path: str) -> int:
        async def run(fs: Fs) -> int:
            return int((await fs.ops.getattr(await self._inode(fs, c, path), CTX)).st_size)

        return self._op(run)

    def listdir(self, c: str, path: str) -> set[str]:
        async def run(fs: Fs) -> set[str]:
            return set(await fs.listing(await self._inode(fs, c, path)))

        return self._op(run)

    def exists(self, c: str, path: str) -> bool:
        try:
            self._op(lambda fs: self._inode(fs, c, path))
        except FileNotFoundError:
            return False
        return True

    def rename(self, c: str, path: str, c2: str, path2: str) -> None:
        async def run(fs: Fs) -> None:
            old, name = await self._parent(fs, c, path)
            new, name2 = await self._parent(fs, c2, path2)
            await fs.ops.rename(old, name, new, name2, 0, CTX)

        self._op(run)

    def unlink(self, c: str, path: str) -> None:
        async def run(fs: Fs) -> None:
            await fs.ops.unlink(*await self._parent(fs, c, path), CTX)

        self._op(run)

    def mkdir(self, c: str, path: str) -> None:
        async def run(fs: Fs) -> None:
            await fs.ops.mkdir(*await self._parent(fs, c, path), 0o755, CTX)

        self._op(run)

    def rmdir(self, c: str, path: str) -> None:
        async def run(fs: Fs) -> None:
            await fs.ops.rmdir(*await self._parent(fs, c, path), CTX)

        self._op(run)

    def settle(self, c: str) -> None:
        """Out-of-band changes show once the listing is looked at again: forget it now."""

        async def run(fs: Fs) -> None:
            cid = (await self._containers()).get(c)
            if cid is not None:
                fs.ns.invalidate_listing(cid)

        self._op(run)

    async def _containers(self) -> dict[str, Any]:
        state = (await self._http.get("/_emulator/state")).json()
        return {item["name"]: item["id"] for item in state["containers"]}

    def remount(self) -> bool:
        drained = self._call(self._stop_fs, 0.5)
        self._call(self._start_fs)
        return drained

    def finish(self) -> bool:
        return self._call(self._stop_fs, 30.0) if self._fs is not None else True

    def close(self) -> None:
        """End the mount without waiting for its uploads."""
        if self._fs is not None and self._thread.is_alive():
            self._call(self._stop_fs, 0.0)

    def dispose(self) -> None:
        """End the trio loop (after ``close``)."""
        if self._stop is not None and self._thread.is_alive():
            self._call(self._set_stop)
        self._thread.join(30)

    async def _set_stop(self) -> None:
        assert self._stop is not None
        self._stop.set()

    # the server
    def request(self, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
        async def run() -> tuple[int, bytes]:
            response = await self._http.request(
                method, url, json=body, headers={"Authorization": "Bearer sk-test"}
            )
            return response.status_code, response.content

        return self._call(run)

    def admin(self, method: str, url: str, body: Any = None) -> Any:
        async def run() -> Any:
            response = await self._http.request(method, f"/_emulator{url}", json=body)
            response.raise_for_status()
            return response.json()

        return self._call(run)


# -- a real kernel mount ----------------------------------------------------------------------


class MountDriver:
    """Real syscalls on a daemon in a subprocess, over an emulator in a subprocess."""

    kernel = True
    # how long an out-of-band change may take to show: the metadata and negative TTLs given
    # below, plus the kernel's own entry and attribute cache (about 1 s)
    SETTLE = 5.0

    def __init__(self, tmp_path: Path, emulator: EmulatorProcess) -> None:
        self._tmp = tmp_path
        self._emulator = emulator
        self._state = tmp_path / "state"
        self._cache = tmp_path / "cache"
        self._mount: MountProcess | None = self._start()

    def _start(self) -> MountProcess:
        return start_mount(
            self._emulator,
            self._tmp,
            "--metadata-ttl",
            "0.1",
            "--negative-ttl",
            "0.1",
            "--drain-timeout",
            "30",
            state_dir=self._state,
            cache_dir=self._cache,
        )

    def _p(self, c: str, path: str = "") -> Path:
        assert self._mount is not None
        return self._mount.path(c, *filter(None, path.split("/")))

    def write(self, c: str, path: str, data: bytes, *, how: str, offset: int = 0) -> None:
        fd = os.open(self._p(c, path), _write_flags(how), 0o644)
        try:
            if how == "at":
                os.pwrite(fd, data, offset)
                os.fsync(fd)
            else:
                os.write(fd, data)
        finally:
            os.close(fd)

    def truncate(self, c: str, path: str, size: int) -> None:
        os.truncate(self._p(c, path), size)

    def read(self, c: str, path: str) -> bytes:
        return self._p(c, path).read_bytes()

    def size(self, c: str, path: str) -> int:
        return self._p(c, path).stat().st_size

    def listdir(self, c: str, path: str) -> set[str]:
        return set(os.listdir(self._p(c, path)))

    def exists(self, c: str, path: str) -> bool:
        return os.path.lexists(self._p(c, path))

    def rename(self, c: str, path: str, c2: str, path2: str) -> None:
        os.rename(self._p(c, path), self._p(c2, path2))

    def unlink(self, c: str, path: str) -> None:
        os.unlink(self._p(c, path))

    def mkdir(self, c: str, path: str) -> None:
        os.mkdir(self._p(c, path))

    def rmdir(self, c: str, path: str) -> None:
        os.rmdir(self._p(c, path))

    def settle(self, c: str) -> None:
        time.sleep(0.15)  # past the metadata TTL; the caller polls for the kernel's caches

    def remount(self) -> bool:
        drained = self.finish()
        self._mount = self._start()
        return drained

    def finish(self) -> bool:
        """Unmount (SIGTERM drains the uploads); True if the daemon ended cleanly."""
        if self._mount is None:
            return True
        code = self._mount.unmount(timeout=60)
        self._mount = None
        return code == 0

    def close(self) -> None:
        self.finish()

    def dispose(self) -> None:
        pass

    def request(self, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self._emulator.root_url}{url}",
            data=data,
            method=method,
            headers={"Authorization": "Bearer sk-test", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            body_ = exc.read()
            exc.close()
            return exc.code, body_
        except (urllib.error.URLError, ConnectionError, OSError):
            return 0, b""  # a dropped connection (fault rule): the caller retries

    def admin(self, method: str, url: str, body: Any = None) -> Any:
        return self._emulator.admin(method, url, body)
