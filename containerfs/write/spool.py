"""Spools and the write path's ports: a node's local content (``Spool``), and the parts of the
API client and the reader that the write path uses (``Uploader``, ``ContentFetcher``). Plain
data and Protocols; no I/O. Layer: write path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from containerfs.models import ContainerFile, ContainerId, FileId

# a server file: its container and id (a moved file may supersede ids of another container)
ServerId = tuple[ContainerId, FileId]


class Uploader(Protocol):
    async def upload_file(
        self, container_id: ContainerId, source: str | os.PathLike[str], *, filename: str
    ) -> ContainerFile: ...

    async def delete_file(self, container_id: ContainerId, file_id: FileId) -> None: ...


class ContentFetcher(Protocol):
    async def fetch(self, container_id: ContainerId, file_id: FileId, size: int | None) -> Path: ...

    def unpin(self, file_id: FileId) -> None: ...

    def invalidate(self, file_id: FileId) -> None: ...

    async def adopt(self, file_id: FileId, source: Path) -> bool: ...


@dataclass(eq=False)
class Spool:
    """A node's local content. ``version`` counts writes, so an upload knows if it is stale."""

    path: Path
    fd: int
    size: int = 0
    dirty: bool = False
    version: int = 0
    pending_id: str | None = None
    replaces: list[ServerId] = field(default_factory=list)  # server files it supersedes
    writers: int = 0  # open handles writing to it
    closed: bool = False  # its fd is closed (discarded, or handed to the cache)
