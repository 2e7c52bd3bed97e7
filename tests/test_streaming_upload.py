"""A file written from offset 0 straight on is uploaded while it is written, and every way of
breaking that (a seek back, a truncate, a second writer, a failed stream) falls back to the
upload at close, leaving exactly one correct file on the server. Handler-level, over the
emulator app in-process."""

from __future__ import annotations

import os
from typing import Any

import trio
from fs_harness import CTX, Fs, setattr_fields

from containerfs.config import STREAM_AFTER

CHUNK = 128 * 1024
BIG = STREAM_AFTER * 3


def content(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


async def receiving(fs: Fs) -> int:
    response = await fs.admin.get("/_emulator/stats")
    response.raise_for_status()
    return int(response.json()["bytes_receiving"])


async def until_received(fs: Fs, least: int) -> None:
    """Wait (a hang guard, not a timing claim) until the emulator has this much of a body."""
    with trio.fail_after(30):
        while await receiving(fs) < least:
            await trio.sleep(0.01)


async def create(fs: Fs, name: str) -> tuple[int, int]:
    box = await fs.inode("box")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    info, entry = await fs.ops.create(box, name.encode(), 0o644, flags, CTX)
    return info.fh, entry.st_ino


async def write_all(fs: Fs, fh: int, data: bytes, start: int = 0) -> None:
    for off in range(0, len(data), CHUNK):
        assert await fs.ops.write(fh, start + off, data[off : off + CHUNK]) == len(
            data[off : off + CHUNK]
        )


async def close(fs: Fs, fh: int) -> None:
    await fs.ops.flush(fh)
    await fs.ops.release(fh)


async def test_a_file_written_straight_on_is_uploading_before_it_is_closed(fs: Fs) -> None:
    c = await fs.container("box")
    data = content(BIG)
    fh, _ = await create(fs, "big.bin")
    await write_all(fs, fh, data)
    # the body is arriving at the server while the file is still open
    await until_received(fs, 2 * STREAM_AFTER)
    assert await fs.server_files(c.id) == {}
    await close(fs, fh)
    assert await fs.server_files(c.id) == {"big.bin": data}
    stats = fs.writer.statistics()
    assert (stats.streamed, stats.stream_fallbacks, stats.uploads) == (1, 0, 1)
    assert await receiving(fs) == 0


async def test_a_small_file_is_uploaded_whole_at_close(fs: Fs) -> None:
    c = await fs.container("box")
    fh, _ = await create(fs, "small.txt")
    await write_all(fs, fh, b"tiny\n")
    await close(fs, fh)
    assert await fs.server_files(c.id) == {"small.txt": b"tiny\n"}
    assert fs.writer.statistics().streamed == 0


async def test_a_seek_back_falls_back_to_one_upload_at_close(fs: Fs) -> None:
    c = await fs.container("box")
    data = bytearray(content(BIG))
    fh, _ = await create(fs, "seek.bin")
    await write_all(fs, fh, bytes(data))
    await until_received(fs, STREAM_AFTER)
    await fs.ops.write(fh, 10, b"REWRITTEN")
    data[10:19] = b"REWRITTEN"
    await close(fs, fh)
    assert await fs.server_files(c.id) == {"seek.bin": bytes(data)}
    stats = fs.writer.statistics()
    assert (stats.streamed, stats.stream_fallbacks) == (0, 1)


async def test_a_truncate_while_streaming_falls_back_to_one_upload_at_close(fs: Fs) -> None:
    c = await fs.container("box")
    data = content(BIG)
    fh, ino = await create(fs, "trunc.bin")
    await write_all(fs, fh, data)
    await until_received(fs, STREAM_AFTER)
    attr: Any = await fs.ops.getattr(ino, CTX)
    attr.st_size = STREAM_AFTER + 5
    await fs.ops.setattr(ino, attr, setattr_fields("size"), fh, CTX)
    await close(fs, fh)
    assert await fs.server_files(c.id) == {"trunc.bin": data[: STREAM_AFTER + 5]}
    assert fs.writer.statistics().stream_fallbacks == 1


async def test_a_second_writer_falls_back_to_one_upload_of_the_last_close(fs: Fs) -> None:
    c = await fs.container("box")
    data = content(BIG)
    fh, ino = await create(fs, "two.bin")
    await write_all(fs, fh, data)
    await until_received(fs, STREAM_AFTER)
    other = await fs.ops.open(ino, os.O_WRONLY, CTX)
    await fs.ops.write(other.fh, 0, b"second")
    await close(fs, fh)
    await close(fs, other.fh)
    # the last writer to close wins, and no upload mixes the two
    assert await fs.server_files(c.id) == {"two.bin": b"second" + data[6:]}
    assert fs.writer.statistics().streamed == 0


async def test_a_stream_the_server_fails_falls_back_to_one_upload_at_close(fs: Fs) -> None:
    c = await fs.container("box")
    # the stream's attempt and its one retry fail; the upload at close then goes through
    await fs.faults([{"route": "upload_file", "action": "error", "status": 500, "count": 2}])
    data = content(BIG)
    fh, _ = await create(fs, "fail.bin")
    await write_all(fs, fh, data)
    await close(fs, fh)
    assert await fs.server_files(c.id) == {"fail.bin": data}
    stats = fs.writer.statistics()
    assert (stats.streamed, stats.stream_fallbacks, stats.uploads) == (0, 1, 1)


async def test_a_file_unlinked_while_streaming_leaves_nothing_on_the_server(fs: Fs) -> None:
    c = await fs.container("box")
    fh, _ = await create(fs, "gone.bin")
    await write_all(fs, fh, content(BIG))
    await until_received(fs, STREAM_AFTER)
    await fs.ops.unlink(await fs.inode("box"), b"gone.bin", CTX)
    await close(fs, fh)
    assert await fs.server_files(c.id) == {}
    with trio.fail_after(30):  # the broken-off body is discarded, not stored
        while await receiving(fs):
            await trio.sleep(0.01)
    assert await fs.server_files(c.id) == {}


async def test_a_stream_cut_once_is_not_sent_again_but_uploaded_whole_at_close(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.faults([{"route": "upload_file", "action": "error", "status": 500, "count": 1}])
    data = content(BIG)
    fh, _ = await create(fs, "once.bin")
    await write_all(fs, fh, data)
    await close(fs, fh)
    assert await fs.server_files(c.id) == {"once.bin": data}
    stats = (await fs.admin.get("/_emulator/stats")).json()
    # the failed stream, then the whole file: the stream is never restarted from byte 0
    assert stats["requests"]["upload_file"] == 2
    assert fs.writer.statistics().stream_fallbacks == 1
