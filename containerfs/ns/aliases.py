"""Where files made here are shown: an alias (file id -> path in its container) wherever the
naming rules alone would show a file elsewhere, kept in the state database so that it
survives cache expiry and remounts (``ns``, the namespace layer, under ``Namespace``).

A container's listing reads its aliases (the dict ``of`` returns, shared, not copied); the
``NameMemory`` keeps the path each file was last shown at.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from containerfs import paths as names
from containerfs.aio import in_thread
from containerfs.models import ContainerFile, ContainerId, FileId
from containerfs.ns.listings import Listings
from containerfs.ns.memory import NameMemory
from containerfs.state import State


class Aliases:
    def __init__(self, state: State, *, root: str, memory: NameMemory, listings: Listings) -> None:
        self._state = state
        self._root = root
        self._memory = memory
        self._listings = listings
        self._by_container: dict[ContainerId, dict[FileId, str]] = {}
        self._loaded: set[ContainerId] = set()  # containers whose stored aliases are read

    def of(self, cid: ContainerId) -> dict[FileId, str]:
        """The container's aliases, the very dict its listing reads."""
        return self._by_container.setdefault(cid, {})

    def loaded(self, cid: ContainerId) -> bool:
        return cid in self._loaded

    def load(self, cid: ContainerId, stored: dict[FileId, str]) -> None:
        """The aliases the state database keeps; those set since (in memory) win."""
        self._loaded.add(cid)
        aliases = self.of(cid)
        for fid, path in stored.items():
            aliases.setdefault(fid, path)

    async def record(self, cid: ContainerId, path: str, new: ContainerFile) -> None:
        """Show the new server file ``new`` at ``path``: an alias when the server's path
        differs (kept in the state, so it survives cache expiry and remounts)."""
        keep = self.claim(cid, path, new)
        if keep is not None:
            await in_thread(keep)

    def claim(self, cid: ContainerId, path: str, new: ContainerFile) -> Callable[[], None] | None:
        """``record`` in memory now; the blocking step that keeps its alias in the state (None:
        nothing to keep), for the caller's next trip to a thread."""
        shown = names.relative_path(new.path, self._root)
        keep = None
        # recorded when the rules alone would show the file elsewhere after a remount
        if shown != path or names.reserved_file_name(posixpath.basename(path)):
            self.of(cid)[new.id] = path
            state = self._state

            def keep() -> None:
                state.set_alias(cid, new.id, path)

        self._memory.claim(cid, new.id, path)
        self._listings.added(cid, new)
        return keep

    async def deleted(self, cid: ContainerId, fid: FileId) -> None:
        self._listings.removed(cid, fid)  # before the memory forgets where it was
        self._memory.forget(cid, fid)
        if self._by_container.get(cid, {}).pop(fid, None) is not None:
            await in_thread(lambda: self._state.drop_alias(fid))

    def show_at(self, remote: ContainerFile, path: str) -> None:
        """Show a server file at ``path`` for this mount's life only (not recorded on disk)."""
        self.of(remote.container_id)[remote.id] = path
        self._memory.claim(remote.container_id, remote.id, path)
        self._listings.refile(remote.container_id, remote.id)

    def shown(self, cid: ContainerId, fid: FileId) -> str | None:
        """The path in its container of a file by id, where the mount last showed it."""
        return self._memory.shown(cid).get(fid)

    def forget(self, cid: ContainerId) -> None:
        """The container is deleted: its aliases and remembered paths go with it."""
        self._by_container.pop(cid, None)
        self._memory.drop(cid)
        self._loaded.discard(cid)
