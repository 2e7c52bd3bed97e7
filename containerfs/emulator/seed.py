"""Initial data: the built-in ``demo`` sample and JSON seed files.

A seed file looks like::

    {"containers": [{"name": "analysis",
                     "expires_after": {"anchor": "last_active_at", "minutes": 60},
                     "memory_limit": "4g",
                     "files": [{"path": "/mnt/data/out/chart.png", "content": "text",
                                "source": "assistant", "report_bytes": false}]}]}

``content_base64`` replaces ``content`` for binary data; ``source`` defaults to ``user``;
``report_bytes: false`` makes the file's ``bytes`` null in every answer; a relative ``path``
is taken under ``/mnt/data``. Seeds apply only to a data directory without containers.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import posixpath
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from containerfs.emulator.paths import CONTAINER_ROOT
from containerfs.emulator.store import Store

log = logging.getLogger(__name__)

_CONTAINER_KEYS = {"name", "files", "expires_after", "memory_limit"}
_FILE_KEYS = {"path", "content", "content_base64", "source", "report_bytes"}
_MEMORY_LIMITS = ("1g", "4g", "16g", "64g")

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
class SeedContainer:
    name: str
    files: list[SeedFile] = field(default_factory=list)
    expires_minutes: int | None = None
    memory_limit: str | None = None


def demo_seed() -> list[SeedContainer]:
    """Two containers: ``analysis`` (an upload and assistant outputs) and ``scratch``."""
    upload = f"{CONTAINER_ROOT}/{secrets.token_hex(16)}-data.csv"
    return [
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
    return SeedContainer(
        name,
        [parse_file(f, where=f"{where}.files[{i}]") for i, f in enumerate(files)],
        minutes,
        memory,
    )


def parse_seed(data: object) -> list[SeedContainer]:
    if not isinstance(data, Mapping) or not isinstance(data.get("containers"), list):
        raise SeedError('expected an object {"containers": [...]}')
    _check_keys(data, {"containers"}, "seed")
    return [_parse_container(c, f"containers[{i}]") for i, c in enumerate(data["containers"])]


def load_seed(spec: str) -> list[SeedContainer]:
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


def apply_seed(store: Store, containers: list[SeedContainer]) -> bool:
    """Create the seed's containers and files, unless the store already has containers."""
    if store.count_containers():
        log.info("data directory already has containers: seed not applied")
        return False
    for seed in containers:
        options: dict[str, int | str] = {}
        if seed.expires_minutes is not None:
            options["expires_minutes"] = seed.expires_minutes
        if seed.memory_limit is not None:
            options["memory_limit"] = seed.memory_limit
        container = store.create_container(seed.name, **options)  # type: ignore[arg-type]
        for f in seed.files:
            store.add_file_bytes(
                container.id,
                path=f.path,
                content=f.content,
                source=f.source,
                report_bytes=f.report_bytes,
            )
    log.info("seeded %d containers", len(containers))
    return True
