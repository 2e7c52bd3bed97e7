"""File I/O that bypasses the page cache (``O_DIRECT``), for the disk cache and the spools.

Every byte read or written through the mount already sits in the kernel's page cache, as a
page of the mounted file. Writing our own copy of it through the page cache as well — the
cache file of a download, the spool of a written file — would hold each byte twice in memory,
and on a cold read or a large copy most of the daemon's CPU went into filling that second set
of pages (``copy_folio_from_iter_atomic`` under ``pwritev``), fresh memory being the dearest
to touch. So these files are written and read back with ``O_DIRECT`` where their file system
allows it: whole blocks, at aligned offsets, between the disk and a page-aligned staging
buffer. Staging buffers are pooled, so the daemon keeps reusing the same few megabytes.

Where ``O_DIRECT`` is refused (``EINVAL``/``EOPNOTSUPP`` at open or at the first transfer:
file systems without it), callers fall back to plain buffered I/O on the same file; Linux keeps
buffered and direct I/O of one file coherent. Every function here blocks: run it in a worker
thread. Knows nothing about FUSE or HTTP. Layer: support (used by the read and write paths).
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

# O_DIRECT offsets and lengths are multiples of the device's logical block size, and buffers
# aligned to it; 4 KiB covers every disk in use (512-byte ones included)
ALIGN = 4096
# one staging buffer: the most one call moves to or from the disk
STAGING_BYTES = 4 << 20
# staging buffers kept for reuse (beyond them, a buffer is unmapped after its call)
POOL_KEEP = 6
# what a file system without O_DIRECT answers
_REFUSED = frozenset({errno.EINVAL, errno.EOPNOTSUPP})


def align_down(n: int) -> int:
    return n - n % ALIGN


def align_up(n: int) -> int:
    return align_down(n + ALIGN - 1)


def refused(exc: OSError) -> bool:
    """Whether ``exc`` says the file system does not do ``O_DIRECT`` (so: buffered I/O)."""
    return exc.errno in _REFUSED


class _Pool:
    """Page-aligned staging buffers (anonymous mappings), handed out one per call."""

    def __init__(self, keep: int) -> None:
        self._free: list[mmap.mmap] = []
        self._keep = keep
        self._lock = threading.Lock()

    @contextmanager
    def buffer(self) -> Iterator[mmap.mmap]:
        with self._lock:
            buf = self._free.pop() if self._free else None
        if buf is None:
            buf = mmap.mmap(-1, STAGING_BYTES)
        try:
            yield buf
        finally:
            with self._lock:
                if len(self._free) < self._keep:
                    self._free.append(buf)
                    buf = None
            if buf is not None:
                buf.close()


_POOL = _Pool(POOL_KEEP)


def open_direct(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int | None:
    """``path`` opened with ``flags | O_DIRECT``; None where its file system refuses that."""
    try:
        return os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC, mode)
    except OSError as exc:
        if refused(exc):
            return None
        raise


def write_blocks(
    fd: int, chunks: Iterable[bytes | memoryview], length: int, offset: int, *, pad: bool
) -> None:
    """Write the first ``length`` bytes of ``chunks`` (concatenated) at ``offset``, through
    staging buffers, on an ``O_DIRECT`` fd. ``offset`` is aligned; so is ``length`` unless
    ``pad``, when the last block is filled up with zeros — the caller then truncates the file
    to its real size."""
    if offset % ALIGN or (length % ALIGN and not pad):
        raise ValueError(f"unaligned direct write of {length} bytes at {offset}")
    pieces = iter(chunks)
    chunk: bytes | memoryview = b""
    pos = 0  # into chunk
    done = 0
    with _POOL.buffer() as buf, memoryview(buf) as view:
        while done < length:
            fill = 0
            room = min(STAGING_BYTES, length - done)
            while fill < room:
                if pos == len(chunk):
                    chunk, pos = next(pieces), 0
                    continue
                n = min(room - fill, len(chunk) - pos)
                view[fill : fill + n] = chunk[pos : pos + n]
                fill += n
                pos += n
            out = align_up(fill)
            if out > fill:
                view[fill:out] = bytes(out - fill)
            pwrite_all(fd, view[:out], offset + done)
            done += fill


def read_blocks(fd: int, length: int, offset: int) -> bytes:
    """Bytes ``[offset, offset + length)`` of the file behind an ``O_DIRECT`` fd (fewer at its
    end), read as whole aligned blocks through staging buffers."""
    parts: list[bytes] = []
    end = offset + length
    with _POOL.buffer() as buf, memoryview(buf) as view:
        pos = offset
        while pos < end:
            start = align_down(pos)
            want = min(align_up(end) - start, STAGING_BYTES)
            got = os.preadv(fd, [view[:want]], start)
            lo = pos - start
            hi = min(got, end - start)
            if hi <= lo:
                break  # end of file
            parts.append(bytes(view[lo:hi]))
            pos = start + hi
            if got < want:
                break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset``: a short write (a disk filling up) is carried on from where
    it stopped, never left as a gap, and a write that makes no progress raises."""
    data = memoryview(data)
    while data:
        n = os.pwrite(fd, data, offset)
        if n <= 0:
            raise OSError(errno.EIO, "write made no progress")
        data = data[n:]
        offset += n
