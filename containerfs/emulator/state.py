"""The emulator's live state: settings, store, counters and fault rules, in one object.

Shared by the ``/v1`` handlers (``api``), the test controls (``admin``) and the request
pipeline (``app``). Knows nothing about routing.
"""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread

from containerfs.emulator.config import EmulatorConfig
from containerfs.emulator.faults import FaultSet
from containerfs.emulator.stats import Stats
from containerfs.emulator.store import Store

log = logging.getLogger(__name__)


class Emulator:
    """Owns the :class:`Store`; :meth:`close` it when done (``create_app`` opens one)."""

    def __init__(self, config: EmulatorConfig, *, store: Store | None = None) -> None:
        self.config = config
        self.store = store or Store(config.data_dir, clock=config.clock)
        self.stats = Stats()
        self.faults = FaultSet()

    def close(self) -> None:
        self.store.close()

    async def remove_blobs(self, fids: list[str]) -> None:
        if fids:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.store.remove_blobs, fids)

    async def expire_due(self) -> None:
        """Expire idle containers and Files-API files past their ``expires_at`` (lazily,
        before each request that could observe them)."""
        await self.remove_blobs(self.store.expire_due() + self.store.expire_api_files())
