"""The emulator's SQLite schema, and how a row of each table becomes a record of ``rows``.

Part of the emulator's storage, used by ``store`` only. Deleted rows stay as tombstones
(``deleted = 1``): a listing cursor that names one still finds its place.
"""

from __future__ import annotations

import json
from typing import Any

from containerfs.emulator.rows import ApiFileRow, ContainerRow, FileRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_active_at REAL NOT NULL,
    expires_minutes INTEGER NOT NULL,
    memory_limit TEXT NOT NULL,
    network_policy TEXT NOT NULL,
    status TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS containers_order ON containers (deleted, created_at, seq);
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    container_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    report_bytes INTEGER NOT NULL,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_order ON files (container_id, deleted, created_at, seq);
CREATE TABLE IF NOT EXISTS api_files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    expires_at INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS api_files_order ON api_files (deleted, created_at, seq);
CREATE TABLE IF NOT EXISTS container_options (
    container_id TEXT PRIMARY KEY,
    file_ids TEXT NOT NULL,
    skills TEXT NOT NULL
);
"""


CONTAINER_COLUMNS = (
    "seq, id, name, created_at, last_active_at, expires_minutes, memory_limit, "
    "network_policy, status"
)
FILE_COLUMNS = "seq, id, container_id, created_at, bytes, report_bytes, path, source"
API_FILE_COLUMNS = "seq, id, created_at, bytes, filename, purpose, expires_at"


def container_row(row: tuple[Any, ...]) -> ContainerRow:
    seq, id_, name, created, active, minutes, memory, policy, status = row
    return ContainerRow(
        seq, id_, name, created, active, minutes, memory, json.loads(policy), status
    )


def file_row(row: tuple[Any, ...]) -> FileRow:
    seq, id_, cid, created, size, report, path, source = row
    return FileRow(seq, id_, cid, created, size, bool(report), path, source)


def api_file_row(row: tuple[Any, ...]) -> ApiFileRow:
    return ApiFileRow(*row)
