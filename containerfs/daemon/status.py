"""The status snapshot: one typed record the daemon writes to ``status.json`` and the command
line (``containerfs status``, ``unmount``) reads back.

Every section is the frozen statistics dataclass of its layer, so a key the CLI reads is a
field the daemon writes, checked by mypy. The file is input when read back (an older daemon, a
truncated write): ``Status.from_json`` validates it and raises ``StatusError``, never a
``KeyError`` or ``TypeError``. Layer: daemon; imports no FUSE and no HTTP code.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

from containerfs.config import ClientStats
from containerfs.errors import StatusError
from containerfs.fs.sizes import SizeStats
from containerfs.ns.namespace import NamespaceStats
from containerfs.read.reader import ReaderStats
from containerfs.write.queue import PendingItem
from containerfs.write.writer import WriterStats

T = TypeVar("T")


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
    pending: tuple[PendingItem, ...]

    def to_json(self) -> str:
        return json.dumps(_jsonable(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Status:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise StatusError(f"status file is not JSON: {err}") from None
        return _load(cls, data, "status")


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
