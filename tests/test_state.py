"""The state directory: aliases, local directories and pending uploads survive a reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from containerfs.errors import StateError
from containerfs.models import ContainerId, FileId
from containerfs.state import CreatedWith, State, StateLock

CID = ContainerId("cntr_" + "a" * 48)
FID = FileId("cfile_" + "b" * 32)


def test_aliases_dirs_and_pending_survive_a_reopen(tmp_path: Path) -> None:
    state = State(tmp_path, endpoint="http://one/v1")
    state.set_alias(CID, FID, "d/x.txt")
    state.add_dir(CID, "d/empty")
    spool = state.new_spool_path()
    spool.write_bytes(b"data")
    item = state.add_pending(CID, "d/x.txt", spool, FID)
    state.close()

    again = State(tmp_path, endpoint="http://one/v1")
    assert again.aliases(CID) == {FID: "d/x.txt"}
    assert again.dirs(CID) == {"d/empty"}
    [pending] = again.pending()
    assert (pending.id, pending.path, pending.spool, pending.old_file_id) == (
        item.id,
        "d/x.txt",
        spool,
        FID,
    )
    other = State(tmp_path, endpoint="http://two/v1")
    assert other.aliases(CID) == {} and other.pending() == []
    again.forget_container(CID)
    assert again.aliases(CID) == {} and again.dirs(CID) == set() and again.pending() == []


CID2 = ContainerId("cntr_" + "c" * 48)
FID2 = FileId("cfile_" + "d" * 32)


def test_every_file_a_pending_upload_replaces_survives_a_reopen(tmp_path: Path) -> None:
    state = State(tmp_path, endpoint="e")
    item = state.add_pending(CID, "x", state.new_spool_path(), None)
    assert item.replaces == ()
    state.update_pending(item.id, path="b", replaces=[(CID, FID), (CID2, FID2), (CID, FID)])
    state.close()

    [pending] = State(tmp_path, endpoint="e").pending()
    assert pending.path == "b" and pending.old_file_id == FID
    assert pending.replaces == ((CID, FID), (CID2, FID2))


def test_deletes_left_to_retry_survive_a_reopen_once_each_and_per_endpoint(
    tmp_path: Path,
) -> None:
    state = State(tmp_path, endpoint="e")
    state.add_orphan(CID, FID)
    state.add_orphan(CID2, FID2)
    state.add_orphan(CID, FID)  # failed again: still one
    state.close()
    state = State(tmp_path, endpoint="e")
    assert state.orphans() == [(CID, FID), (CID2, FID2)]
    assert State(tmp_path, endpoint="other").orphans() == []
    state.drop_orphan(FID)
    assert state.orphans() == [(CID2, FID2)]


def test_a_pending_upload_moved_to_another_container_keeps_its_replaced_file_where_it_is(
    tmp_path: Path,
) -> None:
    state = State(tmp_path, endpoint="e")
    item = state.add_pending(CID, "x", state.new_spool_path(), FID)
    state.update_pending(item.id, container_id=CID2)
    [pending] = state.pending()
    assert pending.container_id == CID2 and pending.old_file_id is None
    assert pending.replaces == ((CID, FID),)
    state.drop_pending(item.id)
    assert state.pending() == []


def test_a_database_of_an_older_version_is_read_and_converted(tmp_path: Path) -> None:
    """Before every replaced file was kept, a pending record held one id in its column."""
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(
        """
        CREATE TABLE pending (
            id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, container_id TEXT NOT NULL,
            path TEXT NOT NULL, spool TEXT NOT NULL, old_file_id TEXT, created REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
        """
    )
    db.execute(
        "INSERT INTO pending VALUES ('p1', 'e', ?, 'x', ?, ?, 1.0, 0, NULL)",
        (CID, str(tmp_path / "spool" / "s"), FID),
    )
    db.commit()
    db.close()

    state = State(tmp_path, endpoint="e")
    [pending] = state.pending()
    assert pending.old_file_id == FID and pending.replaces == ((CID, FID),)
    state.update_pending("p1", container_id=CID2, replaces=[(CID2, FID2), *pending.replaces])
    [moved] = state.pending()
    assert moved.replaces == ((CID2, FID2), (CID, FID)) and moved.old_file_id == FID2


def test_state_directory_and_spools_are_private(tmp_path: Path) -> None:
    state = State(tmp_path / "s", endpoint="e")
    assert (tmp_path / "s").stat().st_mode & 0o077 == 0
    assert state.spool_dir.stat().st_mode & 0o077 == 0


def test_a_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_text("not a database")
    with pytest.raises(StateError, match="unusable"):
        State(tmp_path, endpoint="e")


def test_what_a_container_was_created_with_survives_a_reopen_per_endpoint(
    tmp_path: Path,
) -> None:
    state = State(tmp_path, endpoint="http://one/v1")
    state.set_created_with(CID, CreatedWith(("file-a", "file-b"), ("skill_1",)))
    other = ContainerId("cntr_" + "c" * 48)
    state.set_created_with(other, CreatedWith((), ()))
    state.close()

    again = State(tmp_path, endpoint="http://one/v1")
    assert again.created_with(CID) == CreatedWith(("file-a", "file-b"), ("skill_1",))
    assert again.created_with(other) == CreatedWith((), ())  # made here, with nothing
    elsewhere = State(tmp_path, endpoint="http://two/v1")
    assert elsewhere.created_with(CID) is None
    elsewhere.close()
    again.forget_container(CID)
    assert again.created_with(CID) is None
    again.close()


def test_a_locked_state_directory_refuses_a_second_lock_naming_the_first(tmp_path: Path) -> None:
    first = StateLock.acquire(tmp_path, mountpoint="/m/one")
    try:
        with pytest.raises(StateError, match=r"in use by the mount of /m/one \(pid \d+\)"):
            StateLock.acquire(tmp_path, mountpoint="/m/two")
    finally:
        first.release()
    again = StateLock.acquire(tmp_path, mountpoint="/m/two")  # released: free again
    again.release()


def test_files_an_older_version_left_readable_are_made_private(tmp_path: Path) -> None:
    for name in ("state.db", "mounts/abc/log", "mounts/abc/status.json", "spool/x"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        path.chmod(0o644)
    (tmp_path / "mounts").chmod(0o755)
    state = State(tmp_path, endpoint="e")
    state.close()
    loose = [p for p in [tmp_path, *tmp_path.rglob("*")] if p.stat().st_mode & 0o077]
    assert loose == []
