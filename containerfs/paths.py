"""Naming rules: container names -> directory names, server paths -> display paths.

Pure functions, no I/O; the namespace applies them to each listing. The rules (also in the
README):

- A container's directory name is its ``name`` made safe: ``/`` becomes ``_``, NUL is dropped,
  ``.``/``..``/empty become the id. Names longer than 255 bytes are cut. When two listed
  containers get the same name, both are shown as ``NAME~ID``.
- A file under the container root (``/mnt/data``) is shown at its path relative to the root;
  a file outside it under the reserved directory ``OUTSIDE_DIR`` (``_outside``), at its full
  path. A server-added ``<32 hex>-`` prefix is stripped from the last component when no other
  entry of the directory (file or directory) would get that name. A file id with a recorded
  alias is shown at the alias instead.
- Two files with the same display path: the newest keeps it, the others become ``NAME~ID``.
  A file whose display path is also a directory becomes ``NAME~ID`` too.
- Every file and container is shown exactly once, even against names made to collide: a
  container literally named like another's ``NAME~ID`` gets its own ``~ID`` too, and a file
  whose ``NAME~ID`` is already taken (by a file or directory) becomes ``NAME~ID~2`` (``~3``...).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping

from containerfs.models import Container, ContainerFile, FileId

OUTSIDE_DIR = "_outside"
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


def container_dir_names(containers: Iterable[Container]) -> dict[str, Container]:
    """Directory name -> container, deterministic whatever the listing order."""
    by_name: dict[str, list[Container]] = {}
    for c in containers:
        by_name.setdefault(safe_component(c.name) or c.id, []).append(c)
    out: dict[str, Container] = {}
    # NAME~ID first: ids are unique, so these never collide with each other; a container
    # whose own name happens to be one of them is disambiguated in turn
    for name, group in by_name.items():
        if len(group) > 1:
            for c in group:
                out[disambiguate(name, c.id)] = c
    for name, group in sorted(by_name.items()):
        if len(group) == 1:
            out[_free(name, group[0].id, out.__contains__)] = group[0]
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


def place_files(
    files: Iterable[ContainerFile],
    *,
    root: str = DATA_ROOT,
    aliases: Mapping[FileId, str] | None = None,
) -> dict[str, ContainerFile]:
    """Display path -> file for one container listing, applying every rule above."""
    aliases = aliases or {}
    first: list[tuple[str, ContainerFile]] = []
    for f in files:
        alias = aliases.get(f.id)
        first.append((alias, f) if alias else (relative_path(f.path, root), f))

    # stripping a prefix changes last components only, so the directories are known already
    dirs = {d for p, _ in first for d in ancestors(p)}
    taken = {p for p, f in first if f.id in aliases or strip_prefix(posixpath.basename(p)) is None}
    taken |= dirs
    wanted: dict[str, list[int]] = {}
    for i, (p, f) in enumerate(first):
        if f.id in aliases:
            continue
        stripped = strip_prefix(posixpath.basename(p))
        if stripped is not None:
            wanted.setdefault(posixpath.join(posixpath.dirname(p), stripped), []).append(i)
    final = [p for p, _ in first]
    for target, idxs in wanted.items():
        if len(idxs) == 1 and target not in taken:
            final[idxs[0]] = target

    by_path: dict[str, list[ContainerFile]] = {}
    for p, (_, f) in zip(final, first, strict=True):
        by_path.setdefault(p, []).append(f)
    out: dict[str, ContainerFile] = {}
    others: list[tuple[str, ContainerFile]] = []
    for p, group in by_path.items():
        group.sort(key=lambda f: (f.created_at, f.id), reverse=True)
        if p in dirs:
            others += [(p, f) for f in group]
        else:
            out[p] = group[0]
            others += [(p, f) for f in group[1:]]

    # the others become NAME~ID (ids are unique, so they never collide with each other),
    # or more if a file or directory of that very name exists
    def used(path: str) -> bool:
        return path in out or path in dirs

    for p, f in others:
        parent, base = posixpath.split(p)
        out[_free_in(parent, base, f.id, used)] = f
    return out


def _free_in(parent: str, base: str, ident: str, used: Callable[[str], bool]) -> str:
    return posixpath.join(parent, _free(base, ident, lambda n: used(posixpath.join(parent, n))))


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
