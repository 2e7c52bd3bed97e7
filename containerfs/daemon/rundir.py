"""Where a mount keeps its files (pid, log, status, control socket), and the client side of
its control channel: light enough for the CLI to load without the daemon's layers.
Layer: daemon.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"


def run_dir(state_dir: Path, mountpoint: Path) -> Path:
    """Where a mount keeps its pid, log and status: one directory per mountpoint."""
    real = os.path.realpath(mountpoint)
    slug = hashlib.sha256(real.encode()).hexdigest()[:16]
    return state_dir / "mounts" / slug


@contextlib.contextmanager
def short_name(path: Path) -> Iterator[str]:
    """A name for ``path`` short enough for a unix socket (108 bytes at most): through an fd
    of its directory, as run directories under a deep state directory are longer."""
    dirfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{dirfd}/{path.name}"
    finally:
        os.close(dirfd)


def control_request(path: Path, message: dict[str, Any]) -> dict[str, Any]:
    """Send ``message`` to the daemon listening at ``path``; its answer (waits for it).

    Raises OSError if nobody listens there, ValueError if the answer is not a JSON object.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        with short_name(path) as name:
            sock.connect(name)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data or b"null")
    if not isinstance(answer, dict):
        raise ValueError("the daemon's answer is not a JSON object")
    return answer
