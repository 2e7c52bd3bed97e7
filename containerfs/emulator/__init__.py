"""containerfs.emulator: a faithful local implementation of the Containers API, with a
minimal Files API to bring files into containers.

A separate package that shares no code with the client side (it never imports
``containerfs.models``, ``containerfs.errors`` or ``containerfs.client``): it is a second,
independent reading of the spec, so a misreading in one is caught by the other.

Layers, top to bottom:

- ``cli``: ``containerfs emulator`` (argument parsing, uvicorn on a loopback socket, signals).
- ``app``: the Starlette application: routing, the per-request pipeline (latency, counters,
  fault rules, auth), the error envelope and ``x-request-id``.
- ``api`` (the nine ``/v1/containers`` endpoints), ``files_api`` (the five ``/v1/files``
  endpoints) and ``admin`` (test controls under ``/_emulator``), with ``params`` (request
  parsing and validation errors), ``create_body`` (the create-container body, field by
  field), ``uploads`` (streaming multipart parser) and ``content`` (streaming blob responses).
- ``store``: metadata in SQLite and blobs as files in the data directory; ``seed`` fills it;
  ``schema`` (its tables, and rows into records) and ``rows`` (the records and their ids).
- ``faults`` and ``stats``: fault-injection rules and request counters.

Choices where the spec is silent (the client must cope with the service either way):

- An ``after`` cursor that names no object of the listing answers 400 (``param: "after"``);
  the cursor of an object deleted since the previous page still works.
- Without ``--api-key`` every request is accepted, with or without a key.
- ``expires_after.minutes`` must be 1..1440; ``network_policy`` defaults to ``disabled``;
  its ``domain_secrets`` are validated and dropped (the container object has no field for
  them). ``skills`` are validated as the spec says and kept (inline ones without their zip)
  but never shown, as the container object has no field for them; there is no Skills API,
  so any ``skill_id`` is accepted.
- ``file_ids`` at creation and ``file_id`` on file creation copy a Files-API file in: a new
  ``cfile_`` id, ``source: user``, path ``/mnt/data/<filename>`` (see ``paths``). An unknown
  id is 404 ``No such File object`` and creates nothing. Deleting the Files-API file later
  leaves the copies.
- ``--upload-paths keep`` never overwrites: two uploads to one path make two files.
- Listing containers does not refresh ``last_active_at``; every call on one container
  (retrieve, and all file calls) does, unless it has expired.
"""

from containerfs.emulator.app import Emulator, create_app
from containerfs.emulator.config import Clock, EmulatorConfig
from containerfs.emulator.store import Store

__all__ = ["Clock", "Emulator", "EmulatorConfig", "Store", "create_app"]
