"""API data: frozen dataclasses for containers, files and list pages, and the rules an
answer must meet before anything is built from it. No I/O. Shared by all layers.

Every server answer is input: ``from_json`` raises ``ValueError`` (or ``KeyError``) for an
object that breaks a rule (an id that is not a plain token, a size that is no size, a field
of the wrong type), and ``Page.from_json`` keeps the good items of a list while setting the
bad ones aside, each with its reason, so that one bad item spoils only itself.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NewType, TypeVar

ContainerId = NewType("ContainerId", str)
FileId = NewType("FileId", str)

T = TypeVar("T")

#: What an id (container, file, page cursor) must look like before it goes into a URL: a
#: plain token, so never ``.``/``..`` (which httpx would resolve as a dot segment), ``/``,
#: ``%``, ``?`` or ``#``. Real ids are ``cntr_``/``cfile_`` + hex.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

#: The largest size believed in a listing: 2**53 - 1, the largest integer JSON carries exactly
#: (and far below st_size's 2**63); ``1e30`` or a negative size marks the item bad.
MAX_LISTED_BYTES = (1 << 53) - 1
#: The latest time (Unix seconds) believed: its nanoseconds still fit st_mtime's int64.
MAX_TIMESTAMP = 9_000_000_000


def plain_id(value: object) -> bool:
    """Whether ``value`` is an id safe to put in a URL path segment."""
    return isinstance(value, str) and _PLAIN_ID.fullmatch(value) is not None


def _id(data: Mapping[str, Any], key: str = "id") -> str:
    value = data[key]
    if not plain_id(value):
        raise ValueError(f"{key} {value!r} is not a plain id")
    return str(value)


def _opt_int(value: Any, *, field: str = "value", upper: int | None = None) -> int | None:
    """An integer field: None when absent or null; ValueError when it is no integer, negative,
    or past ``upper`` (an integral float such as ``5.0`` counts as the integer)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} {value!r} is not a number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{field} {value!r} is not an integer")
    number = int(value)
    if number < 0 or (upper is not None and number > upper):
        raise ValueError(f"{field} {value!r} is out of range")
    return number


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} {value!r} is not a string")
    return value


@dataclass(frozen=True, slots=True)
class ExpiresAfter:
    anchor: str
    minutes: int


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """A container's outbound network access: ``disabled``, or an ``allowlist`` of domains."""

    type: str
    allowed_domains: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.type == "allowlist":
            return {"type": "allowlist", "allowed_domains": list(self.allowed_domains)}
        return {"type": self.type}

    def describe(self) -> str:
        """``disabled``, or ``allowlist:a.com,b.org`` (the form ``containerfs new`` takes)."""
        if self.type == "allowlist":
            return "allowlist:" + ",".join(self.allowed_domains)
        return self.type

    @classmethod
    def from_json(cls, data: object) -> NetworkPolicy | None:
        """The policy of a container object; None when absent or without a string ``type``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
            return None
        domains = data.get("allowed_domains")
        if not isinstance(domains, list):
            domains = []
        return cls(str(data["type"]), tuple(d for d in domains if isinstance(d, str)))


@dataclass(frozen=True, slots=True)
class Container:
    id: ContainerId
    name: str
    created_at: int
    status: str
    last_active_at: int | None = None
    expires_after: ExpiresAfter | None = None
    memory_limit: str | None = None
    network_policy: NetworkPolicy | None = None

    @property
    def expired(self) -> bool:
        return self.status == "expired"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Container:
        exp = data.get("expires_after")
        return cls(
            id=ContainerId(_id(data)),
            name=_opt_str(data, "name") or "",
            created_at=_opt_int(data.get("created_at"), field="created_at", upper=MAX_TIMESTAMP)
            or 0,
            status=_opt_str(data, "status") or "running",
            last_active_at=_opt_int(
                data.get("last_active_at"), field="last_active_at", upper=MAX_TIMESTAMP
            ),
            expires_after=(
                ExpiresAfter(str(exp.get("anchor", "last_active_at")), int(exp.get("minutes", 0)))
                if isinstance(exp, Mapping)
                else None
            ),
            memory_limit=data.get("memory_limit")
            if isinstance(data.get("memory_limit"), str)
            else None,
            network_policy=NetworkPolicy.from_json(data.get("network_policy")),
        )


@dataclass(frozen=True, slots=True)
class ContainerFile:
    id: FileId
    container_id: ContainerId
    path: str
    bytes: int | None
    created_at: int
    source: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerFile:
        path = _opt_str(data, "path")
        if not path:
            raise ValueError("no path")
        container_id = _opt_str(data, "container_id")
        if container_id and not plain_id(container_id):
            raise ValueError(f"container_id {container_id!r} is not a plain id")
        return cls(
            id=FileId(_id(data)),
            # one string per container and per source, however many files are listed
            container_id=ContainerId(sys.intern(container_id or "")),
            path=path,
            bytes=_opt_int(data.get("bytes"), field="bytes", upper=MAX_LISTED_BYTES),
            created_at=_opt_int(data.get("created_at"), field="created_at", upper=MAX_TIMESTAMP)
            or 0,
            source=sys.intern(_opt_str(data, "source") or "user"),
        )


@dataclass(frozen=True, slots=True)
class ApiFile:
    """A file of the Files API (``/v1/files``): what ``containerfs import`` copies in."""

    id: str
    filename: str
    bytes: int | None
    purpose: str
    created_at: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApiFile:
        filename = data.get("filename")
        if not isinstance(filename, str):
            raise ValueError("a file object without a filename")
        return cls(
            id=_id(data),
            filename=filename,
            bytes=_opt_int(data.get("bytes"), field="bytes", upper=MAX_LISTED_BYTES),
            purpose=_opt_str(data, "purpose") or "",
            created_at=_opt_int(data.get("created_at"), field="created_at", upper=MAX_TIMESTAMP)
            or 0,
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    data: tuple[T, ...]
    first_id: str | None
    last_id: str | None  # the cursor for the next page: the answer's, else its last item's id
    has_more: bool
    rejected: tuple[str, ...] = ()  # one line per item set aside: its id (if any) and why

    @classmethod
    def from_json(cls, data: Mapping[str, Any], item: Callable[[Mapping[str, Any]], T]) -> Page[T]:
        """A list answer (``{"data", "first_id", "last_id", "has_more"}``) with its items parsed.

        ValueError when the answer is no list answer (no ``data`` list, as in an error
        envelope sent with a 200; a ``has_more`` that is not a boolean; a cursor that is not
        a plain id). An item that ``item`` refuses is set aside in ``rejected``.
        """
        raw = data.get("data")
        if not isinstance(raw, list):
            raise ValueError("a list answer without a data list")
        has_more = data.get("has_more", False)
        if not isinstance(has_more, bool):
            raise ValueError(f"has_more {has_more!r} is not a boolean")
        items: list[T] = []
        rejected: list[str] = []
        for x in raw:
            try:
                if not isinstance(x, Mapping):
                    raise ValueError(f"item {x!r:.60} is not an object")
                items.append(item(x))
            except (ValueError, KeyError, TypeError) as exc:
                ident = x.get("id") if isinstance(x, Mapping) else None
                rejected.append(f"{ident!r:.80}: {exc}")
        first, last = data.get("first_id"), data.get("last_id")
        if last is None and raw and isinstance(raw[-1], Mapping):
            last = raw[-1].get("id")
        for cursor in (first, last):
            if cursor is not None and not plain_id(cursor):
                raise ValueError(f"cursor {cursor!r:.80} is not a plain id")
        return cls(
            data=tuple(items),
            first_id=first,
            last_id=last,
            has_more=has_more,
            rejected=tuple(rejected),
        )
