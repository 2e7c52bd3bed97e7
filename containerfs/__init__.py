"""containerfs: the containers of an OpenAI-compatible Containers API as a local FUSE drive.

Layers, top to bottom (data flows down; nothing below ``operations`` knows about FUSE, nothing
but ``client`` knows about httpx):

- ``cli`` / ``mount``: argument parsing, daemon lifecycle, signals, unmount.
- ``operations``: a thin ``pyfuse3.Operations`` adapter: inode <-> node, errors -> errno.
- ``namespace`` (inode table, listings, names, aliases, TTL caches), ``reader`` (streaming
  downloads into the disk cache), ``writer`` (spool files, upload at flush, pending queue);
  ``sizes`` (the sizes of files listed with ``bytes: null``, learned before any is shown).
- ``client``: ``ApiClient`` over ``httpx.AsyncClient``: pagination, retries, errors, rate limit.
- ``models`` and ``errors``: plain data and the typed error hierarchy shared by all layers.

``containerfs.emulator`` is a separate, independent implementation of the API for tests,
benchmarks and the demo; it shares no code with the client side.
"""

__version__ = "0.1.0"
