"""Building the layers of one mount: reader, namespace, writer and the FUSE adapter over one
API client and one state database, from a ``MountConfig``.

The one place that wires the layers together: the daemon uses it before mounting, and the
handler-level tests use it over an in-process emulator, so both run the same assembly. Layer:
daemon (imports the FUSE adapter, not pyfuse3 itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import trio

from containerfs.api.client import ApiClient
from containerfs.api.retrying import Backoff
from containerfs.config import DOWNLOAD_BACKOFF, MountConfig
from containerfs.fs.operations import Operations
from containerfs.ns.namespace import Namespace
from containerfs.read.prefetch import PrefetchSettings
from containerfs.read.reader import Reader
from containerfs.read.settings import DownloadSettings, ReaderSettings
from containerfs.state import State
from containerfs.write.writer import Writer


@dataclass(frozen=True)
class Layers:
    reader: Reader
    ns: Namespace
    writer: Writer
    ops: Operations


def _namespace(cfg: MountConfig, client: ApiClient, state: State) -> Namespace:
    """The namespace, its files owned by the mounting user unless ``uid``/``gid`` say."""
    return Namespace(
        client,
        state,
        root=cfg.root,
        ttl=cfg.metadata_ttl,
        show_expired=cfg.show_expired,
        read_only=cfg.read_only,
        uid=os.getuid() if cfg.uid is None else cfg.uid,
        gid=os.getgid() if cfg.gid is None else cfg.gid,
        file_mode=cfg.file_mode,
        dir_mode=cfg.dir_mode,
    )


async def build_layers(
    cfg: MountConfig,
    client: ApiClient,
    state: State,
    *,
    nursery: trio.Nursery,
    operations: type[Operations] = Operations,
    download_retry: Backoff = DOWNLOAD_BACKOFF,
) -> Layers:
    """The layers of a mount; their background tasks (downloads, upload retries) run in
    ``nursery``, which must outlive them."""
    reader = await Reader.create(
        client,
        cache_dir=cfg.cache_dir,
        max_size=cfg.cache_max_size,
        nursery=nursery,
        settings=ReaderSettings(
            download=DownloadSettings(backoff=download_retry, progress=cfg.api.progress),
            prefetch=PrefetchSettings() if cfg.prefetch else None,
        ),
        spare_requests=client.has_spare_requests,
    )
    ns = _namespace(cfg, client, state)
    writer = await Writer.create(
        client,
        ns,
        state,
        reader,
        nursery=nursery,
        local_only=cfg.local_only,
        deferred=cfg.deferred,
        write_back=cfg.write_back,
    )
    ops = operations(
        ns,
        reader,
        writer,
        entry_timeout=cfg.kernel_timeout,
        attr_timeout=cfg.kernel_timeout,
        negative_timeout=cfg.negative_ttl,
        sizes_wait=cfg.api.progress.budget,
        container_defaults={
            "expires_after_minutes": cfg.container_expires_minutes,
            "memory_limit": cfg.container_memory_limit,
        },
    )
    return Layers(reader, ns, writer, ops)
