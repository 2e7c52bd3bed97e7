"""Settings, one source: ``ApiConfig`` (from the SDKs' environment variables), ``MountConfig``
(one mount's options), the name policies of the write path and its retry defaults. Plain
data shared by all layers; no I/O, no httpx, no FUSE.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from containerfs.api.retrying import Backoff, ProgressPolicy
from containerfs.errors import ConfigError

#: Endpoint names, as counted in ``ClientStats.requests``.
ENDPOINTS = (
    "list_containers",
    "create_container",
    "retrieve_container",
    "delete_container",
    "list_files",
    "upload_file",
    "retrieve_file",
    "delete_file",
    "file_content",
    "retrieve_api_file",  # GET /files/{id}: a Files-API file's metadata
)


#: ``--io-timeout``: a request that moves (nearly) nothing for this long is cut (see
#: ``ProgressPolicy``).
IO_TIMEOUT = 30.0
#: The slowest transfer that still counts as progress, in bytes a second over an io-timeout.
MIN_TRANSFER_RATE = 1024.0
#: A call with its retries gives up after this many io-timeouts without progress: the bound of
#: every FUSE operation that waits on the server (a retry never starts past it).
CALL_BUDGET_TIMEOUTS = 2.0


@dataclass(frozen=True)
class ApiConfig:
    """Where and how to reach the API. The key never appears in ``repr`` or logs."""

    base_url: str = "https://api.openai.com/v1"
    api_key: str = field(default="", repr=False)
    organization: str | None = None
    project: str | None = None
    connect_timeout: float = 10.0  # at most io_timeout
    io_timeout: float = IO_TIMEOUT
    min_rate: float = MIN_TRANSFER_RATE
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    rate_limit_per_minute: float | None = None
    # pages one listing may take before it is taken for a server that paginates forever
    # (EIO): 10,000 pages of 100 is a million files, far past any real container
    max_pages: int = 10_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ApiConfig:
        """The configuration the official SDKs read: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
        ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``; keyword ``overrides`` win over the environment.
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown API setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            "base_url": (env.get("OPENAI_BASE_URL") or cls.base_url).rstrip("/"),
            "api_key": env.get("OPENAI_API_KEY", ""),
            "organization": env.get("OPENAI_ORG_ID") or None,
            "project": env.get("OPENAI_PROJECT_ID") or None,
        }
        values.update(overrides)
        if not values["api_key"]:
            raise ConfigError("OPENAI_API_KEY is not set: export the API key before mounting")
        return cls(**values)

    @property
    def progress(self) -> ProgressPolicy:
        """The progress deadlines of every request (see ``ProgressPolicy``)."""
        return progress_policy(self.io_timeout, min_rate=self.min_rate)


def progress_policy(io_timeout: float, *, min_rate: float = MIN_TRANSFER_RATE) -> ProgressPolicy:
    return ProgressPolicy(
        window=io_timeout, min_rate=min_rate, budget=CALL_BUDGET_TIMEOUTS * io_timeout
    )


DEFAULT_PROGRESS = progress_policy(IO_TIMEOUT)


#: The memory limits a container may have (``POST /containers``' ``memory_limit``).
MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
#: How long ``containerfs new``/``import`` wait for the daemon's answer by default.
CONTROL_TIMEOUT = 120.0

# Editor swap/backup/lock files: kept on this machine, never uploaded.
DEFAULT_LOCAL_ONLY: tuple[str, ...] = (
    ".*.swp",
    ".*.swx",
    ".*.swo",
    "*~",
    "4913",
    "#*#",
    ".#*",
    ".*.kate-swp",
    ".~lock.*#",
)

# Temporary files of tools that write a temp file and rename it over the original (sed -i,
# Python's tempfile, rsync): uploaded only if still there DEFER_SECONDS after close, so the
# usual temp-then-rename costs one upload under the final name.
DEFAULT_DEFERRED: tuple[str, ...] = (
    "sed??????",  # sed -i
    "tmp????????",  # Python's tempfile
    ".*.??????",  # rsync
    "*.lock",  # git's index.lock, HEAD.lock, refs/heads/*.lock
    "tmp_*_??????",  # git's tmp_obj_XXXXXX, tmp_pack_XXXXXX
)
DEFER_SECONDS = 5.0
#: A file written from offset 0 straight on starts uploading once it holds STREAM_AFTER bytes,
#: its body sent while it is written. Smaller files are uploaded whole at close: one request
#: either way, and a request that waits for writes would hold a connection for nothing.
STREAM_AFTER = 1 << 20
#: Write-back uploads sent at once (each file's versions still one after another).
WRITE_BACK_PARALLEL = 8
#: The reads of a streamed spool: big enough for few thread hops, small enough for little RSS.
STREAM_CHUNK = 1 << 20
#: The latest written bytes a stream keeps in memory, to send them without reading them back.
STREAM_MEMORY = 8 << 20
#: A writer waits while its streamed upload is more than STREAM_AHEAD behind: sent from memory
#: then, never read back; unless the upload made no progress for STREAM_PATIENCE seconds.
STREAM_AHEAD = STREAM_MEMORY - STREAM_CHUNK
STREAM_PATIENCE = 2.0
#: A broken download is resumed up to DOWNLOAD_RETRIES times in a row without progress,
#: after 0.5, 1 and 2 seconds (the same doubling ``Backoff`` as uploads and API calls).
DOWNLOAD_BACKOFF = Backoff(base=0.5, cap=5.0)
DOWNLOAD_RETRIES = 3
#: A failed upload is tried again after UPLOAD_RETRY_BASE seconds, doubling up to the max.
UPLOAD_RETRY_BASE = 2.0
UPLOAD_RETRY_MAX = 300.0
#: The daemon rewrites its status snapshot this often (``containerfs status``, ``unmount``).
STATUS_INTERVAL = 1.0


@dataclass
class MountConfig:
    mountpoint: Path
    api: ApiConfig
    state_dir: Path
    cache_dir: Path
    cache_max_size: int = 2 << 30
    metadata_ttl: float = 10.0
    negative_ttl: float = 1.0
    kernel_timeout: float = 1.0
    read_only: bool = False
    # download the next small files of a directory walk before they are opened
    prefetch: bool = True
    root: str = "/mnt/data"
    show_expired: bool = False
    local_only: tuple[str, ...] = DEFAULT_LOCAL_ONLY
    deferred: tuple[str, ...] = DEFAULT_DEFERRED
    container_expires_minutes: int | None = None
    container_memory_limit: str | None = None
    allow_other: bool = False
    write_back: bool = False  # close returns once the content is durable; uploads follow
    drain_timeout: float = 60.0
    fuse_options: tuple[str, ...] = field(default_factory=tuple)
    uid: int | None = None  # owner shown for every file; None: the daemon's user
    gid: int | None = None
    file_mode: int = 0o644
    dir_mode: int = 0o755
