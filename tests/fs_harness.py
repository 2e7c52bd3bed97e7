"""A filesystem built as the daemon builds it, over the emulator app in-process, for tests
that call the pyfuse3 handlers directly (no kernel)."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pyfuse3
import pytest
import trio

from containerfs import paths as names
from containerfs.api.client import ApiClient
from containerfs.api.retrying import Backoff
from containerfs.config import DOWNLOAD_BACKOFF, ApiConfig, MountConfig
from containerfs.daemon.layers import build_layers
from containerfs.fs.operations import Operations
from containerfs.models import Container, ContainerId, FileId
from containerfs.ns.inodes import ROOT_INODE
from containerfs.ns.namespace import Namespace
from containerfs.state import State
from containerfs.write.writer import Writer

CTX = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), umask=0o022)
NEGATIVE_TTL = 2.5
SETATTR_FIELDS = ("size", "mode", "uid", "gid", "atime", "mtime", "ctime")


@dataclass
class Fs:
    ops: Operations
    ns: Namespace
    writer: Writer
    client: ApiClient
    admin: httpx.AsyncClient

    # -- the server, seen through the API and the emulator's test controls ----------------
    async def container(self, name: str, **options: Any) -> Container:
        return await self.client.create_container(name, **options)

    async def add_file(
        self, cid: str, path: str, content: bytes, *, report_bytes: bool = True
    ) -> dict[str, Any]:
        body = {"path": path, "content": content.decode(), "report_bytes": report_bytes}
        response = await self.admin.post(f"/_emulator/containers/{cid}/files", json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def faults(self, rules: list[dict[str, Any]]) -> None:
        (await self.admin.post("/_emulator/faults", json=rules)).raise_for_status()

    async def server_files(self, cid: ContainerId) -> dict[str, bytes]:
        """Basename (server prefix stripped) -> content; a name held twice fails the test."""
        out: dict[str, bytes] = {}
        async for f in self.client.list_files(cid):
            base = posixpath.basename(f.path)
            name = names.strip_prefix(base) or base
            assert name not in out, f"{name} is on the server twice"
            out[name] = await self.content(cid, f.id)
        return out

    async def content(self, cid: ContainerId, fid: FileId) -> bytes:
        response = await self.admin.get(
            f"/v1/containers/{cid}/files/{fid}/content",
            headers={"Authorization": "Bearer sk-test"},
        )
        response.raise_for_status()
        return response.content

    # -- the handlers, driven as the kernel drives them ----------------------------------
    async def lookup(self, parent: int, name: str | bytes) -> pyfuse3.EntryAttributes:
        raw = name.encode() if isinstance(name, str) else name
        return await self.ops.lookup(parent, raw, CTX)

    async def inode(self, *path: str) -> int:
        inode = ROOT_INODE
        for part in path:
            entry = await self.lookup(inode, part)
            assert entry.st_ino, f"{part!r} not found"
            inode = entry.st_ino
        return inode

    async def write_file(self, parent: int, name: str, data: bytes) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        info, entry = await self.ops.create(parent, name.encode(), 0o644, flags, CTX)
        assert await self.ops.write(info.fh, 0, data) == len(data)
        await self.ops.flush(info.fh)
        await self.ops.release(info.fh)
        return int(entry.st_ino)

    async def read_file(self, inode: int) -> bytes:
        info = await self.ops.open(inode, os.O_RDONLY, CTX)
        chunks: list[bytes] = []
        while chunk := await self.ops.read(info.fh, sum(map(len, chunks)), 64 * 1024):
            chunks.append(chunk)
        await self.ops.release(info.fh)
        return b"".join(chunks)

    async def listing(self, inode: int) -> list[str]:
        node = self.ns.node(inode)
        assert node is not None
        return [name for name, _ in await self.ns.list_dir(node)]


async def build_fs(
    tmp_path: Path,
    nursery: trio.Nursery,
    app: Any,
    *,
    read_only: bool = False,
    prefetch: bool = True,
    download_retry: Backoff = DOWNLOAD_BACKOFF,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> Fs:
    """The layers as the daemon builds them (``build_layers``), over the in-process app
    (seen through ``wrap``, when given: a transport that changes what the server says)."""
    config = ApiConfig(
        base_url="http://emulator/v1",
        api_key="sk-test",
        max_retries=1,
        backoff_base=0.01,
        backoff_max=0.01,
    )
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
    client = ApiClient(config, transport=wrap(transport) if wrap is not None else transport)
    cfg = MountConfig(
        mountpoint=tmp_path / "mnt",
        api=config,
        state_dir=tmp_path / f"state-{read_only}",
        cache_dir=tmp_path / f"cache-{read_only}",
        cache_max_size=1 << 30,
        metadata_ttl=60.0,
        negative_ttl=NEGATIVE_TTL,
        read_only=read_only,
        prefetch=prefetch,
    )
    state = State(cfg.state_dir, endpoint=config.base_url)
    layers = await build_layers(cfg, client, state, nursery=nursery, download_retry=download_retry)
    admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator")
    return Fs(layers.ops, layers.ns, layers.writer, client, admin)


async def close_fs(fs: Fs) -> None:
    await fs.client.aclose()
    await fs.admin.aclose()
    fs.ns.state.close()


def errno_of(exc: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return int(exc.value.errno)


def setattr_fields(*names_: str) -> SimpleNamespace:
    return SimpleNamespace(**{f"update_{n}": n in names_ for n in SETATTR_FIELDS})


# ---- names and attributes --------------------------------------------------------------
