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
CREATE TABLE IF NOT EXISTS created_with (
    endpoint TEXT NOT NULL, container_id TEXT NOT NULL, file_ids TEXT NOT NULL,
    skills TEXT NOT NULL, PRIMARY KEY (endpoint, container_id));
"""

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
    id: str
    container_id: ContainerId
    path: str
    spool: Path
    old_file_id: FileId | None
    created: float
    attempts: int
    last_error: str | None


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
        with self._lock:
            try:
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

    # spool files and the durable queue of uploads not yet confirmed by the server
    def new_spool_path(self) -> Path:
        return self.spool_dir / uuid.uuid4().hex

    def add_pending(
        self, cid: ContainerId, path: str, spool: Path, old_file_id: FileId | None
    ) -> PendingUpload:
        item = PendingUpload(uuid.uuid4().hex, cid, path, spool, old_file_id, time.time(), 0, None)
        self._run(
            "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL)",
            (item.id, self.endpoint, cid, path, str(spool), old_file_id, item.created),
        )
        return item

    def update_pending(
        self,
        pid: str,
        *,
        path: str | None = None,
        container_id: ContainerId | None = None,
        error: str | None = None,
    ) -> None:
        if path is not None:
            self._run("UPDATE pending SET path=? WHERE id=?", (path, pid))
        if container_id is not None:
            self._run("UPDATE pending SET container_id=? WHERE id=?", (container_id, pid))
        if error is not None:
            self._run(
                "UPDATE pending SET attempts=attempts+1, last_error=? WHERE id=?", (error, pid)
            )

    def drop_pending(self, pid: str) -> None:
        self._run("DELETE FROM pending WHERE id=?", (pid,))

    def pending(self) -> list[PendingUpload]:
        rows = self._run(
            "SELECT id, container_id, path, spool, old_file_id, created, attempts, last_error"
            " FROM pending WHERE endpoint=? ORDER BY created",
            (self.endpoint,),
        )
        return [
            PendingUpload(
                str(r[0]),
                ContainerId(str(r[1])),
                str(r[2]),
                Path(str(r[3])),
                FileId(str(r[4])) if r[4] else None,
                float(r[5]),  # type: ignore[arg-type]
                int(r[6]),  # type: ignore[call-overload]
                str(r[7]) if r[7] is not None else None,
            )
            for r in rows
        ]
