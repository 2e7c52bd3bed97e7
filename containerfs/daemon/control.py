"""The daemon's control channel: a unix socket in the mount's run directory, one JSON request
and one JSON answer per connection, each a line.

``{"op": "sync", "path": "box/dir"}`` (a path relative to the mountpoint, "" for all of it)
waits until every upload under the path is on the server and answers
``{"ok": true|false, "failed": [{"path": ..., "error": ...}], "error": ...}``. The server side
runs on the daemon's trio loop (``serve_control``); the client side (``rundir.control_request``)
is plain blocking code for the CLI. Layer: daemon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from containerfs.daemon.rundir import SOCKET_NAME as SOCKET_NAME
from containerfs.daemon.rundir import short_name

log = logging.getLogger(__name__)

_MAX_REQUEST = 64 << 10

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve_control(path: Path, handler: Handler) -> None:
    """Answer requests on the unix socket at ``path`` until cancelled. The channel is a
    convenience: a socket that cannot be made is logged, and the mount goes on without it."""
    try:
        listener = await _listen(path)
    except OSError as err:
        log.error("no control channel (containerfs sync will not work): %s", err)
        return

    async def answer(stream: trio.SocketStream) -> None:
        await _answer(stream, handler)

    try:
        await trio.serve_listeners(answer, [listener])
    finally:
        path.unlink(missing_ok=True)


async def _answer(stream: trio.abc.Stream, handler: Handler) -> None:
    async with stream:
        try:
            request = await _read_line(stream)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            answer = await handler(request)
        except ValueError as err:
            answer = {"ok": False, "error": f"bad request: {err}", "failed": []}
        except Exception as err:  # one bad request must not end the channel
            log.exception("control request failed")
            answer = {"ok": False, "error": str(err), "failed": []}
        # the asker may have gone away (a ^C of `containerfs sync`)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(json.dumps(answer).encode() + b"\n")


async def _read_line(stream: trio.abc.Stream) -> Any:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_REQUEST:
            raise ValueError("request too long")
    return json.loads(data.split(b"\n", 1)[0] or b"null")


async def _listen(path: Path) -> trio.SocketListener:
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with short_name(path) as name:
        await sock.bind(name)
    path.chmod(0o600)  # only the mounting user may ask the daemon anything
    sock.listen(16)
    return trio.SocketListener(sock)
