"""The control channel: how ``containerfs new`` and ``containerfs import`` ask the daemon that
serves a mount to act, so that they go through its namespace (and its caches stay right)
instead of around it.

A unix socket ``control`` in the mount's run directory (found from the mountpoint the way
``containerfs status`` finds the daemon), mode 0600 in a 0700 directory, and answering only
its own user (or root). One JSON request per connection, one JSON reply, then the daemon
closes it::

    {"command": "new", "name": "NAME", "file_ids": [...], "memory_limit": "4g",
     "expires_after_minutes": 30, "network_policy": {"type": "disabled"}, "skills": [...]}
    {"command": "import", "directory": ["CONTAINER", "SUBDIR"], "file_id": "file-…",
     "name": "NAME" | null}
    {"command": "sync", "path": ["CONTAINER", "SUBDIR"]}  (waits for the uploads under it)
    -> {"ok": true, "path": "CONTAINER/SUBDIR/NAME"} | {"ok": false, "error": "one line"}

The requests are validated on both sides (the client's options, and the daemon's input).
Layer: daemon; no FUSE (the daemon wires the handler), no HTTP, no trio: the command line
imports this module, and ``control_server.py`` the daemon's side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from containerfs.errors import ControlError

if TYPE_CHECKING:
    from containerfs.models import NetworkPolicy

# config, models and paths are loaded by the checks that use them: `containerfs sync` runs
# after every batch of writes in scripts, and starts without them (half its start-up time)

log = logging.getLogger(__name__)

SOCKET_NAME = "control"
MAX_MESSAGE = 64 << 10
READ_DEADLINE = 10.0  # a client that connects and says nothing is dropped after this
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes with the NUL; keep a margin
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
_SKILL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


# ---- requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewContainer:
    """``containerfs new``: one ``POST /containers`` with these options."""

    name: str
    file_ids: tuple[str, ...] = ()
    memory_limit: str | None = None
    expires_after_minutes: int | None = None
    network_policy: NetworkPolicy | None = None
    skills: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from containerfs.config import MEMORY_LIMITS

        check_container_name(self.name)
        for fid in self.file_ids:
            check_file_id(fid)
        if self.memory_limit is not None and self.memory_limit not in MEMORY_LIMITS:
            raise ControlError(
                f"bad memory limit {self.memory_limit!r}: one of {', '.join(MEMORY_LIMITS)}"
            )
        minutes = self.expires_after_minutes
        if minutes is not None and (isinstance(minutes, bool) or minutes < 1):
            raise ControlError(f"bad expiry {minutes!r}: a positive number of minutes")
        for skill in self.skills:
            if not _SKILL_ID.fullmatch(skill):
                raise ControlError(f"bad skill id {skill!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "new",
            "name": self.name,
            "file_ids": list(self.file_ids),
            "memory_limit": self.memory_limit,
            "expires_after_minutes": self.expires_after_minutes,
            "network_policy": self.network_policy.to_json() if self.network_policy else None,
            "skills": list(self.skills),
        }


@dataclass(frozen=True)
class ImportFile:
    """``containerfs import``: copy a Files-API file into a directory of a container."""

    directory: tuple[str, ...]  # path components below the mountpoint: container, subdirs
    file_id: str
    name: str | None = None  # None: the Files-API filename (one more call to learn it)

    def __post_init__(self) -> None:
        if not self.directory:
            raise ControlError("import into a container's directory, not the mount's root")
        for part in self.directory:
            check_file_name(part, what="directory name")
        check_file_id(self.file_id)
        if self.name is not None:
            check_file_name(self.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "import",
            "directory": list(self.directory),
            "file_id": self.file_id,
            "name": self.name,
        }


@dataclass(frozen=True)
class SyncPath:
    """``containerfs sync``: wait until every upload under ``path`` (components below the
    mountpoint; none for the whole mount) is on the server."""

    path: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for part in self.path:
            check_file_name(part, what="path component")

    def to_json(self) -> dict[str, Any]:
        return {"command": "sync", "path": list(self.path)}


Request = NewContainer | ImportFile | SyncPath


def check_file_id(fid: str) -> None:
    from containerfs.models import plain_id

    # ids go into request bodies and URLs: plain tokens only (no '/', no '..')
    if not plain_id(fid):
        raise ControlError(f"not a file id: {fid!r}")


def check_file_name(name: str, *, what: str = "file name") -> None:
    from containerfs.paths import NAME_MAX

    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ControlError(f"not a usable {what}: {name!r}")
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate that JSON can carry: no file name
        raise ControlError(f"not a usable {what}: {name!r}") from None
    if len(raw) > NAME_MAX:
        raise ControlError(f"{what} longer than {NAME_MAX} bytes: {name[:40]!r}…")


def check_container_name(name: str) -> None:
    from containerfs.paths import reserved_container_name

    # the directory shows the name as it is: refuse what it could not show unchanged
    check_file_name(name, what="container name")
    if reserved_container_name(name):  # as mkdir refuses it: shown as NAME~ID, never as NAME
        raise ControlError(f"not a usable container name: {name!r} looks like an id or NAME~ID")


def parse_network(spec: str) -> NetworkPolicy:
    """``disabled``, or ``allow:DOMAIN,DOMAIN`` (also ``allowlist:…``, as the xattr shows)."""
    from containerfs.models import NetworkPolicy

    if spec == "disabled":
        return NetworkPolicy("disabled")
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("allow", "allowlist"):
        raise ControlError(f"bad network policy {spec!r}: 'disabled' or 'allow:DOMAIN,DOMAIN'")
    domains = tuple(d.strip() for d in rest.split(","))
    if not domains or not all(domains):
        raise ControlError(f"bad network policy {spec!r}: an empty domain")
    for domain in domains:
        if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
            raise ControlError(f"bad network policy {spec!r}: {domain!r} is not a domain")
    return NetworkPolicy("allowlist", domains)


def request_from_json(data: object) -> Request:
    """A request as the daemon receives it: checked like the client's options."""
    if not isinstance(data, Mapping):
        raise ControlError("a request is a JSON object")
    try:
        if data.get("command") == "new":
            policy = data.get("network_policy")
            return NewContainer(
                name=_typed(data, "name", str),
                file_ids=tuple(_strings(data, "file_ids")),
                memory_limit=_typed(data, "memory_limit", str, optional=True),
                expires_after_minutes=_typed(data, "expires_after_minutes", int, optional=True),
                network_policy=None if policy is None else _policy(policy),
                skills=tuple(_strings(data, "skills")),
            )
        if data.get("command") == "sync":
            return SyncPath(path=tuple(_strings(data, "path")))
        if data.get("command") == "import":
            return ImportFile(
                directory=tuple(_strings(data, "directory")),
                file_id=_typed(data, "file_id", str),
                name=_typed(data, "name", str, optional=True),
            )
    except (TypeError, KeyError) as err:
        raise ControlError(f"malformed request: {err}") from None
    raise ControlError(f"unknown command {data.get('command')!r}")


def _typed(data: Mapping[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{key}: expected {kind.__name__}")
    return value


def _strings(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key}: expected a list of strings")
    return value


def _policy(data: object) -> NetworkPolicy:
    from containerfs.models import NetworkPolicy

    policy = NetworkPolicy.from_json(data)
    if policy is None or policy.type not in ("disabled", "allowlist"):
        raise TypeError("network_policy: expected disabled or allowlist")
    if policy.type == "disabled":
        return policy
    return parse_network("allow:" + ",".join(policy.allowed_domains))


# ---- the socket ----------------------------------------------------------------------------


def socket_path(run_dir: Path) -> Path:
    return run_dir / SOCKET_NAME


@contextlib.contextmanager
def addressable(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits a unix socket address: the path itself, or, when it is
    too long (deep state directories), the same file through ``/proc/self/fd`` of its
    directory."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def call(path: Path, request: Request, *, timeout: float) -> str:
    """Send ``request`` to the daemon listening at ``path`` (blocking; for the command line)
    and return the path it answered; any failure is a one-line ``ControlError``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with addressable(path) as address:
            sock.connect(address)
        sock.sendall(json.dumps(request.to_json()).encode())
        sock.shutdown(socket.SHUT_WR)
        raw = bytearray()
        while chunk := sock.recv(MAX_MESSAGE):
            raw += chunk
            if len(raw) > MAX_MESSAGE:
                break
    except TimeoutError:
        raise ControlError(f"the daemon did not answer within {timeout:.0f} s") from None
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError("no daemon listens on this mount's control socket") from None
    except OSError as err:
        raise ControlError(f"cannot talk to the daemon: {err.strerror or err}") from None
    finally:
        sock.close()
    return _reply(bytes(raw))


def _reply(raw: bytes) -> str:
    try:
        reply = json.loads(raw)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise ControlError("the daemon gave no usable answer")
    if reply.get("ok") is True and isinstance(reply.get("path"), str):
        return str(reply["path"])
    error = reply.get("error")
    if not isinstance(error, str) or not error.strip():
        raise ControlError("the daemon failed without saying why")
    raise ControlError(" ".join(error.split()))  # one line, whatever the server said
