"""Initial data: the built-in ``demo`` sample and JSON seed files.

A seed file looks like::

    {"files": [{"id": "file-inputs1", "filename": "inputs.csv", "purpose": "user_data",
                "content": "a,b\n"}],
     "containers": [{"name": "analysis",
                     "expires_after": {"anchor": "last_active_at", "minutes": 60},
                     "memory_limit": "4g",
                     "file_ids": ["file-inputs1"],
                     "files": [{"path": "/mnt/data/out/chart.png", "content": "text",
                                "source": "assistant", "report_bytes": false}]}]}

``files`` (optional) are Files-API files; ``id`` (``file-`` and letters or digits) is
optional, and needed only to name the file in a container's ``file_ids``, which copies it
in as ``POST /containers`` does. In a container's ``files``, ``content_base64`` replaces
``content`` for binary data (also in Files-API files); ``source`` defaults to ``user``;
``report_bytes: false`` makes the file's ``bytes`` null in every answer; a relative ``path``
is taken under ``/mnt/data``. Seeds apply only to a data directory without containers and
without Files-API files.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import posixpath
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from containerfs.emulator.paths import CONTAINER_ROOT, copied_path
from containerfs.emulator.rows import ApiFileRow, new_file_id
from containerfs.emulator.store import DEFAULT_EXPIRES_MINUTES, DEFAULT_MEMORY_LIMIT, Store

log = logging.getLogger(__name__)

_CONTAINER_KEYS = {"name", "files", "expires_after", "memory_limit", "file_ids"}
_FILE_KEYS = {"path", "content", "content_base64", "source", "report_bytes"}
_API_FILE_KEYS = {"id", "filename", "purpose", "content", "content_base64"}
_MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_API_FILE_ID = re.compile(r"^file-[A-Za-z0-9]{1,64}$")

# A 1x1 PNG, so that the demo's chart opens in an image viewer.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
_CSV = b"city,year,population\nLyon,2020,522250\nNantes,2020,320732\nLille,2020,236234\n"
_SUMMARY = b"# Summary\n\nThree cities; Lyon is the largest.\n\n![chart](chart.png)\n"
_NOTES = b"scratch space\n- try a bigger sample\n- compare with 2010\n"


class SeedError(ValueError):
    """The seed is unreadable or malformed; the message says where."""


@dataclass(frozen=True)
class SeedFile:
    path: str
    content: bytes
    source: str = "user"
    report_bytes: bool = True


@dataclass(frozen=True)
class SeedApiFile:
    """A Files-API file; ``id`` None gets a fresh one."""

    filename: str
    content: bytes
    purpose: str = "user_data"
    id: str | None = None


@dataclass(frozen=True)
class SeedContainer:
    name: str
    files: list[SeedFile] = field(default_factory=list)
    expires_minutes: int | None = None
    memory_limit: str | None = None
    # Ids of the seed's Files-API files copied in at creation.
    file_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Seed:
    containers: list[SeedContainer] = field(default_factory=list)
    files: list[SeedApiFile] = field(default_factory=list)


def demo_seed() -> Seed:
    """Two containers: ``analysis`` (an upload and assistant outputs) and ``scratch``; and
    one Files-API file, ``cities.csv``, to bring into a container."""
    upload = f"{CONTAINER_ROOT}/{secrets.token_hex(16)}-data.csv"
    containers = [
        SeedContainer(
            "analysis",
            [
                SeedFile(upload, _CSV),
                SeedFile(f"{CONTAINER_ROOT}/out/chart.png", _PNG, "assistant"),
                SeedFile(f"{CONTAINER_ROOT}/out/summary.md", _SUMMARY, "assistant", False),
            ],
        ),
        SeedContainer("scratch", [SeedFile(f"{CONTAINER_ROOT}/notes.txt", _NOTES)]),
    ]
    return Seed(containers, [SeedApiFile("cities.csv", _CSV)])


def parse_file(raw: object, *, where: str) -> SeedFile:
    """One file entry (also used by the admin call that adds files)."""
    if not isinstance(raw, Mapping):
        raise SeedError(f"{where}: expected an object")
    _check_keys(raw, _FILE_KEYS, where)
    path = raw.get("path")
    if not isinstance(path, str) or not path.strip("/"):
        raise SeedError(f"{where}.path: expected a non-empty string")
    if not path.startswith("/"):
        path = posixpath.join(CONTAINER_ROOT, path)
    source = raw.get("source", "user")
    if not isinstance(source, str):
        raise SeedError(f"{where}.source: expected a string")
    report_bytes = raw.get("report_bytes", True)
    if not isinstance(report_bytes, bool):
        raise SeedError(f"{where}.report_bytes: expected a boolean")
    return SeedFile(path, _content(raw, where), source, report_bytes)


def _content(raw: Mapping[str, object], where: str) -> bytes:
    if "content_base64" in raw:
        encoded = raw["content_base64"]
        if not isinstance(encoded, str):
            raise SeedError(f"{where}.content_base64: expected a string")
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise SeedError(f"{where}.content_base64: {exc}") from exc
    text = raw.get("content", "")
    if not isinstance(text, str):
        raise SeedError(f"{where}.content: expected a string")
    return text.encode()


def _check_keys(raw: Mapping[str, object], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SeedError(f"{where}: unknown keys {unknown}")


def _parse_container(raw: object, where: str) -> SeedContainer:
    if not isinstance(raw, Mapping):
        raise SeedError(f"{where}: expected an object")
    _check_keys(raw, _CONTAINER_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str):
        raise SeedError(f"{where}.name: expected a string")
    files = raw.get("files", [])
    if not isinstance(files, list):
        raise SeedError(f"{where}.files: expected an array")
    minutes = None
    if "expires_after" in raw:
        expires = raw["expires_after"]
        minutes = expires.get("minutes") if isinstance(expires, Mapping) else None
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
            raise SeedError(f"{where}.expires_after.minutes: expected a positive integer")
    memory = raw.get("memory_limit")
    if memory is not None and memory not in _MEMORY_LIMITS:
        raise SeedError(f"{where}.memory_limit: expected one of {_MEMORY_LIMITS}")
    file_ids = raw.get("file_ids", [])
    if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
        raise SeedError(f"{where}.file_ids: expected an array of strings")
    return SeedContainer(
        name,
        [parse_file(f, where=f"{where}.files[{i}]") for i, f in enumerate(files)],
        minutes,
        memory,
        list(file_ids),
    )


def _parse_api_file(raw: object, where: str) -> SeedApiFile:
    if not isinstance(raw, Mapping):
        raise SeedError(f"{where}: expected an object")
    _check_keys(raw, _API_FILE_KEYS, where)
    filename = raw.get("filename")
    if not isinstance(filename, str) or not filename or "/" in filename or "\x00" in filename:
        raise SeedError(f"{where}.filename: expected a non-empty name without '/'")
    purpose = raw.get("purpose", "user_data")
    if purpose not in _PURPOSES:
        raise SeedError(f"{where}.purpose: expected one of {_PURPOSES}")
    fid = raw.get("id")
    if fid is not None and (not isinstance(fid, str) or not _API_FILE_ID.match(fid)):
        raise SeedError(f"{where}.id: expected 'file-' and up to 64 letters or digits")
    return SeedApiFile(filename, _content(raw, where), purpose, fid)


def parse_seed(data: object) -> Seed:
    if not isinstance(data, Mapping) or not (
        isinstance(data.get("containers", []), list) and isinstance(data.get("files", []), list)
    ):
        raise SeedError('expected an object {"containers": [...], "files": [...]}')
    _check_keys(data, {"containers", "files"}, "seed")
    files = [_parse_api_file(f, f"files[{i}]") for i, f in enumerate(data.get("files", []))]
    ids = [f.id for f in files if f.id is not None]
    if len(set(ids)) != len(ids):
        raise SeedError("files: two files have the same id")
    containers = [
        _parse_container(c, f"containers[{i}]") for i, c in enumerate(data.get("containers", []))
    ]
    for i, container in enumerate(containers):
        for fid in container.file_ids:
            if fid not in ids:
                raise SeedError(f"containers[{i}].file_ids: {fid!r} is not the id of a seed file")
    return Seed(containers, files)


def load_seed(spec: str) -> Seed:
    """``demo`` or the path of a JSON seed file."""
    if spec == "demo":
        return demo_seed()
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"cannot read seed file {spec}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SeedError(f"seed file {spec} is not valid JSON: {exc}") from exc
    try:
        return parse_seed(data)
    except SeedError as exc:
        raise SeedError(f"seed file {spec}: {exc}") from exc


def apply_seed(store: Store, seed: Seed) -> bool:
    """Create the seed's files and containers, unless the store already has either."""
    if store.count_containers() or store.count_api_files():
        log.info("data directory already has containers or files: seed not applied")
        return False
    api_files: dict[str, ApiFileRow] = {}
    for f in seed.files:
        row = store.add_api_file_bytes(
            filename=f.filename, purpose=f.purpose, content=f.content, fid=f.id
        )
        api_files[row.id] = row
    for container_seed in seed.containers:
        _apply_container(store, container_seed, api_files)
    log.info("seeded %d containers and %d files", len(seed.containers), len(seed.files))
    return True


def _apply_container(
    store: Store, seed: SeedContainer, api_files: Mapping[str, ApiFileRow]
) -> None:
    container = store.create_container(
        seed.name,
        expires_minutes=seed.expires_minutes or DEFAULT_EXPIRES_MINUTES,
        memory_limit=seed.memory_limit or DEFAULT_MEMORY_LIMIT,
        file_ids=seed.file_ids,
    )
    # Files-API copies first, as the service creates them with the container.
    for fid in seed.file_ids:
        source = api_files[fid]
        copy = new_file_id()
        store.copy_blob(fid, copy)
        store.add_file(
            container.id, copy, path=copied_path(source.filename), size=source.size, source="user"
        )
    for f in seed.files:
        store.add_file_bytes(
            container.id,
            path=f.path,
            content=f.content,
            source=f.source,
            report_bytes=f.report_bytes,
        )
