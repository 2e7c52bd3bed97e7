"""The typed snapshots a mount's status is made of: each layer fills its own (the API
client its counters and transfers, the namespace, the reader, the sizes, the writer and its
queue theirs), the daemon writes them to ``status.json`` and the command line reads them
back. Plain frozen dataclasses, importing nothing of the layers: ``containerfs status``
loads this module, not trio, httpx or the layers that fill them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of an ``ApiClient``'s counters."""

    requests: Mapping[str, int]  # attempts sent, by endpoint name (retries included)
    bytes_up: int
    bytes_down: int
    retries: int
    errors: Mapping[str, int]  # errors raised to callers, by class name
    adopted: int  # ambiguous creates resolved by finding the created object
    rate_limit_waits: int
    rate_limit_wait_seconds: float

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


@dataclass(frozen=True)
class TransferStats:
    """One transfer in flight, as the status shows it."""

    direction: str  # "upload" or "download"
    container_id: str
    name: str  # an upload's path in its container; a download's file id
    done: int  # bytes sent or received so far (a resumed download starts at its offset)
    total: int | None  # None: not known (yet)
    rate: float  # bytes per second over the last RATE_WINDOW seconds
    elapsed: float  # seconds since it started


@dataclass(frozen=True)
class SizeStats:
    learned: int  # sizes that cost a content request (or joined one in flight)
    known: int  # sizes found without a request (disk cache, a download already running)
    failed: int  # attempts that ended in an error
    corrected: int  # sizes shown earlier that the content proved wrong


@dataclass(frozen=True)
class NamespaceStats:
    container_listings: int
    file_listings: int
    lookups: int
    negative_lookups: int
    inodes: int


@dataclass(frozen=True)
class ReaderStats:
    hits: int  # opens served from a complete cache entry
    misses: int  # opens that started a download
    joins: int  # opens that joined a live entry (download in progress or already open)
    downloads_started: int
    downloads_completed: int
    downloads_failed: int
    retries: int  # resumed or restarted streams after a failure
    range_reads: int  # extra ranged GETs for reads far beyond the frontier
    pieces: int  # ranged GETs of large files downloaded in parallel pieces
    past_cache: int  # opens read past the cache (too large for it, or its disk full)
    size_probes: int  # downloads started to learn the size of a file listed without one
    size_probes_dropped: int  # ... and stopped once the headers gave the size
    prefetches: int  # downloads started ahead of a directory walk's opens
    prefetches_used: int  # ... whose file was then opened
    prefetches_failed: int
    prefetches_deferred: int  # files not prefetched: the rate limit had nothing to spare
    active_downloads: int
    open_handles: int
    bytes_fetched: int  # received from the API (including bytes skipped after a restart)
    bytes_served: int  # returned by read()
    evictions: int
    cache_bytes_used: int
    cache_max_size: int
    entries: int


@dataclass(frozen=True)
class WriterStats:
    uploads: int
    upload_failures: int
    bytes_uploaded: int
    deletes: int
    spools_open: int
    pending: int  # failed uploads, and queued ones of a previous mount not resumed yet
    deferred: int
    orphans: int  # superseded server files not deleted yet
    streamed: int  # uploads sent while their file was written
    stream_fallbacks: int  # streams given up: their file was uploaded whole at flush


@dataclass(frozen=True)
class PendingItem:
    """One upload not done yet, as ``containerfs status`` shows it."""

    container_id: str
    path: str
    bytes: int
    state: str  # "deferred", "failed", or (write-back) "queued" or "uploading"
    error: str | None
