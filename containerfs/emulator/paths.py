"""Where an upload is stored: the server-side path chosen from the multipart filename.

Policies (``--upload-paths``):

- ``prefix`` (the real service): ``/mnt/data/<32 random hex>-<basename of the filename>``.
- ``keep``: the filename as a path relative to ``/mnt/data`` (``d/e/x.txt`` becomes
  ``/mnt/data/d/e/x.txt``); an absolute filename is normalised and kept as it is; ``..``
  components are refused. Two uploads to one path make two files: nothing is overwritten.

A file copied in from the Files API (``file_ids``, ``file_id``) gets :func:`copied_path`
whatever the policy.
"""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import Callable

from containerfs.emulator.config import UploadPaths
from containerfs.emulator.errors import bad_request

CONTAINER_ROOT = "/mnt/data"


def _prefixed(filename: str) -> str:
    basename = filename.rsplit("/", 1)[-1]
    if not basename:
        raise bad_request(f"Invalid file name {filename!r}.", param="file")
    return f"{CONTAINER_ROOT}/{secrets.token_hex(16)}-{basename}"


def _kept(filename: str) -> str:
    if ".." in filename.split("/"):
        raise bad_request(f"Invalid file path {filename!r}: '..' is not allowed.", param="file")
    if filename.startswith("/"):
        path = "/" + posixpath.normpath(filename.lstrip("/"))
    else:
        path = posixpath.join(CONTAINER_ROOT, posixpath.normpath(filename))
    if filename.endswith("/") or path in ("/", "/.", CONTAINER_ROOT, CONTAINER_ROOT + "/."):
        raise bad_request(f"Invalid file path {filename!r}.", param="file")
    return path


_POLICIES: dict[UploadPaths, Callable[[str], str]] = {"prefix": _prefixed, "keep": _kept}


def stored_path(filename: str, *, policy: UploadPaths) -> str:
    """The ``path`` a file uploaded as ``filename`` gets (400 for unusable names)."""
    if not filename or "\x00" in filename:
        raise bad_request("The uploaded file must have a file name.", param="file")
    return _POLICIES[policy](filename)


def copied_path(filename: str) -> str:
    """The ``path`` of a Files-API file copied into a container, from its ``filename``."""
    # Neither the spec nor the API reference says what path such a file gets. Code interpreter
    # users report files passed as ``file_ids`` under /mnt/data/<their Files-API filename>,
    # without the random prefix an upload gets, so that is what is answered here; a client
    # must take the path from the answer and rely on neither form. Only the basename is used,
    # so a filename holding '/' cannot leave /mnt/data.
    return f"{CONTAINER_ROOT}/{filename.rsplit('/', 1)[-1]}"
