"""Emulator storage: metadata of containers, their files and Files-API files in SQLite
(the records in ``rows``, the tables in ``schema``); file contents as blob files.

The bottom layer of the emulator; knows nothing about HTTP. All methods are synchronous: the
metadata calls are tiny (indexed queries on a local WAL database) and run on the event loop,
which also serialises them; blob I/O (writing uploads, reading content, deleting blobs) is
done by the callers in worker threads.

Deleted rows are kept as tombstones (``deleted = 1``) so that a listing cursor (``after``)
that names an object deleted between two pages still finds its place.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from containerfs.emulator.config import Clock
from containerfs.emulator.rows import (
    ApiFileRow,
    ContainerOptions,
    ContainerRow,
    FileRow,
    JsonObject,
    Order,
    Page,
    new_api_file_id,
    new_container_id,
    new_file_id,
)
from containerfs.emulator.schema import (
    API_FILE_COLUMNS,
    CONTAINER_COLUMNS,
    FILE_COLUMNS,
    SCHEMA,
    api_file_row,
    container_row,
    file_row,
)

log = logging.getLogger(__name__)

DEFAULT_EXPIRES_MINUTES = 20
DEFAULT_MEMORY_LIMIT = "1g"
DEFAULT_NETWORK_POLICY: JsonObject = {"type": "disabled"}


class UnknownCursor(LookupError):
    """The ``after`` cursor names no object of this listing."""


class Store:
    """Metadata database plus blob directory under one data directory.

    Layout: ``DATA_DIR/state.db`` (SQLite), ``DATA_DIR/blobs/<file id>`` (contents of
    container files and Files-API files alike: their ids never collide),
    ``DATA_DIR/incoming/`` (uploads in progress; emptied at open).
    """

    def __init__(self, data_dir: Path, *, clock: Clock) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.blob_dir = data_dir / "blobs"
        self.incoming_dir = data_dir / "incoming"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.incoming_dir, ignore_errors=True)
        self.incoming_dir.mkdir()
        # The database is only used from the event loop thread, but it may be opened on
        # another thread than the one serving (tests, cli), hence check_same_thread=False.
        self._db = sqlite3.connect(
            data_dir / "state.db", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- containers -------------------------------------------------------------------------

    def count_containers(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM containers WHERE deleted = 0").fetchone()
        return int(n)

    def create_container(
        self,
        name: str,
        *,
        expires_minutes: int = DEFAULT_EXPIRES_MINUTES,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        network_policy: JsonObject | None = None,
        file_ids: Sequence[str] = (),
        skills: Sequence[Any] = (),
    ) -> ContainerRow:
        now = self.clock.now()
        policy = json.dumps(network_policy or DEFAULT_NETWORK_POLICY)
        cid = new_container_id()
        self._db.execute(
            "INSERT INTO containers (id, name, created_at, last_active_at, expires_minutes,"
            " memory_limit, network_policy, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'running')",
            (cid, name, int(now), now, expires_minutes, memory_limit, policy),
        )
        self._db.execute(
            "INSERT INTO container_options (container_id, file_ids, skills) VALUES (?, ?, ?)",
            (cid, json.dumps(list(file_ids)), json.dumps(list(skills))),
        )
        log.info("created container %s %r", cid, name)
        row = self.get_container(cid)
        assert row is not None
        return row

    def get_container(self, cid: str) -> ContainerRow | None:
        row = self._db.execute(
            f"SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = ? AND deleted = 0", (cid,)
        ).fetchone()
        return container_row(row) if row else None

    def container_options(self, cid: str) -> ContainerOptions:
        """The ``file_ids`` and ``skills`` a container was created with (empty if none)."""
        row = self._db.execute(
            "SELECT file_ids, skills FROM container_options WHERE container_id = ?", (cid,)
        ).fetchone()
        if row is None:  # created by an emulator that did not record options
            return ContainerOptions([], [])
        return ContainerOptions(json.loads(row[0]), json.loads(row[1]))

    def touch_container(self, cid: str) -> ContainerRow | None:
        """Refresh ``last_active_at`` of a running container; returns the updated row."""
        self._db.execute(
            "UPDATE containers SET last_active_at = ? WHERE id = ? AND status = 'running'",
            (self.clock.now(), cid),
        )
        return self.get_container(cid)

    def list_containers(
        self, *, limit: int, order: Order, after: str | None, name: str | None
    ) -> Page:
        where, params = "deleted = 0", []
        if name is not None:
            where += " AND name = ?"
            params.append(name)
        return self._page(
            "containers",
            CONTAINER_COLUMNS,
            where,
            params,
            "1",
            [],
            limit=limit,
            order=order,
            after=after,
            make=container_row,
        )

    def delete_container(self, cid: str) -> list[str]:
        """Tombstone a container and its files; returns the file ids whose blobs to remove."""
        fids = self._live_file_ids(cid)
        self._db.execute("UPDATE containers SET deleted = 1 WHERE id = ?", (cid,))
        self._db.execute("UPDATE files SET deleted = 1 WHERE container_id = ?", (cid,))
        log.info("deleted container %s (%d files)", cid, len(fids))
        return fids

    def expire_container(self, cid: str) -> list[str]:
        """Mark a container expired and drop its files; returns the blobs to remove."""
        fids = self._live_file_ids(cid)
        self._db.execute("UPDATE containers SET status = 'expired' WHERE id = ?", (cid,))
        self._db.execute("UPDATE files SET deleted = 1 WHERE container_id = ?", (cid,))
        log.info("expired container %s (%d files)", cid, len(fids))
        return fids

    def expire_due(self) -> list[str]:
        """Expire every running container idle past its ``expires_after``; returns blobs."""
        due = self._db.execute(
            "SELECT id FROM containers WHERE deleted = 0 AND status = 'running'"
            " AND last_active_at + expires_minutes * 60 <= ?",
            (self.clock.now(),),
        ).fetchall()
        fids: list[str] = []
        for (cid,) in due:
            fids += self.expire_container(cid)
        return fids

    # -- files ------------------------------------------------------------------------------

    def add_file(
        self,
        cid: str,
        fid: str,
        *,
        path: str,
        size: int,
        source: str,
        report_bytes: bool = True,
    ) -> FileRow:
        """Record a file whose blob is already at :meth:`blob_path` ``(fid)``."""
        self._db.execute(
            "INSERT INTO files (id, container_id, created_at, bytes, report_bytes, path,"
            " source) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (fid, cid, int(self.clock.now()), size, int(report_bytes), path, source),
        )
        row = self.get_file(cid, fid)
        assert row is not None
        return row

    def add_file_bytes(
        self, cid: str, *, path: str, content: bytes, source: str, report_bytes: bool = True
    ) -> FileRow:
        """Store a small file given in memory (seeds, admin calls)."""
        fid = new_file_id()
        self.blob_path(fid).write_bytes(content)
        return self.add_file(
            cid, fid, path=path, size=len(content), source=source, report_bytes=report_bytes
        )

    def get_file(self, cid: str, fid: str) -> FileRow | None:
        row = self._db.execute(
            f"SELECT {FILE_COLUMNS} FROM files WHERE id = ? AND container_id = ? AND deleted = 0",
            (fid, cid),
        ).fetchone()
        return file_row(row) if row else None

    def list_files(self, cid: str, *, limit: int, order: Order, after: str | None) -> Page:
        return self._page(
            "files",
            FILE_COLUMNS,
            "container_id = ? AND deleted = 0",
            [cid],
            "container_id = ?",
            [cid],
            limit=limit,
            order=order,
            after=after,
            make=file_row,
        )

    def delete_file(self, cid: str, fid: str) -> None:
        self._db.execute(
            "UPDATE files SET deleted = 1 WHERE id = ? AND container_id = ?", (fid, cid)
        )

    def all_files(self, cid: str) -> list[FileRow]:
        rows = self._db.execute(
            f"SELECT {FILE_COLUMNS} FROM files WHERE container_id = ? AND deleted = 0"
            " ORDER BY created_at, seq",
            (cid,),
        ).fetchall()
        return [file_row(r) for r in rows]

    def all_containers(self) -> list[ContainerRow]:
        rows = self._db.execute(
            f"SELECT {CONTAINER_COLUMNS} FROM containers WHERE deleted = 0 ORDER BY created_at, seq"
        ).fetchall()
        return [container_row(r) for r in rows]

    # -- Files API ------------------------------------------------------------------------

    def add_api_file(
        self, fid: str, *, filename: str, purpose: str, size: int, expires_at: int | None
    ) -> ApiFileRow:
        """Record a Files-API file whose blob is already at :meth:`blob_path` ``(fid)``."""
        self._db.execute(
            "INSERT INTO api_files (id, created_at, bytes, filename, purpose, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (fid, int(self.clock.now()), size, filename, purpose, expires_at),
        )
        row = self.get_api_file(fid)
        assert row is not None
        return row

    def add_api_file_bytes(
        self,
        *,
        filename: str,
        purpose: str,
        content: bytes,
        expires_at: int | None = None,
        fid: str | None = None,
    ) -> ApiFileRow:
        """Store a small Files-API file given in memory (seeds); a new id unless given."""
        fid = fid or new_api_file_id()
        self.blob_path(fid).write_bytes(content)
        return self.add_api_file(
            fid, filename=filename, purpose=purpose, size=len(content), expires_at=expires_at
        )

    def get_api_file(self, fid: str) -> ApiFileRow | None:
        """A live Files-API file; one past its ``expires_at`` is gone, as on the service."""
        row = self._db.execute(
            f"SELECT {API_FILE_COLUMNS} FROM api_files WHERE id = ? AND deleted = 0"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (fid, self.clock.now()),
        ).fetchone()
        return api_file_row(row) if row else None

    def list_api_files(
        self, *, limit: int, order: Order, after: str | None, purpose: str | None
    ) -> Page:
        where = "deleted = 0 AND (expires_at IS NULL OR expires_at > ?)"
        params: list[Any] = [self.clock.now()]
        if purpose is not None:
            where += " AND purpose = ?"
            params.append(purpose)
        return self._page(
            "api_files",
            API_FILE_COLUMNS,
            where,
            params,
            "1",
            [],
            limit=limit,
            order=order,
            after=after,
            make=api_file_row,
        )

    def expire_api_files(self) -> list[str]:
        """Drop Files-API files past their ``expires_at``; returns the blobs to remove."""
        now = self.clock.now()
        rows = self._db.execute(
            "SELECT id FROM api_files WHERE deleted = 0 AND expires_at <= ?", (now,)
        ).fetchall()
        self._db.execute(
            "UPDATE api_files SET deleted = 1 WHERE deleted = 0 AND expires_at <= ?", (now,)
        )
        return [fid for (fid,) in rows]

    def delete_api_file(self, fid: str) -> None:
        self._db.execute("UPDATE api_files SET deleted = 1 WHERE id = ?", (fid,))

    def all_api_files(self) -> list[ApiFileRow]:
        rows = self._db.execute(
            f"SELECT {API_FILE_COLUMNS} FROM api_files WHERE deleted = 0"
            " AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at, seq",
            (self.clock.now(),),
        ).fetchall()
        return [api_file_row(r) for r in rows]

    def count_api_files(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM api_files WHERE deleted = 0").fetchone()
        return int(n)

    # -- blobs ------------------------------------------------------------------------------

    def blob_path(self, fid: str) -> Path:
        return self.blob_dir / fid

    def incoming_path(self) -> Path:
        return self.incoming_dir / secrets.token_hex(16)

    def copy_blob(self, source_fid: str, fid: str) -> None:
        """Blocking: copy one blob to a new id (a Files-API file brought into a container)."""
        shutil.copyfile(self.blob_path(source_fid), self.blob_path(fid))

    def remove_blobs(self, fids: Iterable[str]) -> None:
        """Blocking: call from a worker thread when the files may be large."""
        for fid in fids:
            self.blob_path(fid).unlink(missing_ok=True)

    # -- helpers ----------------------------------------------------------------------------

    def _live_file_ids(self, cid: str) -> list[str]:
        rows = self._db.execute(
            "SELECT id FROM files WHERE container_id = ? AND deleted = 0", (cid,)
        ).fetchall()
        return [fid for (fid,) in rows]

    def _page(
        self,
        table: str,
        columns: str,
        where: str,
        params: list[Any],
        cursor_scope: str,
        cursor_params: list[Any],
        *,
        limit: int,
        order: Order,
        after: str | None,
        make: Callable[[tuple[Any, ...]], Any],
    ) -> Page:
        """One page of ``make(row)`` in (created_at, seq) order; one extra row is read to tell
        ``has_more``.

        The cursor may name a tombstone: a listing keeps its place when the last object of
        the previous page was deleted meanwhile.
        """
        direction, compare = ("DESC", "<") if order == "desc" else ("ASC", ">")
        if after is not None:
            anchor = self._db.execute(
                f"SELECT created_at, seq FROM {table} WHERE id = ? AND {cursor_scope}",
                [after, *cursor_params],
            ).fetchone()
            if anchor is None:
                raise UnknownCursor(after)
            where += f" AND (created_at, seq) {compare} (?, ?)"
            params = [*params, *anchor]
        rows = self._db.execute(
            f"SELECT {columns} FROM {table} WHERE {where}"
            f" ORDER BY created_at {direction}, seq {direction} LIMIT ?",
            [*params, limit + 1],
        ).fetchall()
        return Page([make(r) for r in rows[:limit]], len(rows) > limit)
