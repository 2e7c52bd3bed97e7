"""The emulator's records: containers, container files and Files-API files as the store
holds them and as the API shows them (``to_json``), a page of them, and the ids the service
gives them. Plain frozen data, below ``store`` (which reads and writes them in SQLite);
knows nothing about SQL or HTTP.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Order = Literal["asc", "desc"]
JsonObject = dict[str, Any]


def new_container_id() -> str:
    return "cntr_" + secrets.token_hex(24)


def new_file_id() -> str:
    return "cfile_" + secrets.token_hex(16)


_ID_ALPHABET = string.ascii_letters + string.digits


def new_api_file_id() -> str:
    """A Files-API id: ``file-`` and 22 letters and digits, as the service's ids look."""
    return "file-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


@dataclass(frozen=True)
class ContainerRow:
    seq: int
    id: str
    name: str
    created_at: int
    last_active_at: float
    expires_minutes: int
    memory_limit: str
    network_policy: JsonObject
    status: str

    @property
    def expired(self) -> bool:
        return self.status == "expired"

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "object": "container",
            "name": self.name,
            "created_at": self.created_at,
            "status": self.status,
            "last_active_at": int(self.last_active_at),
            "expires_after": {"anchor": "last_active_at", "minutes": self.expires_minutes},
            "memory_limit": self.memory_limit,
            "network_policy": self.network_policy,
        }


@dataclass(frozen=True)
class FileRow:
    seq: int
    id: str
    container_id: str
    created_at: int
    size: int
    report_bytes: bool
    path: str
    source: str

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "object": "container.file",
            "container_id": self.container_id,
            "created_at": self.created_at,
            "bytes": self.size if self.report_bytes else None,
            "path": self.path,
            "source": self.source,
        }


@dataclass(frozen=True)
class ApiFileRow:
    """A file of the Files API (``/v1/files``), not of any container."""

    seq: int
    id: str
    created_at: int
    size: int
    filename: str
    purpose: str
    expires_at: int | None

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            # Deprecated fields the service still sends; a stored file is always processed.
            "status": "processed",
            "status_details": None,
        }


@dataclass(frozen=True)
class ContainerOptions:
    """What a container was created with that its object does not show."""

    file_ids: list[str]
    skills: list[Any]


@dataclass(frozen=True)
class Page:
    data: Sequence[ContainerRow] | Sequence[FileRow] | Sequence[ApiFileRow]
    has_more: bool

    def to_json(self) -> JsonObject:
        return {
            "object": "list",
            "data": [row.to_json() for row in self.data],
            "first_id": self.data[0].id if self.data else None,
            "last_id": self.data[-1].id if self.data else None,
            "has_more": self.has_more,
        }
