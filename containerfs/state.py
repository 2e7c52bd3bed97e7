"""The local state directory: aliases, local directories, the pending-upload queue, and what
the containers this mount created were created with.

One SQLite database (``state.db``) plus the ``spool/`` directory of spool files, both private
to the user (mode 0700/0600). Rows are keyed by the API endpoint, so two mounts of different
services never see each other's names. Every method is synchronous and quick; callers on the
trio loop go through ``trio.to_thread`` (the ``*_async`` helpers do that). Knows nothing about
FUSE or HTTP.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from containerfs.errors import StateError as StateError
from containerfs.models import ContainerId, FileId
from containerfs.private import make_tree_private, private_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS aliases (
    endpoint TEXT NOT NULL, container_id TEXT NOT NULL, file_id TEXT NOT NULL,
    path TEXT NOT NULL, PRIMARY KEY (endpoint, file_id));
CREATE TABLE IF NOT EXISTS dirs (
    endpoint TEXT NOT NULL, container_id TEXT NOT NULL, path TEXT NOT NULL,
    PRIMARY KEY (endpoint, container_id, path));
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, container_id TEXT NOT NULL,
    path TEXT NOT NULL, spool TEXT NOT NULL, old_file_id TEXT, created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS pending_replaces (
    pending_id TEXT NOT NULL, container_id TEXT NOT NULL, file_id TEXT NOT NULL,
    PRIMARY KEY (pending_id, container_id, file_id));
CREATE TABLE IF NOT EXISTS orphans (
    endpoint TEXT NOT NULL, container_id TEXT NOT NULL, file_id TEXT NOT NULL,
    PRIMARY KEY (endpoint, file_id));
CREATE TABLE IF NOT EXISTS created_with (
    endpoint TEXT NOT NULL, container_id TEXT NOT NULL, file_ids TEXT NOT NULL,
    skills TEXT NOT NULL, PRIMARY KEY (endpoint, container_id));
"""
# Every server file a pending upload supersedes (deleted once it is stored), with its own
# container: a rename over an uploaded file adds one, and a cross-container move must not
# carry the id into the new container. ``pending.old_file_id`` is what versions before this
# table recorded (one id, in the upload's container); it is still read, converted to a row
# when the record next changes, and never written again (NULL).

ServerFile = tuple[ContainerId, FileId]

_SEP = "\n"  # ids are plain tokens: a newline never occurs in one


@dataclass(frozen=True)
class CreatedWith:
    """The Files-API files and skills a container was created with through this mount: the
    container object does not carry them, so only the creator knows."""

    file_ids: tuple[str, ...]
    skills: tuple[str, ...]


class StateLock:
    """What makes a state directory one mount's: an exclusive ``flock`` on ``DIR/lock``, held
    for the daemon's life. The kernel drops it when the process ends, however it ends (a
    ``kill -9`` leaves no stale lock). The file names its holder, for the message a second
    mount gets; it is never deleted (a deletion would race with the next mount's lock).
    """

    NAME = "lock"

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, directory: Path, *, mountpoint: str) -> StateLock:
        """Lock ``directory`` for the mount at ``mountpoint``, or raise ``StateError`` naming
        the mount that holds it."""
        private_dir(directory)
        path = directory / cls.NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateError(
                f"the state directory {directory} is in use by {holder};"
                " give each mount its own --state-dir"
            ) from None
        except OSError as err:
            os.close(fd)
            raise StateError(f"cannot lock the state directory {directory}: {err}") from None
        owner = json.dumps({"pid": os.getpid(), "mountpoint": mountpoint}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner, 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the only descriptor drops the lock


def _holder(fd: int) -> str:
    """The mount a lock file names, as a message fragment."""
    try:
        owner = json.loads(os.pread(fd, 4096, 0))
        return f"the mount of {owner['mountpoint']} (pid {int(owner['pid'])})"
    except (OSError, ValueError, KeyError, TypeError):  # written by another version, or torn
        return "another mount"


@dataclass(frozen=True)
class PendingUpload:
    """An upload not yet confirmed by the server. ``old_file_id``: the file it replaces in
    its own container; ``replaces``: every server file it supersedes, with its container."""

    id: str
    container_id: ContainerId
    path: str
    spool: Path
    old_file_id: FileId | None
    created: float
    attempts: int
    last_error: str | None
    replaces: tuple[ServerFile, ...] = ()


class State:
    def __init__(self, directory: Path, *, endpoint: str) -> None:
        self.directory = directory
        self.endpoint = endpoint
        private_dir(directory)
        self.spool_dir = private_dir(directory / "spool")
        self._lock = threading.Lock()
        path = directory / "state.db"
        try:
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.commit()
        except sqlite3.Error as err:
            raise StateError(
                f"the state database {path} is unusable ({err}); move it aside to start afresh"
            ) from err
        # an older version left the database, its sidecars, logs and mounts/ readable by all
        make_tree_private(directory)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        return self._run_all([(sql, args)])

    def _run_all(
        self, statements: Sequence[tuple[str, tuple[object, ...]]]
    ) -> list[tuple[object, ...]]:
        """Run ``statements`` in one transaction (all or none); the last one's rows."""
        with self._lock:
            try:
                rows: list[tuple[object, ...]] = []
                for sql, args in statements:
                    rows = self._db.execute(sql, args).fetchall()
                self._db.commit()
            except sqlite3.Error as err:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                # a full disk is ENOSPC where it surfaces (a close that could not queue its
                # upload), not an unexpected error
                full = "full" in str(err).lower()
                raise StateError.with_errno(
                    errno.ENOSPC if full else errno.EIO, f"the state database failed: {err}"
                ) from err
            return rows

    # aliases: file id -> display path chosen through the mount
    def aliases(self, cid: ContainerId) -> dict[FileId, str]:
        rows = self._run(
            "SELECT file_id, path FROM aliases WHERE endpoint=? AND container_id=?",
            (self.endpoint, cid),
        )
        return {FileId(str(f)): str(p) for f, p in rows}

    def set_alias(self, cid: ContainerId, fid: FileId, path: str) -> None:
        self._run(
            "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)", (self.endpoint, cid, fid, path)
        )

    def drop_alias(self, fid: FileId) -> None:
        self._run("DELETE FROM aliases WHERE endpoint=? AND file_id=?", (self.endpoint, fid))

    # superseded server files whose delete failed: retried, by this mount or the next
    def add_orphan(self, cid: ContainerId, fid: FileId) -> None:
        self._run("INSERT OR IGNORE INTO orphans VALUES (?, ?, ?)", (self.endpoint, cid, fid))

    def drop_orphan(self, fid: FileId) -> None:
        self._run("DELETE FROM orphans WHERE endpoint=? AND file_id=?", (self.endpoint, fid))

    def orphans(self) -> list[ServerFile]:
        rows = self._run(
            "SELECT container_id, file_id FROM orphans WHERE endpoint=? ORDER BY rowid",
            (self.endpoint,),
        )
        return [(ContainerId(str(c)), FileId(str(f))) for c, f in rows]

    # directories made with mkdir inside a container
    def dirs(self, cid: ContainerId) -> set[str]:
        rows = self._run(
            "SELECT path FROM dirs WHERE endpoint=? AND container_id=?", (self.endpoint, cid)
        )
        return {str(p) for (p,) in rows}

    def add_dir(self, cid: ContainerId, path: str) -> None:
        self._run("INSERT OR IGNORE INTO dirs VALUES (?, ?, ?)", (self.endpoint, cid, path))

    def drop_dir(self, cid: ContainerId, path: str) -> None:
        self._run(
            "DELETE FROM dirs WHERE endpoint=? AND container_id=? AND path=?",
            (self.endpoint, cid, path),
        )

    # what a container made through the mount was created with
    def set_created_with(self, cid: ContainerId, created: CreatedWith) -> None:
        self._run(
            "INSERT OR REPLACE INTO created_with VALUES (?, ?, ?, ?)",
            (self.endpoint, cid, _SEP.join(created.file_ids), _SEP.join(created.skills)),
        )

    def created_with(self, cid: ContainerId) -> CreatedWith | None:
        rows = self._run(
            "SELECT file_ids, skills FROM created_with WHERE endpoint=? AND container_id=?",
            (self.endpoint, cid),
        )
        if not rows:
            return None
        files, skills = (str(v) for v in rows[0])
        return CreatedWith(
            tuple(files.split(_SEP)) if files else (), tuple(skills.split(_SEP)) if skills else ()
        )

    def forget_container(self, cid: ContainerId) -> None:
        for table in ("aliases", "dirs", "pending", "created_with"):
            self._run(
                f"DELETE FROM {table} WHERE endpoint=? AND container_id=?", (self.endpoint, cid)
            )
        self._run("DELETE FROM pending_replaces WHERE pending_id NOT IN (SELECT id FROM pending)")

    # spool files and the durable queue of uploads not yet confirmed by the server
    def new_spool_path(self) -> Path:
        return self.spool_dir / uuid.uuid4().hex

    def add_pending(
        self,
        cid: ContainerId,
        path: str,
        spool: Path,
        old_file_id: FileId | None,
        *,
        replaces: Sequence[ServerFile] = (),
    ) -> PendingUpload:
        """Queue an upload of ``spool`` as ``path``; it supersedes ``old_file_id`` (in
        ``cid``) and every file of ``replaces``."""
        every = _unique([*([(cid, old_file_id)] if old_file_id else []), *replaces])
        item = PendingUpload(
            uuid.uuid4().hex, cid, path, spool, old_file_id, time.time(), 0, None, every
        )
        self._run_all(
            [
                (
                    "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL)",
                    (item.id, self.endpoint, cid, path, str(spool), None, item.created),
                ),
                *_replace_rows(item.id, every),
            ]
        )
        return item

    def update_pending(
        self,
        pid: str,
        *,
        path: str | None = None,
        container_id: ContainerId | None = None,
        error: str | None = None,
        replaces: Sequence[ServerFile] | None = None,
    ) -> None:
        """Change a pending record in one transaction. ``replaces``: the files it supersedes
        from now on (all of them, each with its container)."""
        # an older version's old_file_id belongs to the container the record had: a row first
        statements: list[tuple[str, tuple[object, ...]]] = [
            (
                "INSERT OR IGNORE INTO pending_replaces SELECT id, container_id, old_file_id"
                " FROM pending WHERE id=? AND old_file_id IS NOT NULL",
                (pid,),
            ),
            ("UPDATE pending SET old_file_id=NULL WHERE id=?", (pid,)),
        ]
        if path is not None:
            statements.append(("UPDATE pending SET path=? WHERE id=?", (path, pid)))
        if container_id is not None:
            statements.append(("UPDATE pending SET container_id=? WHERE id=?", (container_id, pid)))
        if error is not None:
            statements.append(
                ("UPDATE pending SET attempts=attempts+1, last_error=? WHERE id=?", (error, pid))
            )
        if replaces is not None:
            statements.append(("DELETE FROM pending_replaces WHERE pending_id=?", (pid,)))
            statements += _replace_rows(pid, _unique(replaces))
        self._run_all(statements)

    def drop_pending(self, pid: str) -> None:
        self._run_all(
            [
                ("DELETE FROM pending_replaces WHERE pending_id=?", (pid,)),
                ("DELETE FROM pending WHERE id=?", (pid,)),
            ]
        )

    def pending(self) -> list[PendingUpload]:
        rows = self._run(
            "SELECT id, container_id, path, spool, old_file_id, created, attempts, last_error"
            " FROM pending WHERE endpoint=? ORDER BY created",
            (self.endpoint,),
        )
        replaced: dict[str, list[ServerFile]] = {}
        for pid, cid, fid in self._run(
            "SELECT r.pending_id, r.container_id, r.file_id FROM pending_replaces r"
            " JOIN pending p ON p.id = r.pending_id WHERE p.endpoint=? ORDER BY r.rowid",
            (self.endpoint,),
        ):
            replaced.setdefault(str(pid), []).append((ContainerId(str(cid)), FileId(str(fid))))
        items = []
        for r in rows:
            pid, cid = str(r[0]), ContainerId(str(r[1]))
            legacy = [(cid, FileId(str(r[4])))] if r[4] else []
            every = _unique([*legacy, *replaced.get(pid, [])])
            items.append(
                PendingUpload(
                    pid,
                    cid,
                    str(r[2]),
                    Path(str(r[3])),
                    next((f for c, f in every if c == cid), None),
                    float(r[5]),  # type: ignore[arg-type]
                    int(r[6]),  # type: ignore[call-overload]
                    str(r[7]) if r[7] is not None else None,
                    every,
                )
            )
        return items


def _unique(files: Sequence[ServerFile]) -> tuple[ServerFile, ...]:
    return tuple(dict.fromkeys(files))


def _replace_rows(pid: str, files: Sequence[ServerFile]) -> list[tuple[str, tuple[object, ...]]]:
    return [
        ("INSERT OR IGNORE INTO pending_replaces VALUES (?, ?, ?)", (pid, cid, fid))
        for cid, fid in files
    ]
