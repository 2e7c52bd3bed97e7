"""The status snapshot: what the daemon writes is what ``containerfs status`` reads, field for
field, and a damaged status file is reported in one line, never a traceback."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from containerfs.cli import main
from containerfs.clistatus import PROGRESS_EVERY, WaitReport
from containerfs.daemon.mount import run_dir
from containerfs.daemon.status import (
    InFlight,
    Pending,
    Status,
    pending_in_mount,
    transfers_in_mount,
)
from containerfs.errors import StatusError
from containerfs.models import ContainerId, FileId
from containerfs.snapshots import (
    ClientStats,
    NamespaceStats,
    PendingItem,
    ReaderStats,
    SizeStats,
    TransferStats,
    WriterStats,
)

counts = st.integers(min_value=0, max_value=2**40)


def _stats(cls: type, numbers: st.SearchStrategy[int] = counts) -> st.SearchStrategy[object]:
    return st.builds(cls, **{f.name: numbers for f in dataclasses.fields(cls)})


statuses = st.builds(
    Status,
    pid=counts,
    mountpoint=st.text(),
    endpoint=st.text(),
    started=st.floats(min_value=0, max_value=2e9),
    api=st.builds(
        ClientStats,
        requests=st.dictionaries(st.text(max_size=8), counts, max_size=4),
        bytes_up=counts,
        bytes_down=counts,
        retries=counts,
        errors=st.dictionaries(st.text(max_size=8), counts, max_size=4),
        adopted=counts,
        rate_limit_waits=counts,
        rate_limit_wait_seconds=st.floats(min_value=0, max_value=1e6),
    ),
    cache=st.none() | _stats(ReaderStats),
    writer=st.none() | _stats(WriterStats),
    namespace=st.none() | _stats(NamespaceStats),
    sizes=st.none() | _stats(SizeStats),
    pending=st.lists(
        st.builds(
            Pending,
            path=st.text(max_size=8),
            container_id=st.text(max_size=8),
            name=st.text(max_size=8),
            bytes=counts,
            state=st.sampled_from(["deferred", "failed"]),
            error=st.none() | st.text(max_size=8),
        ),
        max_size=3,
    ).map(tuple),
    in_flight=st.lists(
        st.builds(
            InFlight,
            direction=st.sampled_from(["upload", "download"]),
            path=st.text(max_size=8),
            done=counts,
            total=st.none() | counts,
            rate=st.floats(min_value=0, max_value=1e12),
            elapsed=st.floats(min_value=0, max_value=1e6),
        ),
        max_size=3,
    ).map(tuple),
)


@given(statuses)
def test_a_status_reads_back_as_written(status: Status) -> None:
    assert Status.from_json(status.to_json()) == status


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{", "not JSON"),
        ("[]", "expected an object"),
        ('{"pid": 1}', "missing 'mountpoint'"),
    ],
)
def test_a_damaged_status_file_raises_a_status_error(text: str, complaint: str) -> None:
    with pytest.raises(StatusError, match=complaint):
        Status.from_json(text)


def test_a_field_of_the_wrong_type_is_named(tmp_path: Path) -> None:
    data = json.loads(_status(pid=1).to_json())
    data["cache"]["hits"] = "many"
    with pytest.raises(StatusError, match=r"status\.cache\.hits: expected int"):
        Status.from_json(json.dumps(data))


def _status(*, pid: int, **reader: int) -> Status:
    zero = {f.name: 0 for f in dataclasses.fields(ReaderStats)} | reader
    return Status(
        pid=pid,
        mountpoint="/m",
        endpoint="http://api/v1",
        started=0.0,
        api=ClientStats({"list_files": 2}, 10, 20, 1, {}, 0, 0, 0.0),
        cache=ReaderStats(**{**zero, "cache_bytes_used": 4096, "entries": 3, "hits": 5}),
        writer=None,
        namespace=None,
        sizes=None,
        pending=(Pending("/m/proj/a.txt", "cntr_1", "a.txt", 7, "failed", "HTTP 500"),),
        in_flight=(
            InFlight("upload", "/m/proj/big.iso", 3 << 29, 3 << 30, 48 << 20, 12.0),
            InFlight("download", "/m/proj/out.csv", 1 << 20, None, 0.0, 1.0),
        ),
    )


def _write_status(tmp_path: Path, text: str) -> Path:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir(exist_ok=True)
    rdir = run_dir(tmp_path / "state", mountpoint)
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "status.json").write_text(text)
    return mountpoint


def test_status_shows_the_cache_use_the_daemon_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mountpoint = _write_status(tmp_path, _status(pid=os.getpid()).to_json())
    assert main(["status", str(mountpoint), "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert "cache        4.0 KiB of 0 B in 3 entries, hits 5, misses 0" in out
    assert "api calls    2  list_files=2" in out
    assert "  /m/proj/a.txt  7 B  failed  (HTTP 500)" in out
    assert "in flight    2" in out
    assert "  upload    /m/proj/big.iso  1.5 GiB of 3.0 GiB (50%), 48.0 MiB/s, 32 s left" in out
    assert "  download  /m/proj/out.csv  1.0 MiB of ?, 0 B/s" in out


def test_status_counts_the_files_prefetched_ahead_of_a_walk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _status(pid=os.getpid(), prefetches=9, prefetches_used=7, prefetches_failed=1)
    mountpoint = _write_status(tmp_path, status.to_json())
    assert main(["status", str(mountpoint), "--state-dir", str(tmp_path / "state")]) == 0
    assert "prefetch     9 files ahead of a walk, 7 used, 1 failed" in capsys.readouterr().out


def test_status_with_a_damaged_file_says_no_daemon_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mountpoint = _write_status(tmp_path, '{"pid": ' + str(os.getpid()) + "}")
    assert main(["status", str(mountpoint), "--state-dir", str(tmp_path / "state")]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"containerfs: no containerfs daemon serves {mountpoint}"
    ]


def test_a_status_from_a_daemon_without_transfers_reads_with_none_in_flight() -> None:
    data = json.loads(_status(pid=1).to_json())
    del data["in_flight"]
    assert Status.from_json(json.dumps(data)).in_flight == ()


class FakePlaces:
    """Container ``cntr_1`` shows as ``proj``; one file id is listed."""

    def shown_path(self, cid: ContainerId, path: str) -> str:
        top = "proj" if cid == "cntr_1" else cid
        return f"{top}/{path}"

    def file_path(self, cid: ContainerId, fid: FileId) -> str | None:
        return "data/out.csv" if fid == "cfile_listed" else None


def test_transfers_and_pending_uploads_are_named_by_their_paths_in_the_mount() -> None:
    transfers = [
        TransferStats("upload", "cntr_1", "d/big.bin", 10, 100, 5.0, 2.0),
        TransferStats("download", "cntr_1", "cfile_listed", 1, 2, 0.5, 2.0),
        TransferStats("download", "cntr_9", "cfile_gone", 1, None, 0.5, 2.0),
    ]
    named = transfers_in_mount(transfers, FakePlaces(), "/m")
    assert [(t.direction, t.path, t.done, t.total) for t in named] == [
        ("upload", "/m/proj/d/big.bin", 10, 100),
        ("download", "/m/proj/data/out.csv", 1, 2),
        ("download", "/m/cntr_9/cfile_gone", 1, None),
    ]
    [item] = pending_in_mount(
        [PendingItem("cntr_1", "a.txt", 7, "failed", "500")], FakePlaces(), "/m"
    )
    assert (item.path, item.container_id, item.name) == ("/m/proj/a.txt", "cntr_1", "a.txt")


def _waiting(*items: InFlight | Pending) -> Status:
    status = _status(pid=1)
    return dataclasses.replace(
        status,
        in_flight=tuple(i for i in items if isinstance(i, InFlight)),
        pending=tuple(i for i in items if isinstance(i, Pending)),
    )


def test_unmount_reports_each_item_once_then_the_progress_of_uploads_under_way() -> None:
    stuck = Pending("/m/proj/stuck.txt", "cntr_1", "stuck.txt", 16, "failed", "HTTP 500")
    retried = Pending("/m/proj/big.bin", "cntr_1", "big.bin", 4 << 20, "failed", "timeout")

    def sending(done: int) -> InFlight:
        return InFlight("upload", "/m/proj/big.bin", done, 4 << 20, 1 << 20, 1.0)

    report = WaitReport()
    first = report.lines(_waiting(sending(1 << 20), retried, stuck), now=0.0)
    assert first == [
        "waiting for 2 pending upload(s):",
        "  /m/proj/big.bin  uploading 1.0 MiB of 4.0 MiB (25%), 1.0 MiB/s, 3 s left",
        "  /m/proj/stuck.txt  16 B, failed: HTTP 500",
    ]
    assert report.lines(_waiting(sending(2 << 20), retried, stuck), now=1.0) == []  # too soon
    later = report.lines(_waiting(sending(3 << 20), retried, stuck), now=PROGRESS_EVERY + 0.5)
    assert later == ["  /m/proj/big.bin  uploading 3.0 MiB of 4.0 MiB (75%), 1.0 MiB/s, 1 s left"]
    assert report.lines(_waiting(sending(3 << 20), retried, stuck), now=10.0) == []  # no move
    assert report.lines(_waiting(stuck), now=10.5) == [
        "waiting for 1 pending upload(s):",
        "  /m/proj/stuck.txt  16 B, failed: HTTP 500",
    ]
    assert report.lines(None, now=11.0) == []
