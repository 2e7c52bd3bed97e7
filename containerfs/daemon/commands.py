"""What the daemon does for ``containerfs new`` and ``containerfs import`` (requests of the
control channel, ``control.py``): create a container with options, or copy a Files-API file
into a container's directory, through the mount's own namespace, so that the new directory or
file shows at once and the caches stay right.

API calls: ``new`` is one ``POST /containers``; ``import`` is one ``POST
/containers/{id}/files`` with ``{"file_id"}``, plus one ``GET /files/{id}`` when no name is
given (to learn the Files-API filename), plus the listing of the directory if it is not
cached (the name must be free). Layer: daemon; no FUSE (the kernel is told through the
``entry_added`` callback), no HTTP.
"""

from __future__ import annotations

import errno
import logging
import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from containerfs.daemon.control import (
    ImportFile,
    NewContainer,
    Request,
    SyncPath,
    check_file_name,
)
from containerfs.errors import ApiError, ContainerExpired, ControlError, NotFound
from containerfs.models import ApiFile, ContainerFile, ContainerId
from containerfs.ns.inodes import ROOT_INODE, Kind, Node
from containerfs.ns.namespace import Namespace

log = logging.getLogger(__name__)


class FileSource(Protocol):
    async def retrieve_api_file(self, file_id: str) -> ApiFile: ...
    async def create_file_from_id(
        self, container_id: ContainerId, file_id: str
    ) -> ContainerFile: ...


class FailedUpload(Protocol):
    @property
    def container_id(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def error(self) -> str | None: ...


class UploadWaiter(Protocol):
    async def sync(self, under: Node) -> Sequence[FailedUpload]: ...


class MountCommands:
    """Carries out control requests on one mount's namespace."""

    def __init__(
        self,
        namespace: Namespace,
        client: FileSource,
        *,
        container_defaults: Mapping[str, Any] | None = None,
        entry_added: Callable[[int, str], None] | None = None,
        uploads: UploadWaiter | None = None,
    ) -> None:
        self.ns = namespace
        self.client = client
        self.defaults = dict(container_defaults or {})
        self._entry_added = entry_added or (lambda parent, name: None)
        self._uploads = uploads

    async def run(self, request: Request) -> str:
        """Carry out ``request``; the new directory's or file's path below the mountpoint."""
        if isinstance(request, NewContainer):
            return await self.new_container(request)
        if isinstance(request, SyncPath):
            return await self.sync(request)
        return await self.import_file(request)

    async def sync(self, request: SyncPath) -> str:
        """Wait until every upload under the path is on the server (``containerfs sync``);
        one line naming each upload that failed, as a ``ControlError``."""
        shown = "/".join(request.path) or "."
        if self._uploads is None:
            raise ControlError("this mount has no uploads to wait for")
        node: Node | None = self.ns.root_node
        for part in request.path:
            node = await self.ns.lookup(node, part) if node is not None else None
        if node is None:
            raise ControlError(f"no such file: {shown}", errno_=errno.ENOENT)
        failed = await self._uploads.sync(node)
        if failed:
            named = "; ".join(f"{f.container_id}/{f.path}: {f.error}" for f in failed)
            raise ControlError(f"{len(failed)} upload(s) failed: {named}", errno_=errno.EIO)
        return shown

    async def new_container(self, request: NewContainer) -> str:
        root = self.ns.root_node
        if not self.ns.writable(root):
            raise ControlError("the mount is read-only", errno_=errno.EROFS)
        if await self.ns.lookup(root, request.name) is not None:
            raise ControlError(f"{request.name}: name taken", errno_=errno.EEXIST)
        options = {k: v for k, v in self.defaults.items() if v is not None}
        if request.memory_limit is not None:
            options["memory_limit"] = request.memory_limit
        if request.expires_after_minutes is not None:
            options["expires_after_minutes"] = request.expires_after_minutes
        try:
            node = await self.ns.create_container(
                request.name,
                network_policy=request.network_policy,
                file_ids=request.file_ids,
                skills=request.skills,
                **options,
            )
        except NotFound as err:  # the one 404 a create can get: a file id
            raise ControlError(f"cannot create {request.name}: unknown file id ({err})") from err
        except ApiError as err:
            raise ControlError(f"cannot create {request.name}: {err}", errno_=err.errno) from err
        assert node.cid is not None
        name = await self.ns.container_dir(node.cid)
        self._entry_added(ROOT_INODE, name)
        log.info("created container %s as %r", node.cid, name)
        return name

    async def import_file(self, request: ImportFile) -> str:
        where = "/".join(request.directory)
        parent = await self._directory(request.directory)
        assert parent.cid is not None
        cid = parent.cid
        container = await self.ns.container(cid)
        if container is not None and container.expired:
            raise ControlError(f"{where}: the container has expired", errno_=errno.EROFS)
        if not self.ns.writable(parent):
            raise ControlError("the mount is read-only", errno_=errno.EROFS)
        name = request.name or await self._api_filename(request.file_id)
        try:
            taken = await self.ns.lookup(parent, name) is not None
        except NotFound as err:  # listing its files: the container is gone
            raise self._gone(cid, where, err) from err
        if taken:
            raise ControlError(f"{where}/{name}: name taken", errno_=errno.EEXIST)
        try:
            new = await self.client.create_file_from_id(cid, request.file_id)
        except ContainerExpired as err:
            self.ns.container_changed(cid)
            raise ControlError(f"{where}: the container has expired", errno_=err.errno) from err
        except NotFound as err:
            if err.param == "file_id" or "file object" in err.message.lower():
                raise ControlError(f"unknown file id {request.file_id} ({err})") from err
            raise self._gone(cid, where, err) from err
        except ApiError as err:
            message = f"cannot import {request.file_id} into {where}: {err}"
            raise ControlError(message, errno_=err.errno) from err
        node = await self.ns.file_added(parent, name, new)
        self._entry_added(parent.inode, name)
        log.info("imported %s into %s as %s %r", request.file_id, cid, new.id, node.path)
        return posixpath.join(where, name)

    def _gone(self, cid: ContainerId, where: str, err: NotFound) -> ControlError:
        self.ns.container_changed(cid)  # deleted elsewhere: the mount asks again
        return ControlError(f"{where}: the container is gone ({err})", errno_=errno.ENOENT)

    async def _directory(self, parts: tuple[str, ...]) -> Node:
        node = self.ns.root_node
        for i, part in enumerate(parts):
            child = await self.ns.lookup(node, part)
            if child is None or not child.is_dir:
                missing = "/".join(parts[: i + 1])
                raise ControlError(f"{missing}: no such directory", errno_=errno.ENOENT)
            node = child
        if node.kind not in (Kind.CONTAINER, Kind.DIR):
            raise ControlError("import into a container's directory", errno_=errno.EISDIR)
        return node

    async def _api_filename(self, file_id: str) -> str:
        try:
            meta = await self.client.retrieve_api_file(file_id)
        except NotFound as err:
            raise ControlError(f"unknown file id {file_id} ({err})") from err
        except ApiError as err:
            raise ControlError(f"cannot read {file_id}: {err}", errno_=err.errno) from err
        name = posixpath.basename(meta.filename)
        try:
            check_file_name(name)
        except ControlError as err:
            raise ControlError(
                f"{file_id}: its filename cannot be used ({err}): give --name"
            ) from None
        return name
