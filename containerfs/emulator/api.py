"""The nine ``/v1`` endpoints of the Containers API (the Files API is in ``files_api``).

Handlers take the request and the :class:`Emulator` and return a response or raise
:class:`ApiError`; counting, faults, auth and lazy expiry happen before them in ``app``.
Validation answers name the offending ``param`` the way the real service does.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from containerfs.emulator.content import BlobResponse, parse_range
from containerfs.emulator.errors import ApiError, bad_request, not_found
from containerfs.emulator.params import (
    int_in_range,
    invalid_type,
    invalid_value,
    json_body,
    list_params,
    missing,
    reject_unknown,
    unknown_cursor,
)
from containerfs.emulator.paths import copied_path, stored_path
from containerfs.emulator.state import Emulator
from containerfs.emulator.store import (
    ApiFileRow,
    ContainerRow,
    FileRow,
    JsonObject,
    UnknownCursor,
    new_file_id,
)
from containerfs.emulator.uploads import FILE_FIELD, multipart_boundary, receive_multipart

log = logging.getLogger(__name__)

MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
NETWORK_POLICIES = ("disabled", "allowlist")
MAX_EXPIRES_MINUTES = 1440
MAX_SKILL_ID_LENGTH = 64
MAX_SKILL_DATA_LENGTH = 70254592
MAX_SECRET_LENGTH = 10485760


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
        raise invalid_type("expires_after", "an object", value)
    if "anchor" not in value:
        raise missing("expires_after.anchor")
    if value["anchor"] != "last_active_at":
        raise invalid_value("expires_after.anchor", value["anchor"], ("last_active_at",))
    if "minutes" not in value:
        raise missing("expires_after.minutes")
    return int_in_range("expires_after.minutes", value["minutes"], 1, MAX_EXPIRES_MINUTES)


def _non_empty_string(param: str, value: object, *, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    if not value:
        raise bad_request(
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param=param,
            code="empty_string",
        )
    if max_length is not None and len(value) > max_length:
        raise bad_request(
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{max_length}, but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )
    return value


def _non_empty_array(param: str, value: object, expected: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid_type(param, expected, value)
    if not value:
        raise bad_request(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1.",
            param=param,
            code="empty_array",
        )
    return value


def _object(param: str, value: object, known: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    for key in value:
        if key not in known:
            raise bad_request(
                f"Unknown parameter: '{param}.{key}'.",
                param=f"{param}.{key}",
                code="unknown_parameter",
            )
    return value


def _domain_secret(param: str, value: object) -> None:
    secret = _object(param, value, frozenset({"domain", "name", "value"}))
    for key in ("domain", "name", "value"):
        if key not in secret:
            raise missing(f"{param}.{key}")
    _non_empty_string(f"{param}.domain", secret["domain"])
    _non_empty_string(f"{param}.name", secret["name"])
    _non_empty_string(f"{param}.value", secret["value"], max_length=MAX_SECRET_LENGTH)


_POLICY_FIELDS = {
    "disabled": frozenset({"type"}),
    "allowlist": frozenset({"type", "allowed_domains", "domain_secrets"}),
}


def _network_policy(value: object) -> JsonObject:
    """The stored (and shown) policy; ``domain_secrets`` are checked but never kept."""
    if not isinstance(value, dict):
        raise invalid_type("network_policy", "an object", value)
    kind = value.get("type")
    if kind is None:
        raise missing("network_policy.type")
    if kind not in NETWORK_POLICIES:
        raise invalid_value("network_policy.type", kind, NETWORK_POLICIES)
    _object("network_policy", value, _POLICY_FIELDS[kind])
    if kind == "disabled":
        return {"type": "disabled"}
    if "allowed_domains" not in value:
        raise missing("network_policy.allowed_domains")
    param = "network_policy.allowed_domains"
    domains = _non_empty_array(param, value["allowed_domains"], "an array of strings")
    for i, domain in enumerate(domains):
        _non_empty_string(f"{param}[{i}]", domain)
    if "domain_secrets" in value:
        param = "network_policy.domain_secrets"
        secrets = _non_empty_array(param, value["domain_secrets"], "an array of objects")
        for i, secret in enumerate(secrets):
            _domain_secret(f"{param}[{i}]", secret)
    # The container object has no field for secrets (the spec shows type and domains only),
    # and an emulator has no use for them: they are dropped here, never stored or logged.
    return {"type": "allowlist", "allowed_domains": list(domains)}


def _memory_limit(value: object) -> str:
    if not isinstance(value, str) or value not in MEMORY_LIMITS:
        raise invalid_value("memory_limit", value, MEMORY_LIMITS)
    return value


def _file_ids(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise invalid_type("file_ids", "an array of strings", value)
    return list(value)


_SKILL_TYPES = ("skill_reference", "inline")
_SKILL_FIELDS = {
    "skill_reference": frozenset({"type", "skill_id", "version"}),
    "inline": frozenset({"type", "name", "description", "source"}),
}
_INLINE_SOURCE_FIELDS = frozenset({"type", "media_type", "data"})


def _skill(param: str, value: object) -> JsonObject:
    """One skill as stored: a reference as given, an inline skill without its payload."""
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    kind = value.get("type")
    if kind is None:
        raise missing(f"{param}.type")
    if kind not in _SKILL_TYPES:
        raise invalid_value(f"{param}.type", kind, _SKILL_TYPES)
    skill = _object(param, value, _SKILL_FIELDS[kind])
    required = ("skill_id",) if kind == "skill_reference" else ("name", "description", "source")
    for key in required:
        if key not in skill:
            raise missing(f"{param}.{key}")
    if kind == "skill_reference":
        _non_empty_string(f"{param}.skill_id", skill["skill_id"], max_length=MAX_SKILL_ID_LENGTH)
        stored: JsonObject = {"type": kind, "skill_id": skill["skill_id"]}
        if "version" in skill:
            version = skill["version"]
            if not isinstance(version, str):
                raise invalid_type(f"{param}.version", "a string", version)
            if version != "latest" and not (version.isdigit() and int(version) > 0):
                raise bad_request(
                    f"Invalid '{param}.version': expected a positive integer or 'latest', "
                    f"but got {version!r} instead.",
                    param=f"{param}.version",
                    code="invalid_value",
                )
            stored["version"] = version
        return stored
    for key in ("name", "description"):
        if not isinstance(skill[key], str):
            raise invalid_type(f"{param}.{key}", "a string", skill[key])
    _inline_source(f"{param}.source", skill["source"])
    # The zip payload (up to 67 MiB) is checked, not kept: nothing in the emulator runs it.
    return {"type": kind, "name": skill["name"], "description": skill["description"]}


def _inline_source(param: str, value: object) -> None:
    source = _object(param, value, _INLINE_SOURCE_FIELDS)
    for key in ("type", "media_type", "data"):
        if key not in source:
            raise missing(f"{param}.{key}")
    if source["type"] != "base64":
        raise invalid_value(f"{param}.type", source["type"], ("base64",))
    if source["media_type"] != "application/zip":
        raise invalid_value(f"{param}.media_type", source["media_type"], ("application/zip",))
    data = _non_empty_string(f"{param}.data", source["data"], max_length=MAX_SKILL_DATA_LENGTH)
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise bad_request(
            f"Invalid '{param}.data': not valid base64.", param=f"{param}.data"
        ) from exc


def _skills(value: object) -> list[JsonObject]:
    if not isinstance(value, list):
        raise invalid_type("skills", "an array", value)
    return [_skill(f"skills[{i}]", skill) for i, skill in enumerate(value)]


_CREATE_FIELDS = frozenset(
    {"name", "expires_after", "file_ids", "memory_limit", "network_policy", "skills"}
)
# Optional fields of create-container: validator, and the store keyword it fills.
_CREATE_OPTIONAL: dict[str, tuple[Callable[[object], Any], str]] = {
    "expires_after": (_expires_after, "expires_minutes"),
    "memory_limit": (_memory_limit, "memory_limit"),
    "network_policy": (_network_policy, "network_policy"),
    "file_ids": (_file_ids, "file_ids"),
    "skills": (_skills, "skills"),
}


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
    body = await json_body(request)
    reject_unknown(body, _CREATE_FIELDS)
    if "name" not in body:
        raise missing("name")
    name = body["name"]
    if not isinstance(name, str):
        raise invalid_type("name", "a string", name)
    options: dict[str, Any] = {}
    for key, (validate, keyword) in _CREATE_OPTIONAL.items():
        if key in body:
            options[keyword] = validate(body[key])
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
