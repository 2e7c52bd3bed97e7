"""containerfs: the containers of an OpenAI-compatible Containers API as a local FUSE drive.

Layers, top to bottom (imports point down only, none back up, even for type checking; a test
walks the import graph, ``tests/test_layout.py``):

- ``cli``, ``cli_control`` (``new`` and ``import``), ``demo``: the command line; ``daemon/``:
  ``mount`` (lifecycle, signals, unmount), ``layers`` (the one function that builds the
  layers below, used by the tests too), ``status`` (the typed snapshot the daemon writes and
  the CLI reads), ``control`` (the socket ``new`` and ``import`` ask the daemon through) and
  ``commands`` (what the daemon does for them).
- ``fs/``: the pyfuse3 adapter: ``operations`` (inode <-> node, errors -> errno, the only
  ``pyfuse3.Operations``), ``handles`` (open files and directories), ``attrs`` (stat,
  xattrs, statfs), ``sizes`` (the sizes of files listed with ``bytes: null``, learned before
  any is shown). Only ``fs/`` and ``daemon/`` import pyfuse3.
- ``ns/``: the namespace: ``inodes`` (``Node``, the ``NodeIndex``, ``Attrs``), ``listings``
  (one container's files as listed, placed once and indexed by directory, patched by own
  changes), ``memory`` (the path each file was shown at: it keeps it), ``overlay`` (files
  not on the server yet and directories made here, by directory), ``namespace`` (lookups,
  readdir, TTL caches, names, aliases), ``created`` (what the containers made here were
  created with). A lookup or a readdir costs the entries of one
  directory, not the files of the container.
- ``read/``: ``reader`` (the facade: open/read/release, pins), ``entries`` (live entries),
  ``download`` (one ``Download`` per file version, behind ``DownloadHost``), ``diskcache``.
- ``write/``: ``writer`` (the facade: spools, flush, unlink), ``spool`` (a node's local
  content, and the ports to the client and reader), ``queue`` (``UploadQueue``: deferred and
  failed uploads, backoff, resume, drain), ``renames`` (``Renamer``).
- ``api/``: ``client`` (``ApiClient``: endpoints, the retry loop, duplicate rules),
  ``checks`` (the one URL builder, which refuses ids that are not plain tokens, and the one
  pagination, which ends a loop), ``transport`` (the only httpx user: errors mapped to ``errors``),
  ``retrying`` (the one ``Backoff``, the rate limiter, what an ambiguous create left).
- Shared by all: ``errors``, ``models``, ``config`` (settings and name policies, one
  source), ``paths`` (names and server-path rules, one prefix regex), ``aio`` (trio helpers),
  ``state`` (the SQLite state database).

Lock order (take them in this order, never the reverse):

1. ``Node.lock`` of a file: its spool, upload and rename. A rename holds the moved file's lock
   and then takes the replaced target's; nothing else holds two node locks (a backup's is not
   taken under another's: ``Renamer.retire_backup``).
2. The namespace's fetch locks (one per listing): held only around one listing call, never
   while taking a node lock.
3. A read entry's ``window_lock``: around one ranged GET, nothing taken under it.
4. ``State``'s thread lock: inside worker threads, around one SQLite call.

``containerfs.emulator`` is a separate, independent implementation of the API for tests,
benchmarks and the demo; it shares no code with the client side, and its server libraries are
the optional extra ``containerfs[emulator]``.
"""

__version__ = "0.1.0"
