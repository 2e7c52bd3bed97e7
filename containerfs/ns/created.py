"""What the containers this mount created were created with: their Files-API files and skills.

The container object the API returns carries neither, so the mount records them (in the
state database, per endpoint) when it creates a container, and shows them as extended
attributes; a container made elsewhere has no record. Layer: namespace; no FUSE, no HTTP.
"""

from __future__ import annotations

import logging
import sqlite3

from containerfs.aio import in_thread
from containerfs.models import ContainerId
from containerfs.state import CreatedWith, State

log = logging.getLogger(__name__)


class CreationLog:
    """The records of ``State.created_with``, read once per container and kept."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._known: dict[ContainerId, CreatedWith | None] = {}

    async def record(self, cid: ContainerId, created: CreatedWith) -> None:
        """Best effort: the container exists whatever happens here, so a state database that
        cannot take the record (a full disk) costs only the xattrs after a remount."""
        self._known[cid] = created
        try:
            await in_thread(self._state.set_created_with, cid, created)
        except (sqlite3.Error, OSError) as err:
            log.warning("cannot record what %s was created with: %s", cid, err)

    async def get(self, cid: ContainerId) -> CreatedWith | None:
        """What ``cid`` was created with through this mount (or an earlier one on this
        machine); None for a container made elsewhere."""
        if cid not in self._known:
            self._known[cid] = await in_thread(self._state.created_with, cid)
        return self._known[cid]

    def forget(self, cid: ContainerId) -> None:
        """The container is gone (its state rows go with ``State.forget_container``)."""
        self._known.pop(cid, None)
