"""containerfs: the containers of an OpenAI-compatible Containers API as a local FUSE drive.

Layers, top to bottom (imports point down only, none back up, even for type checking; a test
walks the import graph, ``tests/test_layout.py``):

- ``cli`` (the parser and ``main``), ``cli_mount`` (``mount``; its options table in
  ``cli_options``), ``cli_admin`` (``unmount``, ``status``), ``cli_sync`` (``sync``, parsed
  before the full parser is built: it starts in the time Python takes), ``cli_control``
  (``new`` and ``import``), ``cliargs`` (sizes, durations, ``-o`` and mount.fuse's
  convention), ``clistatus`` (``status`` and the unmount report as text), ``mounttable``
  (``/proc/mounts``, dead and busy mounts, the daemons' registry, sd_notify), ``demo``,
  ``__main__``: the command line; ``daemon/``:
  ``mount`` (lifecycle, signals, unmount), ``layers`` (the one function that builds the
  layers below, used by the tests too), ``status`` (the typed snapshot the daemon writes and
  the CLI reads), ``control`` (the socket ``new`` and ``import`` ask the daemon through) and
  ``commands`` (what the daemon does for them).
- ``fs/``: the pyfuse3 adapter: ``operations`` (inode <-> node, errors -> errno, the only
  ``pyfuse3.Operations``), ``files`` (open files: open, read, write, flush, release, without
  FUSE), ``tree`` (lookups by name, ``..``, and mkdir, rmdir, unlink, rename checked as POSIX
  asks, without FUSE), ``handles`` (open files and directories), ``attrs`` (stat, xattrs,
  statfs), ``sizes`` (the sizes of files listed with ``bytes: null``, learned before
  any is shown), ``walks`` (directory walks noticed from the order of opens, for prefetch).
  Only ``fs/`` and ``daemon/`` import pyfuse3.
- ``ns/``: the namespace: ``inodes`` (``Node``, the ``NodeIndex``, the ``InodeTable``,
  ``Attrs``), ``listings`` (one container's files as listed, placed once and indexed by
  directory, patched by own changes, hiding files whose delete is under way), ``memory``
  (the path each file was shown at: it keeps it), ``overlay`` (files not on the server yet
  and directories made here, by directory), ``dirs`` (the directories made here, kept in the
  state), ``containers`` (the cached container listing,
  directory names, containers by id, delete), ``aliases`` (where files made here show, kept
  in the state), ``attributes`` (what ``stat`` shows), ``namespace`` (the facade: lookups,
  readdir, changes made here), ``created`` (what the containers made here were created
  with). A lookup or a readdir costs the entries of one directory, not the files of the
  container.
- ``read/``: ``reader`` (the facade: open/read/release, pins, statistics), ``lifecycle``
  (live entries acquired, started, dropped; the downloads' host), ``entries`` (live entries),
  ``download`` (one ``Download`` per file version, behind ``DownloadHost``), ``flusher`` (its
  cache-file writes), ``serve`` (read handles; bytes from memory or the cache file),
  ``sizes`` (sizes known, or learned from a download's headers), ``settings`` (every option
  of the read path and its default, once), ``ranges``
  (ranged GETs for reads far ahead of the stream), ``pieces`` (a large file in parallel ranged
  pieces when the server honours ``Range``), ``prefetch`` (the next small files of a walk),
  ``passthrough`` (reads past the cache, nothing kept), ``diskcache``.
- ``write/``: ``writer`` (the facade: spools, flush, unlink), ``spool`` (a node's local
  content, and the ports to the client and reader), ``queue`` (``UploadQueue``: deferred and
  failed uploads, backoff, resume, drain, write-back jobs), ``renames`` (``Renamer``),
  ``job`` (``UploadJob`` and its ``JobState``; ``SpoolFeed``, the body read from a growing
  spool), ``streaming`` (``Streamer``: uploads streamed while a file is written).
- ``api/``: ``client`` (``ApiClient``: the endpoints), ``content`` (the calls that carry a
  file's bytes: uploads from disk or streamed, downloads), ``adoption`` (the duplicate rule:
  what a lost create left, and whether it may be adopted), ``calls`` (the retry
  loop of one call), ``deadlines`` (each request's progress deadlines), ``answers`` (the typed
  error of an error answer, content framing and ranges, read without httpx),
  ``checks`` (the headers of every request, the one URL builder, which refuses ids that are
  not plain tokens, and the one pagination, which ends a loop), ``multipart`` (the body of a
  streamed upload), ``transport`` (the only httpx user: errors mapped to ``errors``),
  ``retrying`` (the one ``Backoff``, the rate limiter, the progress deadlines' policy),
  ``progress`` (the transfers in flight, counted as their bytes move).
- Shared by all: ``errors``, ``models``, ``config`` (settings and name policies, one
  source), ``paths`` (names and server-path rules, one prefix regex), ``aio`` (trio helpers),
  ``state`` (the SQLite state database), ``private`` (the umask and modes that keep local
  files private), ``snapshots`` (each layer's typed status section: ``status`` reads them
  without loading the layers).

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
