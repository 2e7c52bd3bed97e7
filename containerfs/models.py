"""API data: frozen dataclasses for containers, files and list pages. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NewType, TypeVar

ContainerId = NewType("ContainerId", str)
FileId = NewType("FileId", str)

T = TypeVar("T")


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ExpiresAfter:
    anchor: str
    minutes: int


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
            id=ContainerId(str(data["id"])),
            name=str(data.get("name") or ""),
            created_at=_opt_int(data.get("created_at")) or 0,
            status=str(data.get("status") or "running"),
            last_active_at=_opt_int(data.get("last_active_at")),
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


@dataclass(frozen=True)
class ContainerFile:
    id: FileId
    container_id: ContainerId
    path: str
    bytes: int | None
    created_at: int
    source: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerFile:
        return cls(
            id=FileId(str(data["id"])),
            container_id=ContainerId(str(data.get("container_id") or "")),
            path=str(data.get("path") or ""),
            bytes=_opt_int(data.get("bytes")),
            created_at=_opt_int(data.get("created_at")) or 0,
            source=str(data.get("source") or "user"),
        )


@dataclass(frozen=True)
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
            id=str(data["id"]),
            filename=filename,
            bytes=_opt_int(data.get("bytes")),
            purpose=str(data.get("purpose") or ""),
            created_at=_opt_int(data.get("created_at")) or 0,
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    data: tuple[T, ...]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any], item: Callable[[Mapping[str, Any]], T]) -> Page[T]:
        """A list answer (``{"data", "first_id", "last_id", "has_more"}``) with its items parsed."""
        raw = data.get("data")
        items = (
            tuple(item(x) for x in raw if isinstance(x, Mapping)) if isinstance(raw, list) else ()
        )
        first, last = data.get("first_id"), data.get("last_id")
        return cls(
            data=items,
            first_id=str(first) if first is not None else None,
            last_id=str(last) if last is not None else None,
            has_more=bool(data.get("has_more")),
        )
