"""The status snapshot: one typed record the daemon writes to ``status.json`` and the command
line (``containerfs status``, ``unmount``) reads back.

Every section is the frozen statistics dataclass of its layer, so a key the CLI reads is a
field the daemon writes, checked by mypy. Transfers in flight and pending uploads name the
file by its path in the mount (``Places`` turns the API's container ids and file ids into
it). The file is input when read back (an older daemon, a truncated write):
``Status.from_json`` validates it and raises ``StatusError``, never a ``KeyError`` or
``TypeError``; a field an older daemon did not write takes its default when it has one.
Layer: daemon; imports no FUSE and no HTTP code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, get_type_hints

from containerfs.errors import StatusError
from containerfs.models import ContainerId, FileId
from containerfs.snapshots import (
    ClientStats,
    NamespaceStats,
    PendingItem,
    ReaderStats,
    SizeStats,
    TransferStats,
    WriterStats,
)

T = TypeVar("T")


@dataclass(frozen=True)
class InFlight:
    """An upload or download under way."""

    direction: str  # "upload" or "download"
    path: str  # the file in the mount
    done: int  # bytes sent or received so far
    total: int | None  # None: not known (yet)
    rate: float  # bytes per second, recently
    elapsed: float  # seconds since it started


@dataclass(frozen=True)
class Pending:
    """An upload not done yet: deferred, failed (retried later), or left by a previous mount."""

    path: str  # the file in the mount
    container_id: str
    name: str  # its path in the container
    bytes: int
    state: str  # "deferred" or "failed"
    error: str | None


@dataclass(frozen=True)
class Status:
    pid: int
    mountpoint: str
    endpoint: str
    started: float  # Unix time the daemon started
    api: ClientStats
    cache: ReaderStats | None  # None until the layers are built
    writer: WriterStats | None
    namespace: NamespaceStats | None
    sizes: SizeStats | None  # sizes of files listed without one
    pending: tuple[Pending, ...]
    in_flight: tuple[InFlight, ...] = ()

    def waiting_for(self) -> list[Pending | InFlight]:
        """What an unmount waits for: uploads under way, then pending ones not under way."""
        uploading = [t for t in self.in_flight if t.direction == "upload"]
        busy = {t.path for t in uploading}
        return [*uploading, *(p for p in self.pending if p.path not in busy)]

    def to_json(self) -> str:
        return json.dumps(_jsonable(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Status:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise StatusError(f"status file is not JSON: {err}") from None
        return _load(cls, data, "status")


class Places(Protocol):
    """Where the API's files show in the mount (the namespace answers from its caches)."""

    def shown_path(self, cid: ContainerId, path: str) -> str: ...

    def file_path(self, cid: ContainerId, fid: FileId) -> str | None: ...


def transfers_in_mount(
    transfers: Iterable[TransferStats], places: Places, mountpoint: str
) -> tuple[InFlight, ...]:
    """The client's transfers, named by their paths in the mount (a download of a file no
    cached listing shows is named by its id, under its container's directory)."""
    out = []
    for t in transfers:
        cid = ContainerId(t.container_id)
        name = t.name
        if t.direction == "download":
            name = places.file_path(cid, FileId(t.name)) or t.name
        path = os.path.join(mountpoint, places.shown_path(cid, name))
        out.append(InFlight(t.direction, path, t.done, t.total, t.rate, t.elapsed))
    return tuple(out)


def pending_in_mount(
    items: Iterable[PendingItem], places: Places, mountpoint: str
) -> tuple[Pending, ...]:
    """The writer's pending uploads, named by their paths in the mount."""
    return tuple(
        Pending(
            path=os.path.join(mountpoint, places.shown_path(ContainerId(i.container_id), i.path)),
            container_id=i.container_id,
            name=i.path,
            bytes=i.bytes,
            state=i.state,
            error=i.error,
        )
        for i in items
    )


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _load(cls: type[T], data: object, where: str) -> T:
    """An instance of the dataclass ``cls`` from JSON ``data``, checked field by field."""
    if not isinstance(data, Mapping):
        raise StatusError(f"{where}: expected an object")
    hints = get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data and f.default is not dataclasses.MISSING:
            values[f.name] = f.default  # a field added since the daemon that wrote it
            continue
        if f.name not in data:
            raise StatusError(f"{where}: missing {f.name!r}")
        values[f.name] = _value(hints[f.name], data[f.name], f"{where}.{f.name}")
    return cls(**values)


def _value(hint: Any, value: object, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        [inner] = [o for o in options if o is not type(None)]
        return _value(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return _load(hint, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise StatusError(f"{where}: expected a list")
        return tuple(_value(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Mapping or hint is Mapping:
        if not isinstance(value, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value.values()
        ):
            raise StatusError(f"{where}: expected an object of counts")
        return {str(k): v for k, v in value.items()}
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    raise StatusError(f"{where}: expected {getattr(hint, '__name__', hint)}")
