"""Disk cache index: on-disk layout, sidecar metadata and LRU accounting for downloaded files.

Part of the read path (``reader`` is its only user). It decides where a file's bytes live,
which entries survive a restart and which to evict; it never downloads, never waits for
content, and knows nothing about FUSE or HTTP.

Layout of ``cache_dir`` (mode 0700), two files per entry (mode 0600), named from the file id
only:

- ``<name>.data``: the content, written from offset 0 as the download advances.
- ``<name>.json``: ``{"version": 1, "file_id": ..., "size": N, "complete": true}``, written
  (atomically, after an fsync of the data) only once the download finished. A ``.data``
  without a valid sidecar is a download interrupted by a crash and is discarded at start.

``<name>`` is the file id itself when it is made of ``[A-Za-z0-9_-]`` (``cfile_`` + hex
always is), otherwise ``@`` + the SHA-256 of the id: ``@`` never occurs in a plain name, so
the two forms cannot collide.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from containerfs.models import FileId
from containerfs.private import FILE_MODE, make_tree_private, private_dir

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SIDECAR_VERSION = 1


def entry_name(file_id: str) -> str:
    """The file name stem for a file id: the id when safe, else a hash (never a path)."""
    if _SAFE_NAME.fullmatch(file_id) and file_id not in {".", ".."}:
        return file_id
    return "@" + hashlib.sha256(file_id.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(eq=False)
class CacheEntry:
    """One file version in the cache, complete or still downloading."""

    file_id: FileId
    data_path: Path
    meta_path: Path
    complete: bool
    size: int | None  # final size when complete; the expected size (or None) while downloading
    stored: int = 0  # bytes of content on disk

    @property
    def charge(self) -> int:
        # a download in progress is charged its expected size, so that eviction makes room
        # before the bytes arrive rather than after
        if self.complete or self.size is None:
            return self.stored
        return max(self.stored, self.size)


class DiskCache:
    """The index of ``cache_dir``: entries by file id, their sizes, and LRU eviction.

    Only the ``load``/``write_sidecar``/``delete_files`` helpers touch the disk; they are plain
    blocking functions the reader runs through ``trio.to_thread``. Everything else is
    in-memory bookkeeping, safe to call from the trio loop.
    """

    def __init__(self, directory: Path, *, max_size: int) -> None:
        self.directory = directory
        self.max_size = max_size
        # least recently used first: a use moves an entry to the end
        self._entries: dict[FileId, CacheEntry] = {}
        self._complete_bytes = 0  # what the complete entries hold: their charge never changes
        self._partial: set[CacheEntry] = set()  # downloading: charged as they grow
        self.evictions = 0

    # ---- blocking helpers (run in a worker thread) ----

    @classmethod
    def load(cls, directory: Path, *, max_size: int) -> DiskCache:
        """Create the directory (0700) and index the complete entries found in it.

        Interrupted downloads (a ``.data`` without a matching complete sidecar), temporary
        sidecars and sidecars whose data is missing or of the wrong size are deleted.
        """
        # a pre-existing directory (and its files) keeps its mode otherwise; content is private
        private_dir(directory)
        make_tree_private(directory)
        cache = cls(directory, max_size=max_size)
        found: list[tuple[float, CacheEntry]] = []
        names = set(os.listdir(directory))
        for name in sorted(names):
            if not name.endswith(".json"):
                continue
            stem = name[: -len(".json")]
            meta_path = directory / name
            data_path = directory / (stem + ".data")
            entry = _read_sidecar(meta_path, data_path, stem)
            if entry is None:
                log.info("cache: discarding invalid entry %s", stem)
                _unlink(meta_path)
                _unlink(data_path)
                continue
            found.append((meta_path.stat().st_mtime, entry))
        valid = {e.data_path.name for _, e in found} | {e.meta_path.name for _, e in found}
        for name in names - valid:
            log.info("cache: discarding leftover %s", name)
            _unlink(directory / name)
        # LRU order across restarts: the sidecar's mtime, refreshed on every open
        for _, entry in sorted(found, key=lambda item: item[0]):
            cache._index(entry)
        log.debug("cache: %d entries, %d bytes in %s", len(found), cache.used, directory)
        return cache

    @staticmethod
    def write_sidecar(entry: CacheEntry, fd: int | None) -> None:
        """Make a finished download durable: fsync the data, then write the sidecar atomically."""
        if fd is not None:
            os.fsync(fd)
        tmp = entry.meta_path.with_suffix(".json.tmp")
        body = json.dumps(
            {
                "version": _SIDECAR_VERSION,
                "file_id": entry.file_id,
                "size": entry.size,
                "complete": True,
            }
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, entry.meta_path)

    @staticmethod
    def touch_sidecar(entry: CacheEntry) -> None:
        """Record a use for the LRU order of the next start (best effort)."""
        with contextlib.suppress(OSError):
            os.utime(entry.meta_path)

    @staticmethod
    def delete_files(paths: tuple[Path, ...]) -> None:
        for path in paths:
            _unlink(path)

    # ---- in-memory index ----

    def paths_for(self, file_id: FileId) -> tuple[Path, Path]:
        stem = entry_name(file_id)
        return self.directory / (stem + ".data"), self.directory / (stem + ".json")

    def get(self, file_id: FileId) -> CacheEntry | None:
        return self._entries.get(file_id)

    def add(self, file_id: FileId, expected_size: int | None) -> CacheEntry:
        """Index a new, incomplete entry (replacing any previous one for this id)."""
        data_path, meta_path = self.paths_for(file_id)
        entry = CacheEntry(file_id, data_path, meta_path, complete=False, size=expected_size)
        self._index(entry)
        return entry

    def add_complete(self, file_id: FileId, size: int) -> CacheEntry:
        """Index an entry whose data file is already complete at ``paths_for(file_id)``."""
        data_path, meta_path = self.paths_for(file_id)
        entry = CacheEntry(file_id, data_path, meta_path, complete=True, size=size, stored=size)
        self._index(entry)
        return entry

    def completed(self, entry: CacheEntry, size: int) -> None:
        """A download into ``entry`` is whole: ``size`` bytes on disk."""
        indexed = entry in self._partial
        if indexed:
            self._unindex(entry)
        entry.size = entry.stored = size
        entry.complete = True
        if indexed:
            self._index(entry)

    def remove(self, entry: CacheEntry) -> bool:
        """Drop an entry from the index (its files are the caller's to delete)."""
        if self._entries.get(entry.file_id) is entry:
            self._unindex(entry)
            return True
        return False

    def touch(self, entry: CacheEntry) -> None:
        """A use of ``entry``: the last to be evicted now."""
        if self._entries.get(entry.file_id) is entry:
            del self._entries[entry.file_id]
            self._entries[entry.file_id] = entry

    def _index(self, entry: CacheEntry) -> None:
        """Index ``entry`` as the most recently used, in place of any of its id."""
        old = self._entries.get(entry.file_id)
        if old is not None:
            self._unindex(old)
        self._entries[entry.file_id] = entry
        if entry.complete:
            self._complete_bytes += entry.charge
        else:
            self._partial.add(entry)

    def _unindex(self, entry: CacheEntry) -> None:
        del self._entries[entry.file_id]
        if entry.complete:
            self._complete_bytes -= entry.charge
        else:
            self._partial.discard(entry)

    def __iter__(self) -> Iterator[CacheEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def used(self) -> int:
        """Bytes charged: O(downloads in progress), not O(entries)."""
        return self._complete_bytes + sum(entry.charge for entry in self._partial)

    def _evictable(self, busy: Callable[[CacheEntry], bool]) -> Iterator[CacheEntry]:
        """Complete, non-busy entries, least recently used first (unindex after the walk)."""
        return (e for e in self._entries.values() if e.complete and not busy(e))

    def evict(self, busy: Callable[[CacheEntry], bool]) -> list[CacheEntry]:
        """Remove least-recently-used complete, non-busy entries until usage fits ``max_size``.

        Returns the evicted entries; deleting their files is the caller's job. Busy entries
        (open, pinned, downloading) are never evicted, so usage can stay above the limit
        while they are in use.
        """
        victims: list[CacheEntry] = []
        used = self.used
        for entry in self._evictable(busy):
            if used <= self.max_size:
                break
            used -= entry.charge
            victims.append(entry)
        for entry in victims:
            self._unindex(entry)
            self.evictions += 1
            log.debug("cache: evicting %s (%d bytes)", entry.file_id, entry.stored)
        return victims

    def evict_bytes(
        self, busy: Callable[[CacheEntry], bool], needed: int | None
    ) -> list[CacheEntry]:
        """Remove least-recently-used complete, non-busy entries holding ``needed`` bytes (None:
        all of them), for a disk that is full below ``max_size``. Nothing is removed when
        they cannot free that much: the cache is not emptied for nothing."""
        candidates = list(self._evictable(busy))
        if needed is not None and sum(e.stored for e in candidates) < needed:
            return []
        victims: list[CacheEntry] = []
        freed = 0
        for entry in candidates:
            if needed is not None and freed >= needed:
                break
            freed += entry.stored
            victims.append(entry)
        for entry in victims:
            self._unindex(entry)
            self.evictions += 1
            log.debug("cache: evicting %s (%d bytes) for room", entry.file_id, entry.stored)
        return victims


def _read_sidecar(meta_path: Path, data_path: Path, stem: str) -> CacheEntry | None:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        file_id = meta["file_id"]
        size = meta["size"]
        if (
            meta.get("version") != _SIDECAR_VERSION
            or meta.get("complete") is not True
            or not isinstance(file_id, str)
            or entry_name(file_id) != stem
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or data_path.stat().st_size != size
        ):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return CacheEntry(FileId(file_id), data_path, meta_path, complete=True, size=size, stored=size)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
