"""The five ``/v1/files`` endpoints: a minimal, faithful Files API.

Enough of it for containers: files uploaded here can be copied into a container, at its
creation (``file_ids``) or later (``POST /containers/{id}/files`` with ``{"file_id": ...}``,
see ``api``). Objects, envelopes, pagination and errors follow the service's Files API and
the official SDK's types (``FileObject``, ``FileDeleted``). Same layer as ``api``.

Choices where the reference is silent: a file is ``processed`` as soon as it is stored;
files of every purpose are kept until deleted, except that ``batch`` files (as documented)
and files created with ``expires_after`` vanish at their ``expires_at``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from containerfs.emulator.api import blob_response
from containerfs.emulator.errors import ApiError, bad_request, not_found
from containerfs.emulator.params import (
    int_in_range,
    invalid_value,
    list_params,
    missing,
    unknown_cursor,
)
from containerfs.emulator.rows import ApiFileRow, new_api_file_id
from containerfs.emulator.state import Emulator
from containerfs.emulator.store import UnknownCursor
from containerfs.emulator.uploads import FILE_FIELD, multipart_boundary, receive_multipart

log = logging.getLogger(__name__)

# The purposes an upload may name (the SDK's ``FilePurpose``); the ``*_output`` and
# ``fine-tune-results`` purposes are the service's own, never accepted from a client.
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_DEFAULT_EXPIRY_SECONDS = 30 * 24 * 3600
MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 30 * 24 * 3600
# List bounds of ``GET /files`` (not those of the containers' lists).
DEFAULT_LIST_LIMIT = 10_000
MAX_LIST_LIMIT = 10_000

_FORM_FIELDS = frozenset({"purpose", "expires_after[anchor]", "expires_after[seconds]"})


def _api_file(emu: Emulator, request: Request) -> ApiFileRow:
    fid = request.path_params["file_id"]
    row = emu.store.get_api_file(fid)
    if row is None:
        raise not_found(f"No such File object: {fid}", param="id")
    return row


def _purpose(fields: dict[str, str]) -> str:
    if "purpose" not in fields:
        raise missing("purpose")
    purpose = fields["purpose"]
    if purpose not in PURPOSES:
        raise invalid_value("purpose", purpose, PURPOSES)
    return purpose


def _expiry_seconds(fields: dict[str, str], purpose: str) -> int | None:
    """Seconds from creation to expiry (None: kept until deleted)."""
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return BATCH_DEFAULT_EXPIRY_SECONDS if purpose == "batch" else None
    if anchor is None:
        raise missing("expires_after.anchor")
    if anchor != "created_at":
        raise invalid_value("expires_after.anchor", anchor, ("created_at",))
    if seconds is None:
        raise missing("expires_after.seconds")
    try:
        value: object = int(seconds)
    except ValueError:
        value = seconds
    return int_in_range("expires_after.seconds", value, MIN_EXPIRY_SECONDS, MAX_EXPIRY_SECONDS)


def _check_fields(fields: dict[str, str]) -> None:
    for key in fields:
        if key not in _FORM_FIELDS:
            raise bad_request(f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


async def create_file(request: Request, emu: Emulator) -> Response:
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime != "multipart/form-data":
        raise bad_request(
            "Invalid Content-Type header: expected multipart/form-data.", param="file"
        )
    incoming = emu.store.incoming_path()
    upload = await receive_multipart(
        emu.stats.receiving(request.stream()),
        boundary=multipart_boundary(request.headers["content-type"]),
        blob=incoming,
        max_bytes=emu.config.max_upload_bytes,
    )
    fid = new_api_file_id()
    blob = emu.store.blob_path(fid)
    try:
        _check_fields(upload.fields)
        purpose = _purpose(upload.fields)
        expiry = _expiry_seconds(upload.fields, purpose)
        if upload.blob is None:
            raise missing(FILE_FIELD)
        filename = upload.filename or ""
        if not filename or "\x00" in filename:
            raise bad_request("The uploaded file must have a file name.", param=FILE_FIELD)
        await anyio.to_thread.run_sync(os.replace, incoming, blob)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_unlink_quietly, incoming)
            await anyio.to_thread.run_sync(_unlink_quietly, blob)
        raise
    emu.stats.bytes_uploaded += upload.size
    expires_at = None if expiry is None else int(emu.config.clock.now()) + expiry
    row = emu.store.add_api_file(
        fid, filename=filename, purpose=purpose, size=upload.size, expires_at=expires_at
    )
    log.info("stored Files-API file %s %r (%d bytes)", fid, filename, upload.size)
    return JSONResponse(row.to_json())


async def list_files(request: Request, emu: Emulator) -> Response:
    limit, order, after = list_params(
        request, default_limit=DEFAULT_LIST_LIMIT, max_limit=MAX_LIST_LIMIT
    )
    try:
        page = emu.store.list_api_files(
            limit=limit, order=order, after=after, purpose=request.query_params.get("purpose")
        )
    except UnknownCursor as exc:
        raise unknown_cursor(str(exc)) from exc
    return JSONResponse(page.to_json())


async def retrieve_file(request: Request, emu: Emulator) -> Response:
    return JSONResponse(_api_file(emu, request).to_json())


async def delete_file(request: Request, emu: Emulator) -> Response:
    row = _api_file(emu, request)
    emu.store.delete_api_file(row.id)
    # Copies already made into containers are their own blobs and stay.
    await emu.remove_blobs([row.id])
    return JSONResponse({"id": row.id, "object": "file", "deleted": True})


async def file_content(request: Request, emu: Emulator) -> Response:
    row = _api_file(emu, request)
    response = await blob_response(emu, request, emu.store.blob_path(row.id))
    if response is None:
        raise ApiError(404, f"No such File object: {row.id}", param="id")
    return response


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)
