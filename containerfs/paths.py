"""Naming rules: container names -> directory names, server paths -> display paths.

Pure functions, no I/O; the namespace applies them to each listing and keeps the name memory
they take (``place_files(shown=…)``). Layer: shared by all. The rules (also in the README):

- A container's directory name is its ``name`` made safe: ``/`` becomes ``_``, NUL is dropped,
  ``.``/``..``/empty become the id. Names longer than 255 bytes are cut. A container is shown
  as ``NAME~ID`` when another listed container has the same name, or when its name looks
  like an id other than its own (``cntr_…``) or like such a form (``…~cntr_…``). So a
  container id (``cntr_…``) always resolves to that container: it is never the directory
  name of another one.
- A file under the container root (``/mnt/data``) is shown at its path relative to the root;
  a file outside it under the reserved directory ``OUTSIDE_DIR`` (``_outside``), at its full
  path. A server-added ``<32 hex>-`` prefix is stripped from the last component when no other
  entry of the directory (file or directory) would get that name. A file id with a recorded
  alias is shown at the alias instead.
- Two files with the same display path: the newest keeps it, the others become ``NAME~ID``.
  A file whose display path is also a directory becomes ``NAME~ID`` too. A file whose own
  name looks like such a form (``…~cfile_…``, not given by the user through the mount) gets
  its own ``~ID`` as well, so it can never take the name of the file that form stands for.
- Every file and container is shown exactly once, even against names made to collide: a
  name already taken (by a file or directory) becomes ``NAME~ID~2`` (``~3``...).

Stability (per mount): a file keeps the path it was shown at while it is listed. The
namespace remembers every file's displayed path (``shown``); remembered files are placed
first, and the rules above settle only the newcomers, around them. So adding files never
renames a file already shown, and a displayed path never passes from one file to another
while both exist; the one exception is a write through the mount itself (an overwrite, a
rename), which claims the path for the new file id. A name is freed when its file goes; a
file shown as ``NAME~ID`` keeps that name until the next mount even when ``NAME`` frees.
A newcomer's directory that is already a remembered file's path becomes ``DIR~ID`` for it.
Container names need no memory: a plain name belongs to the one container that has it, and
every other directory name ends in its container's own id.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping

from containerfs.models import Container, ContainerFile, FileId, plain_id

OUTSIDE_DIR = "_outside"
CONTAINER_ID_PREFIX = "cntr_"
FILE_ID_PREFIX = "cfile_"
NAME_MAX = 255
#: Where the service puts uploads; the multipart filename is relative to it.
DATA_ROOT = "/mnt/data"
#: The ``<32 hex>-`` prefix the service may add to an uploaded file's name.
_PREFIX = re.compile(r"[0-9a-f]{32}-(?P<base>.+)")


def _clip(name: str) -> str:
    raw = name.encode()
    if len(raw) <= NAME_MAX:
        return name
    return raw[:NAME_MAX].decode(errors="ignore")


def safe_component(name: str) -> str:
    """One path component that the kernel accepts, or "" if nothing is left."""
    name = name.replace("\0", "").replace("/", "_")
    if name in ("", ".", ".."):
        return ""
    return _clip(name)


def disambiguate(name: str, ident: str) -> str:
    suffix = f"~{ident}"
    raw = name.encode()
    keep = NAME_MAX - len(suffix.encode())
    return raw[:keep].decode(errors="ignore") + suffix


def _free(name: str, ident: str, used: Callable[[str], bool]) -> str:
    """``name``, else ``NAME~ID``, else ``NAME~ID~2``...: the first that is not ``used``.

    The candidates are distinct strings (even when clipped to NAME_MAX), so this ends.
    """
    shown, n = name, 1
    while used(shown):
        shown = disambiguate(name, ident if n == 1 else f"{ident}~{n}")
        n += 1
    return shown


def looks_like_container_id(name: str) -> bool:
    """Whether a root entry name may be a container id (``cntr_`` and a plain token), tried by
    id when no directory has it; any other name is simply not found."""
    return name.startswith(CONTAINER_ID_PREFIX) and plain_id(name)


def reserved_container_name(name: str, cid: str | None = None) -> bool:
    """Whether a (safe) container name is one that only the rules may give: anything that
    starts like an id (``cntr_…``) other than the container's own ``cid``, or a ``NAME~cntr_…``
    disambiguated form."""
    like_an_id = name.startswith(CONTAINER_ID_PREFIX) and name != cid
    return like_an_id or f"~{CONTAINER_ID_PREFIX}" in name


def reserved_file_name(base: str) -> bool:
    """Whether a file's last component looks like a ``NAME~cfile_…`` disambiguated form."""
    return f"~{FILE_ID_PREFIX}" in base


def container_dir_names(containers: Iterable[Container]) -> dict[str, Container]:
    """Directory name -> container, deterministic whatever the listing order.

    A container is shown under its safe name when that name is its own: no other listed
    container has it, and it neither looks like an id (other than its own) nor like a
    ``NAME~cntr_…`` form. Every other container is ``NAME~ID``, which ends in its own id: so a
    name never passes from one container to another while both are listed, and the id of a
    container is never the name of another.
    """
    listed = sorted(containers, key=lambda c: c.id)
    base = {c.id: safe_component(c.name) or c.id for c in listed}
    plain = [c for c in listed if not reserved_container_name(base[c.id], c.id)]
    sharing = Counter(base[c.id] for c in plain)
    own = {c.id for c in plain if sharing[base[c.id]] == 1}
    out: dict[str, Container] = {}
    for c in listed:
        shown = base[c.id] if c.id in own else disambiguate(base[c.id], c.id)
        # ids that are plain tokens never collide here; a server-made id that is not one
        # (holding "~cntr_") still gets a name of its own
        out[_free(shown, c.id, out.__contains__)] = c
    return out


def relative_path(server_path: str, root: str) -> str:
    """A server path as a display path relative to the container root (not yet de-prefixed)."""
    root = "/" + root.strip("/") if root.strip("/") else ""
    norm = posixpath.normpath("/" + server_path.lstrip("/"))
    if root and norm.startswith(root + "/"):
        rel = norm[len(root) + 1 :]
    elif not root:
        rel = norm.lstrip("/")
    else:
        rel = OUTSIDE_DIR + norm
    parts = [safe_component(p) or "_" for p in rel.split("/") if p]
    return "/".join(parts) if parts else "_"


def strip_prefix(name: str) -> str | None:
    m = _PREFIX.fullmatch(name)
    return m.group(1) if m and m.group(1) not in (".", "..") else None


def natural_paths(
    files: Iterable[ContainerFile],
    *,
    root: str = DATA_ROOT,
    aliases: Mapping[FileId, str] | None = None,
) -> dict[FileId, str]:
    """File id -> the path each file asks for, before any collision is settled: its alias, or
    its path relative to the root, with a server prefix stripped when no other entry of the
    directory would ask for that name."""
    aliases = aliases or {}
    first: list[tuple[str, ContainerFile]] = []
    for f in files:
        alias = aliases.get(f.id)
        first.append((alias, f) if alias else (relative_path(f.path, root), f))

    # stripping a prefix changes last components only, so the directories are known already
    dirs = {d for p, _ in first for d in ancestors(p)}
    taken = {p for p, f in first if f.id in aliases or strip_prefix(posixpath.basename(p)) is None}
    taken |= dirs
    wanted: dict[str, list[FileId]] = {}
    for p, f in first:
        if f.id in aliases:
            continue
        stripped = strip_prefix(posixpath.basename(p))
        if stripped is not None:
            wanted.setdefault(posixpath.join(posixpath.dirname(p), stripped), []).append(f.id)
    out = {f.id: p for p, f in first}
    for target, ids in wanted.items():
        if len(ids) == 1 and target not in taken:
            out[ids[0]] = target
    return out


def place_files(
    files: Iterable[ContainerFile],
    *,
    root: str = DATA_ROOT,
    aliases: Mapping[FileId, str] | None = None,
    shown: Mapping[FileId, str] | None = None,
    withhold: Collection[str] = (),
) -> dict[str, ContainerFile]:
    """Display path -> file for one container listing, applying every rule above.

    ``shown`` is the mount's name memory (file id -> the path it was last shown at): those
    files keep their paths, and the rules place only the others (the newcomers) around them.
    ``withhold``: names of files the mount is creating and does not know by id yet (an
    upload whose answer is on its way): a newcomer of such a name (server prefix or not) is
    left out, as it may be that very file, which would show beside the mount's own.
    """
    files = list(files)
    aliases = aliases or {}
    shown = shown or {}
    wish = natural_paths(files, root=root, aliases=aliases)
    board = _Board()
    newcomers: list[ContainerFile] = []
    for f in sorted(files, key=lambda f: (f.created_at, f.id), reverse=True):
        kept = shown.get(f.id)
        if kept is not None and board.fits(kept):
            board.put(kept, f)
        elif not withhold or not _expected(wish[f.id], withhold):
            newcomers.append(f)
    # among newcomers, a directory wins over a file of its name, an alias over a server path,
    # and the newest file over older ones
    board.reserve_dirs_of(wish[f.id] for f in newcomers)
    newcomers.sort(key=lambda f: f.id not in aliases)
    for f in newcomers:
        path = wish[f.id]
        literal = f.id not in aliases and reserved_file_name(path.rpartition("/")[2])
        board.put(board.free_path(path, f.id, literal=literal), f)
    return board.placed


def _expected(path: str, names: Collection[str]) -> bool:
    base = path.rpartition("/")[2]
    return base in names or strip_prefix(base) in names


class _Board:
    """The paths given so far in one placement: files, the directories they imply, and the
    directories newcomers will imply (reserved: no newcomer file takes one)."""

    def __init__(self) -> None:
        self.placed: dict[str, ContainerFile] = {}
        # invariant: no file is at a path of _dirs or above one, and a directory's ancestors
        # are there with it, so a file whose parent is known needs no walk up (100,000-file
        # listings)
        self._dirs: set[str] = {""}
        self._reserved: set[str] = {""}

    @staticmethod
    def _add_dirs(into: set[str], path: str) -> None:
        parent = path.rpartition("/")[0]  # display paths have no empty components
        while parent not in into:
            into.add(parent)
            parent = parent.rpartition("/")[0]

    def reserve_dirs_of(self, paths: Iterable[str]) -> None:
        for path in paths:
            self._add_dirs(self._reserved, path)

    def put(self, path: str, f: ContainerFile) -> None:
        self.placed[path] = f
        self._add_dirs(self._dirs, path)

    def fits(self, path: str) -> bool:
        """Whether a remembered path can still be a file's: free, not a directory, and under
        no file."""
        if path in self.placed or path in self._dirs:
            return False
        if path.rpartition("/")[0] in self._dirs:
            return True
        return not any(d in self.placed for d in ancestors(path))

    def _used(self, path: str) -> bool:
        return path in self.placed or path in self._dirs or path in self._reserved

    def _free_dir(self, parent: str, name: str, ident: str) -> str:
        """``parent/name`` as a directory, or ``parent/name~ID`` if a file has that path."""
        return posixpath.join(
            parent, _free(name, ident, lambda n: posixpath.join(parent, n) in self.placed)
        )

    def free_path(self, wish: str, ident: str, *, literal: bool) -> str:
        """``wish``, else the first free ``NAME~ID`` form of it. A directory of the wish that
        is already a file becomes ``DIR~ID`` (for this file only); a ``literal`` name (one
        that looks like a ``NAME~cfile_…`` form) is always given its own ``~ID``."""
        parent, _, base = wish.rpartition("/")
        if parent in self._dirs and not literal and not self._used(wish):
            return wish  # the common case, kept cheap for 100,000-file listings
        if parent not in self._dirs:
            dirs = parent.split("/") if parent else []
            parent = functools.reduce(lambda at, name: self._free_dir(at, name, ident), dirs, "")

        def used(name: str) -> bool:
            return (literal and name == base) or self._used(posixpath.join(parent, name))

        return posixpath.join(parent, _free(base, ident, used))


def _ancestors(path: str) -> Iterable[str]:
    while path:
        yield path
        path = posixpath.dirname(path)


def ancestors(path: str) -> list[str]:
    """Every proper ancestor directory of a display path, nearest first ("" is the root)."""
    return list(_ancestors(posixpath.dirname(path)))


def upload_path_matches(path: str, filename: str, *, root: str = DATA_ROOT) -> bool:
    """Whether the server could have stored an upload named ``filename`` at ``path``:
    ``root/filename`` as asked, or ``<32 hex>-<basename>`` in the root or in its directory.
    """
    rel = filename.strip("/")
    if path in (f"{root}/{rel}", filename):
        return True
    head, _, base = path.rpartition("/")
    want_dir, _, want_base = rel.rpartition("/")
    match = _PREFIX.fullmatch(base)
    if match is None or match["base"] != want_base:
        return False
    return head == root or (bool(want_dir) and head == f"{root}/{want_dir}")
