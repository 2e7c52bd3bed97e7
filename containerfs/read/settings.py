"""Settings of the read path, each option with its default written once: ``DownloadSettings``
for one download's stream and flusher, ``ReaderSettings`` for the reader that holds them.
Plain frozen values, no behaviour. Layer: read path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from containerfs.api.retrying import Backoff, ProgressPolicy
from containerfs.config import DEFAULT_PROGRESS, DOWNLOAD_BACKOFF, DOWNLOAD_RETRIES
from containerfs.read.prefetch import PrefetchSettings

# Batch size of cache-file writes: large enough that the thread hop per write is noise.
FLUSH_BYTES = 1 << 20
# Backpressure: the stream pauses when this much content waits for the disk.
MAX_PENDING = 8 << 20
# Content already written stays in memory this long behind the disk frontier, so that readers
# trailing the stream a little are served without a thread hop and a copy back from disk.
RECENT_BYTES = 4 << 20
# A read this far beyond the download frontier tries its own ranged GET instead of waiting.
RANGE_AHEAD_BYTES = 8 << 20
# A download started only to learn a file's size (``learn_size``) keeps streaming into the
# cache, so that the read which usually follows costs no second GET: always when less than
# PROBE_TAIL_BYTES remain (finishing costs about nothing), else while the file is at most
# PROBE_KEEP_BYTES and fewer than PROBE_KEEP_DOWNLOADS such long downloads run with nobody
# reading them. Otherwise it is dropped once the headers gave the size: `ls -l` of many large
# outputs must not download them all, nor hold every connection of the pool.
PROBE_TAIL_BYTES = 1 << 20
PROBE_KEEP_BYTES = 64 << 20
PROBE_KEEP_DOWNLOADS = 16


@dataclass(frozen=True, kw_only=True)
class DownloadSettings:
    """How one download streams, resumes and writes its cache file."""

    backoff: Backoff = DOWNLOAD_BACKOFF  # the delays between attempts of a broken stream
    retries: int = DOWNLOAD_RETRIES  # attempts after a failure without progress
    # what counts as progress; how long the download goes without
    progress: ProgressPolicy = DEFAULT_PROGRESS
    flush_bytes: int = FLUSH_BYTES
    max_pending: int = MAX_PENDING
    recent_bytes: int = RECENT_BYTES

    @property
    def pending_limit(self) -> int:
        """Unwritten bytes at which the stream pauses: never below one flush batch, which
        the flusher waits for before it writes."""
        return max(self.max_pending, self.flush_bytes)


@dataclass(frozen=True, kw_only=True)
class ReaderSettings:
    """The reader's options; its downloads' in ``download``."""

    download: DownloadSettings = field(default_factory=DownloadSettings)
    range_ahead: int | None = RANGE_AHEAD_BYTES  # None: reads far ahead wait for the stream
    probe_keep_bytes: int = PROBE_KEEP_BYTES
    probe_keep_downloads: int = PROBE_KEEP_DOWNLOADS
    prefetch: PrefetchSettings | None = None  # None: no prefetch across files
    parallel: bool = True  # large files as parallel ranged GETs, where the server allows
