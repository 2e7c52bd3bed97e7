"""containerfs.emulator: a faithful local implementation of the Containers API.

A separate package that shares no code with the client side (it never imports
``containerfs.models``, ``containerfs.errors`` or ``containerfs.client``): it is a second,
independent reading of the spec, so a misreading in one is caught by the other.

Layers, top to bottom:

- ``cli``: ``containerfs emulator`` (argument parsing, uvicorn on a loopback socket, signals).
- ``app``: the Starlette application: routing, the per-request pipeline (latency, counters,
  fault rules, auth), the error envelope and ``x-request-id``.
- ``api`` (the nine ``/v1`` endpoints) and ``admin`` (test controls under ``/_emulator``),
  with ``uploads`` (streaming multipart parser) and ``content`` (streaming blob responses).
- ``store``: metadata in SQLite and blobs as files in the data directory; ``seed`` fills it.
- ``faults`` and ``stats``: fault-injection rules and request counters.
"""

from containerfs.emulator.app import Emulator, create_app
from containerfs.emulator.config import Clock, EmulatorConfig
from containerfs.emulator.store import Store

__all__ = ["Clock", "Emulator", "EmulatorConfig", "Store", "create_app"]
