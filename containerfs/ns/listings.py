"""Listings: one container's files as last listed, patched in place by the mount's own
changes, with the display placement and directory set derived from it on demand. Plain data
held in the namespace's TTL cache. Layer: namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from containerfs import paths
from containerfs.models import ContainerFile, FileId


@dataclass
class Listing:
    """One container's files as last listed, patched by the mount's own changes."""

    files: dict[FileId, ContainerFile]
    _placed: dict[str, ContainerFile] | None = None
    _dirs: set[str] | None = None

    def changed(self) -> None:
        self._placed = None
        self._dirs = None

    def view(
        self, place: Callable[[Iterable[ContainerFile]], dict[str, ContainerFile]]
    ) -> tuple[dict[str, ContainerFile], set[str]]:
        """Display path -> file, and every directory they imply ("" included), computed once
        per change by ``place`` (the naming rules, with the container's aliases)."""
        if self._placed is None or self._dirs is None:
            placed = place(self.files.values())
            dirs = {""}
            for path in placed:
                dirs.update(paths.ancestors(path))
            self._placed, self._dirs = placed, dirs
        return self._placed, self._dirs
