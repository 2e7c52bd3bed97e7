"""The daemon's side of the control channel (``control.py`` has the protocol): a unix socket
served in the daemon's trio loop, one JSON request per connection, answered by the handler the
daemon wires. Layer: daemon.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from containerfs.daemon.control import (
    MAX_MESSAGE,
    READ_DEADLINE,
    Request,
    addressable,
    request_from_json,
)
from containerfs.errors import ContainerFsError, ControlError

log = logging.getLogger(__name__)


Handler = Callable[[Request], Awaitable[str]]


async def serve_control(
    path: Path, handle: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer requests on the socket at ``path`` until cancelled; ``handle`` carries one out
    and returns the new path (relative to the mountpoint) or raises ``ContainerFsError``.

    Best effort: a socket that cannot be made is logged, and the mount serves on without it
    (``new`` and ``import`` then say that no daemon answers)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a daemon that died: nothing listens there
        with addressable(path) as address:
            await sock.bind(address)
        os.chmod(path, 0o600)
        sock.listen(16)
    except OSError as err:
        log.error("no control socket at %s (%s): new and import cannot reach this mount", path, err)
        sock.close()
        task_status.started()
        return
    try:
        listeners = [trio.SocketListener(sock)]
        task_status.started()
        await trio.serve_listeners(functools.partial(_serve_one, handle=handle), listeners)
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()


def _peer_allowed(stream: trio.SocketStream) -> bool:
    creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


async def _serve_one(stream: trio.SocketStream, *, handle: Handler) -> None:
    async with stream:
        if not _peer_allowed(stream):
            return
        reply: dict[str, Any]
        try:
            with trio.fail_after(READ_DEADLINE):
                raw = await _read_all(stream)
            request = request_from_json(_decode(raw))
            reply = {"ok": True, "path": await handle(request)}
        except trio.TooSlowError:
            reply = {"ok": False, "error": "the request did not arrive in time"}
        except ContainerFsError as err:
            reply = {"ok": False, "error": str(err)}
        except Exception as err:  # never let one request end the daemon
            log.exception("control request failed")
            reply = {"ok": False, "error": f"internal error: {err!r}"}
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(json.dumps(reply).encode() + b"\n")


async def _read_all(stream: trio.SocketStream) -> bytes:
    chunks = bytearray()
    while True:
        data = await stream.receive_some(MAX_MESSAGE)
        if not data:
            return bytes(chunks)
        chunks += data
        if len(chunks) > MAX_MESSAGE:
            raise ControlError("request too large")


def _decode(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        raise ControlError("a request is one JSON object") from None
