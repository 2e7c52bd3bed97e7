"""The nine ``/v1`` endpoints of the Containers API.

Handlers take the request and the :class:`Emulator` and return a response or raise
:class:`ApiError`; counting, faults, auth and lazy expiry happen before them in ``app``.
Validation answers name the offending ``param`` the way the real service does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from containerfs.emulator.content import BlobResponse, parse_range
from containerfs.emulator.errors import ApiError, bad_request, not_found
from containerfs.emulator.paths import stored_path
from containerfs.emulator.state import Emulator
from containerfs.emulator.store import (
    ContainerRow,
    FileRow,
    JsonObject,
    Order,
    UnknownCursor,
    new_file_id,
)
from containerfs.emulator.uploads import FILE_FIELD, multipart_boundary, receive_multipart

log = logging.getLogger(__name__)

MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
NETWORK_POLICIES = ("disabled", "allowlist")
MAX_EXPIRES_MINUTES = 1440
_ORDERS: tuple[Order, ...] = ("asc", "desc")

_JSON_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


# -- request parsing --------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _invalid_type(param: str, expected: str, value: object) -> ApiError:
    return bad_request(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _invalid_value(param: str, value: object, allowed: tuple[str, ...]) -> ApiError:
    choices = ", ".join(f"'{a}'" for a in allowed)
    return bad_request(
        f"Invalid value: {value!r}. Supported values are: {choices}.",
        param=param,
        code="invalid_value",
    )


def _missing(param: str) -> ApiError:
    return bad_request(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _int_in_range(param: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(param, "an integer", value)
    if value < low:
        raise bad_request(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    if value > high:
        raise bad_request(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )
    return value


async def _json_body(request: Request) -> Mapping[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)"
        ) from exc
    if not isinstance(body, dict):
        raise bad_request(f"Invalid body: expected an object, but got {_type_name(body)}.")
    return body


def _reject_unknown(body: Mapping[str, Any], known: frozenset[str]) -> None:
    for key in body:
        if key not in known:
            raise bad_request(f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


def _list_params(request: Request) -> tuple[int, Order, str | None]:
    query = request.query_params
    limit = 20
    if "limit" in query:
        try:
            value: object = int(query["limit"])
        except ValueError:
            value = query["limit"]
        limit = _int_in_range("limit", value, 1, 100)
    order = query.get("order", "desc")
    if order not in _ORDERS:
        raise _invalid_value("order", order, _ORDERS)
    return limit, order, query.get("after")


def _unknown_cursor(after: str) -> ApiError:
    # Documented choice: an ``after`` naming no object of the listing is a 400 (the cursor
    # of an object deleted meanwhile still works, see ``store``).
    return bad_request(f"Invalid 'after': no object with id '{after}' in this list.", param="after")


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


def _expires_after(value: object) -> int:
    if not isinstance(value, dict):
        raise _invalid_type("expires_after", "an object", value)
    if "anchor" not in value:
        raise _missing("expires_after.anchor")
    if value["anchor"] != "last_active_at":
        raise _invalid_value("expires_after.anchor", value["anchor"], ("last_active_at",))
    if "minutes" not in value:
        raise _missing("expires_after.minutes")
    return _int_in_range("expires_after.minutes", value["minutes"], 1, MAX_EXPIRES_MINUTES)


def _network_policy(value: object) -> JsonObject:
    if not isinstance(value, dict):
        raise _invalid_type("network_policy", "an object", value)
    kind = value.get("type")
    if kind is None:
        raise _missing("network_policy.type")
    if kind not in NETWORK_POLICIES:
        raise _invalid_value("network_policy.type", kind, NETWORK_POLICIES)
    if kind == "disabled":
        return {"type": "disabled"}
    domains = value.get("allowed_domains")
    if domains is None:
        raise _missing("network_policy.allowed_domains")
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise _invalid_type("network_policy.allowed_domains", "an array of strings", domains)
    if not domains:
        raise bad_request(
            "Invalid 'network_policy.allowed_domains': empty array. Expected an array with "
            "minimum length 1.",
            param="network_policy.allowed_domains",
            code="empty_array",
        )
    return {"type": "allowlist", "allowed_domains": list(domains)}


def _memory_limit(value: object) -> str:
    if not isinstance(value, str) or value not in MEMORY_LIMITS:
        raise _invalid_value("memory_limit", value, MEMORY_LIMITS)
    return value


def _file_ids(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise _invalid_type("file_ids", "an array of strings", value)
    # There is no Files API here, so no file id can name an existing file.
    if value:
        raise not_found(f"No such File object: {value[0]}", param="file_ids")


def _skills(value: object) -> None:
    if not isinstance(value, list):
        raise _invalid_type("skills", "an array", value)


_CREATE_FIELDS = frozenset(
    {"name", "expires_after", "file_ids", "memory_limit", "network_policy", "skills"}
)
# Optional fields of create-container: validator, and the store keyword it fills (if any).
_CREATE_OPTIONAL: dict[str, tuple[Callable[[object], Any], str | None]] = {
    "expires_after": (_expires_after, "expires_minutes"),
    "memory_limit": (_memory_limit, "memory_limit"),
    "network_policy": (_network_policy, "network_policy"),
    "file_ids": (_file_ids, None),
    "skills": (_skills, None),
}


async def create_container(request: Request, emu: Emulator) -> Response:
    body = await _json_body(request)
    _reject_unknown(body, _CREATE_FIELDS)
    if "name" not in body:
        raise _missing("name")
    name = body["name"]
    if not isinstance(name, str):
        raise _invalid_type("name", "a string", name)
    options: dict[str, Any] = {}
    for key, (validate, keyword) in _CREATE_OPTIONAL.items():
        if key in body:
            value = validate(body[key])
            if keyword:
                options[keyword] = value
    return JSONResponse(emu.store.create_container(name, **options).to_json())


async def list_containers(request: Request, emu: Emulator) -> Response:
    limit, order, after = _list_params(request)
    try:
        page = emu.store.list_containers(
            limit=limit, order=order, after=after, name=request.query_params.get("name")
        )
    except UnknownCursor as exc:
        raise _unknown_cursor(str(exc)) from exc
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
    limit, order, after = _list_params(request)
    _container(emu, cid, for_files=True)
    try:
        page = emu.store.list_files(cid, limit=limit, order=order, after=after)
    except UnknownCursor as exc:
        raise _unknown_cursor(str(exc)) from exc
    return JSONResponse(page.to_json())


async def retrieve_file(request: Request, emu: Emulator) -> Response:
    return JSONResponse(_file(emu, request).to_json())


async def delete_file(request: Request, emu: Emulator) -> Response:
    row = _file(emu, request)
    emu.store.delete_file(row.container_id, row.id)
    await emu.remove_blobs([row.id])
    return JSONResponse({"id": row.id, "object": "container.file.deleted", "deleted": True})


def _unknown_file_id(file_id: str) -> ApiError:
    # There is no Files API in the emulator: every ``file_id`` is unknown.
    return not_found(f"No such File object: {file_id}", param="file_id")


async def upload_file(request: Request, emu: Emulator) -> Response:
    cid = request.path_params["container_id"]
    _container(emu, cid, for_files=True)
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime in ("application/json", ""):
        body = await _json_body(request)
        if "file_id" in body:
            raise _unknown_file_id(str(body["file_id"]))
        raise _missing(FILE_FIELD)
    if mime != "multipart/form-data":
        raise _missing(FILE_FIELD)
    incoming = emu.store.incoming_path()
    upload = await receive_multipart(
        request.stream(),
        boundary=multipart_boundary(request.headers["content-type"]),
        blob=incoming,
        max_bytes=emu.config.max_upload_bytes,
    )
    fid = new_file_id()
    blob = emu.store.blob_path(fid)
    try:
        if upload.blob is None:
            if "file_id" in upload.fields:
                raise _unknown_file_id(upload.fields["file_id"])
            raise _missing(FILE_FIELD)
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
    blob = emu.store.blob_path(row.id)
    try:
        size = (await anyio.to_thread.run_sync(os.stat, blob)).st_size
    except FileNotFoundError as exc:
        raise not_found(f"No content for file '{row.id}'.") from exc
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
