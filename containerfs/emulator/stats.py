"""Request counters and a short log of recent requests, for tests and benchmarks."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

# Request headers worth showing in the request log (never the Authorization header).
LOGGED_HEADERS = ("content-type", "openai-organization", "openai-project", "range", "user-agent")


@dataclass(frozen=True)
class RequestRecord:
    route: str
    method: str
    path: str
    query: str
    status: int
    headers: dict[str, str]


class Stats:
    """Counts requests by route name (``list_containers``, ``upload_file``, ...)."""

    def __init__(self, *, log_size: int = 500) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_uploaded = 0
        self.bytes_downloaded = 0
        self.faults_applied = 0
        self.bytes_receiving = 0  # of upload bodies still arriving: an upload sent as written
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=log_size)

    def count(self, route: str) -> None:
        self.requests[route] += 1

    def record(self, record: RequestRecord) -> None:
        self._log.append(record)

    def reset(self) -> None:
        self.requests.clear()
        self.bytes_uploaded = self.bytes_downloaded = self.faults_applied = 0
        self._log.clear()

    def statistics(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "total": sum(self.requests.values()),
            "bytes_uploaded": self.bytes_uploaded,
            "bytes_downloaded": self.bytes_downloaded,
            "faults_applied": self.faults_applied,
            "bytes_receiving": self.bytes_receiving,
        }

    async def receiving(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks`` of an upload body, counted in ``bytes_receiving`` until it ends."""
        seen = 0
        try:
            async for chunk in chunks:
                seen += len(chunk)
                self.bytes_receiving += len(chunk)
                yield chunk
        finally:
            self.bytes_receiving -= seen

    def recent(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self._log]
