"""Direct I/O: aligned block writes and reads through pooled staging buffers, byte-exact."""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from containerfs import directio
from containerfs.directio import ALIGN, STAGING_BYTES


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _direct_fd(path: Path) -> int:
    fd = directio.open_direct(path, os.O_RDWR | os.O_CREAT)
    if fd is None:
        pytest.skip("this file system has no O_DIRECT")
    return fd


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(min_value=1, max_value=3 * ALIGN + 17),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=8),
    read_at=st.integers(min_value=0, max_value=4 * ALIGN),
    read_len=st.integers(min_value=0, max_value=4 * ALIGN),
)
def test_a_padded_write_then_truncate_reads_back_byte_for_byte(
    tmp_path: Path, size: int, cuts: list[int], read_at: int, read_len: int
) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    fd = _direct_fd(path)
    try:
        directio.write_blocks(fd, _chunks(data, cuts), size, 0, pad=True)
        os.ftruncate(fd, size)
        assert directio.read_blocks(fd, read_len, read_at) == data[read_at : read_at + read_len]
    finally:
        os.close(fd)
    assert path.read_bytes() == data  # and a buffered reader sees the same bytes


def test_writes_larger_than_a_staging_buffer_land_in_order(tmp_path: Path) -> None:
    data = os.urandom(2 * STAGING_BYTES + 3 * ALIGN)
    fd = _direct_fd(tmp_path / "f")
    try:
        aligned = directio.align_down(len(data))
        directio.write_blocks(fd, [data[:100], data[100:aligned]], aligned, 0, pad=False)
        directio.write_blocks(fd, [data[aligned:]], len(data) - aligned, aligned, pad=True)
        os.ftruncate(fd, len(data))
        assert directio.read_blocks(fd, len(data), 0) == data
        assert directio.read_blocks(fd, 10, len(data) - 4) == data[-4:]  # short at the end
        assert directio.read_blocks(fd, 10, len(data) + ALIGN) == b""
    finally:
        os.close(fd)


def test_an_unaligned_write_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    fd = _direct_fd(tmp_path / "f")
    try:
        with pytest.raises(ValueError, match="unaligned"):
            directio.write_blocks(fd, [b"x" * ALIGN], ALIGN, 100, pad=False)
        with pytest.raises(ValueError, match="unaligned"):
            directio.write_blocks(fd, [b"x" * 100], 100, 0, pad=False)
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)


def test_a_file_system_refusing_o_direct_gives_none_to_fall_back_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_direct)
    assert directio.open_direct(tmp_path / "f", os.O_WRONLY | os.O_CREAT) is None
    assert directio.refused(OSError(errno.EOPNOTSUPP, "no"))
    assert not directio.refused(OSError(errno.ENOSPC, "full"))


def test_other_open_errors_are_raised(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        directio.open_direct(tmp_path / "missing" / "f", os.O_WRONLY | os.O_CREAT)
