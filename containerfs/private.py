"""Local files private to the user: the state, cache, spool, log and status files are 0600,
their directories 0700.

The daemon sets ``PRIVATE_UMASK`` first thing, so every file it creates later (SQLite's
``-wal`` and ``-shm`` sidecars included, which no mode argument reaches) is born private;
``make_private`` tightens what an older version left readable by others. Shared by all
layers; no FUSE, no HTTP.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

#: Group and others get nothing: the content of a user's files and the names of their
#: containers are theirs alone.
PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def private_umask() -> int:
    """Make files created from now on private to the user; the previous umask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; an existing one is made 0700 too."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def make_private(paths: Iterable[Path]) -> None:
    """Take group and others' access away from ``paths`` (files 0600 at most, directories
    0700 at most); missing ones and symbolic links are left alone."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            mode = stat.S_IMODE(info.st_mode)
            wanted = mode & (DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE)
            if wanted != mode:
                os.chmod(path, wanted)


def make_tree_private(top: Path) -> None:
    """``make_private`` for ``top`` and everything under it (not following links)."""
    if not top.is_dir() or top.is_symlink():
        return
    paths = [top]
    for root, dirs, files in os.walk(top):
        paths += [Path(root, name) for name in [*dirs, *files]]
    make_private(paths)
