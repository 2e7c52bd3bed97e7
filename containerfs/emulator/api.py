"""The nine ``/v1`` endpoints of the Containers API (the Files API is in ``files_api``).

Handlers take the request and the :class:`Emulator` and return a response or raise
:class:`ApiError`; counting, faults, auth and lazy expiry happen before them in ``app``.
Validation answers name the offending ``param`` the way the real service does (the fields of
a create-container body are checked in ``create_body``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from containerfs.emulator.content import BlobResponse, parse_range
from containerfs.emulator.create_body import create_options
from containerfs.emulator.errors import ApiError, bad_request, not_found
from containerfs.emulator.params import (
    invalid_type,
    json_body,
    list_params,
    missing,
    reject_unknown,
    unknown_cursor,
)
from containerfs.emulator.paths import copied_path, stored_path
from containerfs.emulator.rows import ApiFileRow, ContainerRow, FileRow, new_file_id
from containerfs.emulator.state import Emulator
from containerfs.emulator.store import UnknownCursor
from containerfs.emulator.uploads import FILE_FIELD, multipart_boundary, receive_multipart

log = logging.getLogger(__name__)


# -- containers -------------------------------------------------------------------------------


def _container_not_found(cid: str) -> ApiError:
    return not_found(f"No container found with id '{cid}'.")


def _container(emu: Emulator, cid: str, *, for_files: bool) -> ContainerRow:
    """The container, refreshed as active; file calls on an expired one are refused."""
    row = emu.store.get_container(cid)
    if row is None:
        raise _container_not_found(cid)
    if row.expired:
        if for_files:
            raise bad_request("Container is expired.")
        return row
    touched = emu.store.touch_container(cid)
    assert touched is not None
    return touched


def _source_file(emu: Emulator, file_id: str, *, param: str) -> ApiFileRow:
    row = emu.store.get_api_file(file_id)
    if row is None:
        raise not_found(f"No such File object: {file_id}", param=param)
    return row


def _add_copy(emu: Emulator, cid: str, fid: str, source: ApiFileRow) -> FileRow:
    # ``source`` is ``user``: the user brought the file in, as with an upload.
    return emu.store.add_file(
        cid, fid, path=copied_path(source.filename), size=source.size, source="user"
    )


async def _copy_in(emu: Emulator, sources: Sequence[ApiFileRow]) -> list[str]:
    """Copy Files-API blobs to new container-file ids; on any failure none is left."""
    fids: list[str] = []
    try:
        for source in sources:
            fids.append(new_file_id())
            try:
                await anyio.to_thread.run_sync(emu.store.copy_blob, source.id, fids[-1])
            except FileNotFoundError as exc:  # deleted while an earlier copy ran
                raise not_found(f"No such File object: {source.id}") from exc
    except BaseException:
        await emu.remove_blobs(fids)
        raise
    return fids


async def create_container(request: Request, emu: Emulator) -> Response:
    name, options = create_options(await json_body(request))
    # Every id is checked before anything is copied: an unknown one creates nothing.
    sources = [_source_file(emu, f, param="file_ids") for f in options.get("file_ids", [])]
    fids = await _copy_in(emu, sources)
    # No await from here on: the container and its files appear together.
    row = emu.store.create_container(name, **options)
    for source, fid in zip(sources, fids, strict=True):
        _add_copy(emu, row.id, fid, source)
    return JSONResponse(row.to_json())


async def list_containers(request: Request, emu: Emulator) -> Response:
    limit, order, after = list_params(request)
    try:
        page = emu.store.list_containers(
            limit=limit, order=order, after=after, name=request.query_params.get("name")
        )
    except UnknownCursor as exc:
        raise unknown_cursor(str(exc)) from exc
    return JSONResponse(page.to_json())


async def retrieve_container(request: Request, emu: Emulator) -> Response:
    row = _container(emu, request.path_params["container_id"], for_files=False)
    return JSONResponse(row.to_json())


async def delete_container(request: Request, emu: Emulator) -> Response:
    cid = request.path_params["container_id"]
    if emu.store.get_container(cid) is None:
        raise _container_not_found(cid)
    await emu.remove_blobs(emu.store.delete_container(cid))
    return JSONResponse({"id": cid, "object": "container.deleted", "deleted": True})


# -- files ------------------------------------------------------------------------------------


def _file(emu: Emulator, request: Request) -> FileRow:
    cid = request.path_params["container_id"]
    fid = request.path_params["file_id"]
    _container(emu, cid, for_files=True)
    row = emu.store.get_file(cid, fid)
    if row is None:
        raise not_found(f"No file found with id '{fid}' in container '{cid}'.")
    return row


async def list_files(request: Request, emu: Emulator) -> Response:
    cid = request.path_params["container_id"]
    limit, order, after = list_params(request)
    _container(emu, cid, for_files=True)
    try:
        page = emu.store.list_files(cid, limit=limit, order=order, after=after)
    except UnknownCursor as exc:
        raise unknown_cursor(str(exc)) from exc
    return JSONResponse(page.to_json())


async def retrieve_file(request: Request, emu: Emulator) -> Response:
    return JSONResponse(_file(emu, request).to_json())


async def delete_file(request: Request, emu: Emulator) -> Response:
    row = _file(emu, request)
    emu.store.delete_file(row.container_id, row.id)
    await emu.remove_blobs([row.id])
    return JSONResponse({"id": row.id, "object": "container.file.deleted", "deleted": True})


async def _create_from_file_id(emu: Emulator, cid: str, file_id: object) -> Response:
    """``{"file_id": ...}``: copy a Files-API file into the container (no bytes sent)."""
    if not isinstance(file_id, str):
        raise invalid_type("file_id", "a string", file_id)
    source = _source_file(emu, file_id, param="file_id")
    (fid,) = await _copy_in(emu, [source])
    try:
        # The container may have been deleted or expired during the copy.
        _container(emu, cid, for_files=True)
    except ApiError:
        await emu.remove_blobs([fid])
        raise
    row = _add_copy(emu, cid, fid, source)
    log.info("copied %s into %s as %s", source.id, cid, fid)
    return JSONResponse(row.to_json())


async def upload_file(request: Request, emu: Emulator) -> Response:
    cid = request.path_params["container_id"]
    _container(emu, cid, for_files=True)
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime in ("application/json", ""):
        body = await json_body(request)
        reject_unknown(body, frozenset({"file_id"}))
        if "file_id" in body:
            return await _create_from_file_id(emu, cid, body["file_id"])
        raise missing(FILE_FIELD)
    if mime != "multipart/form-data":
        raise missing(FILE_FIELD)
    incoming = emu.store.incoming_path()
    upload = await receive_multipart(
        emu.stats.receiving(request.stream()),
        boundary=multipart_boundary(request.headers["content-type"]),
        blob=incoming,
        max_bytes=emu.config.max_upload_bytes,
    )
    if upload.blob is None and "file_id" in upload.fields:
        return await _create_from_file_id(emu, cid, upload.fields["file_id"])
    fid = new_file_id()
    blob = emu.store.blob_path(fid)
    try:
        if upload.blob is None:
            raise missing(FILE_FIELD)
        path = stored_path(upload.filename or "", policy=emu.config.upload_paths)
        await anyio.to_thread.run_sync(os.replace, incoming, blob)
        # No await from here on: the container may have been deleted or expired while the
        # body streamed in, and must not be between this check and the insert.
        _container(emu, cid, for_files=True)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_unlink_quietly, incoming)
            await anyio.to_thread.run_sync(_unlink_quietly, blob)
        raise
    emu.stats.bytes_uploaded += upload.size
    row = emu.store.add_file(cid, fid, path=path, size=upload.size, source="user")
    log.info("stored %s in %s as %r (%d bytes)", fid, cid, path, upload.size)
    return JSONResponse(row.to_json())


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)


async def file_content(request: Request, emu: Emulator) -> Response:
    row = _file(emu, request)
    response = await blob_response(emu, request, emu.store.blob_path(row.id))
    if response is None:
        raise not_found(f"No content for file '{row.id}'.")
    return response


async def blob_response(emu: Emulator, request: Request, blob: Path) -> BlobResponse | None:
    """The content answer for a blob (a single range if enabled and asked); None if gone."""
    try:
        size = (await anyio.to_thread.run_sync(os.stat, blob)).st_size
    except FileNotFoundError:
        return None
    start, end, partial = 0, size, False
    header = request.headers.get("range")
    if emu.config.range_requests and header:
        span = parse_range(header, size)
        if span is not None:
            (start, end), partial = span, True

    def count(n: int) -> None:
        emu.stats.bytes_downloaded += n

    return BlobResponse(
        blob,
        start=start,
        end=end,
        size=size,
        partial=partial,
        accept_ranges=emu.config.range_requests,
        on_bytes=count,
    )
