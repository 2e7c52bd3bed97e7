"""Directories made through the mount: shown at once by the overlay, and kept in the state
database so that a later mount shows them too (the API has no directories: an empty one
exists only here). Owned by the namespace; the state database is asked in a worker thread.
Layer: namespace.
"""

from __future__ import annotations

from collections.abc import Iterable

from containerfs.aio import in_thread
from containerfs.models import ContainerId
from containerfs.ns.overlay import Overlay
from containerfs.state import State


class MadeDirs:
    """The directories made here, per container: in ``overlay`` and in ``state``."""

    def __init__(self, overlay: Overlay, state: State) -> None:
        self._overlay = overlay
        self._state = state

    async def stored(self, cid: ContainerId) -> set[str]:
        """The directories the state database keeps for ``cid`` (``show`` shows them)."""
        return await in_thread(lambda: self._state.dirs(cid))

    def show(self, cid: ContainerId, made: Iterable[str]) -> None:
        for d in made:
            self._overlay.add_dir(cid, d)

    async def add(self, cid: ContainerId, path: str) -> None:
        self._overlay.add_dir(cid, path)
        await in_thread(lambda: self._state.add_dir(cid, path))

    async def drop(self, cid: ContainerId, path: str) -> None:
        self._overlay.drop_dir(cid, path)
        await in_thread(lambda: self._state.drop_dir(cid, path))

    async def move(self, old_cid: ContainerId, old: str, cid: ContainerId, path: str) -> None:
        """The directories made at ``old`` or under it, now at ``path`` in ``cid``."""
        for d in self._overlay.made_under(old_cid, old):
            new = path + d[len(old) :]
            self._overlay.drop_dir(old_cid, d)
            self._overlay.add_dir(cid, new)
            await in_thread(self._state.drop_dir, old_cid, d)
            await in_thread(self._state.add_dir, cid, new)

    def forget(self, cid: ContainerId) -> None:
        """The container is gone: its directories go too (the state forgets it whole)."""
        self._overlay.forget_dirs(cid)
