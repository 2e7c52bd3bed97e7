"""Name memory: the path each file id was last shown at on this mount, per container.

The naming rules (``containerfs.paths.place_files``) take it as ``shown`` and place those
files first, so a file keeps its displayed path while it is listed and a path never passes
to another file behind the user's back. It lives for the mount only (a remount applies the
rules afresh, with the recorded aliases). Plain data, no I/O. Layer: namespace.
"""

from __future__ import annotations

from collections.abc import Mapping

from containerfs.models import ContainerFile, ContainerId, FileId


class NameMemory:
    def __init__(self) -> None:
        self._paths: dict[ContainerId, dict[FileId, str]] = {}
        # the reverse map, so that a claim finds the path's holder without a scan
        self._holders: dict[ContainerId, dict[str, FileId]] = {}

    def shown(self, cid: ContainerId) -> Mapping[FileId, str]:
        return self._paths.get(cid, {})

    def remember(self, cid: ContainerId, placed: Mapping[str, ContainerFile]) -> None:
        """A container's placement was just computed: it is what the mount shows now (files
        no longer listed are forgotten with it)."""
        self._paths[cid] = {f.id: path for path, f in placed.items()}
        self._holders[cid] = {path: f.id for path, f in placed.items()}

    def claim(self, cid: ContainerId, fid: FileId, path: str) -> None:
        """The mount itself wrote ``path`` as file ``fid`` (an upload, a rename): the path is
        that file's from now on; a file that held it is placed anew by the rules."""
        paths = self._paths.setdefault(cid, {})
        holders = self._holders.setdefault(cid, {})
        holder = holders.pop(path, None)
        if holder is not None:
            del paths[holder]
        old = paths.pop(fid, None)
        if old is not None:
            del holders[old]
        paths[fid], holders[path] = path, fid

    def forget(self, cid: ContainerId, fid: FileId) -> None:
        path = self._paths.get(cid, {}).pop(fid, None)
        if path is not None:
            del self._holders[cid][path]

    def drop(self, cid: ContainerId) -> None:
        self._paths.pop(cid, None)
        self._holders.pop(cid, None)
