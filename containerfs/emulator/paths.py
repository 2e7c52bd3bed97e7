"""Where an upload is stored: the server-side path chosen from the multipart filename.

Policies (``--upload-paths``):

- ``prefix`` (the real service): ``/mnt/data/<32 random hex>-<basename of the filename>``.
- ``keep``: the filename as a path relative to ``/mnt/data`` (``d/e/x.txt`` becomes
  ``/mnt/data/d/e/x.txt``); an absolute filename is normalised and kept as it is; ``..``
  components are refused. Two uploads to one path make two files: nothing is overwritten.
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
