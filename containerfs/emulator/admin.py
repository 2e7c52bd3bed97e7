"""Test controls under ``/_emulator`` (no auth, never counted, never faulted).

- ``GET  /_emulator/stats``: ``{"requests": {route: n}, "total", "bytes_uploaded",
  "bytes_downloaded", "faults_applied"}``; ``POST /_emulator/reset-stats``.
- ``GET  /_emulator/requests``: the last requests (route, method, path, query, status, a few
  headers, never the key).
- ``GET|POST|DELETE /_emulator/faults``: the fault rules (see ``faults``); POST replaces them
  with a JSON list (or ``{"rules": [...]}``).
- ``GET|POST /_emulator/config``: ``latency_ms``, ``fail_rate``, ``throttle_rate``,
  ``throttle_retry_after``, ``upload_paths``, ``range``.
- ``GET  /_emulator/state``: every live container with its files and the ``file_ids`` and
  ``skills`` it was created with (``created_with``), and the Files-API files (``files``).
- ``POST /_emulator/containers/{id}/expire``: expire a container now.
- ``POST /_emulator/containers/{id}/files``: add a file as the code interpreter would
  (``{"path", "content" | "content_base64", "source": "assistant", "report_bytes"}``).
- ``GET|POST /_emulator/clock``: ``{"advance_seconds": N}`` moves the clock forward.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from containerfs.emulator.config import UPLOAD_PATH_POLICIES, EmulatorConfig
from containerfs.emulator.errors import ApiError, bad_request, not_found
from containerfs.emulator.faults import FaultRule
from containerfs.emulator.seed import SeedError, parse_file
from containerfs.emulator.state import Emulator

log = logging.getLogger(__name__)


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise bad_request(f"Invalid JSON: {exc}.") from exc


def _rate(value: object) -> float:
    rate = float(value)  # type: ignore[arg-type]
    if not 0.0 <= rate <= 1.0:
        raise ValueError("expected a probability between 0 and 1")
    return rate


def _non_negative(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    if number < 0:
        raise ValueError("expected a non-negative number")
    return number


def _policy(value: object) -> str:
    if value not in UPLOAD_PATH_POLICIES:
        raise ValueError(f"expected one of {UPLOAD_PATH_POLICIES}")
    return str(value)


# Settable keys: JSON name -> (config attribute, converter).
_CONFIG_KEYS: dict[str, tuple[str, Callable[[object], object]]] = {
    "latency_ms": ("latency_ms", _non_negative),
    "fail_rate": ("fail_rate", _rate),
    "throttle_rate": ("throttle_rate", _rate),
    "throttle_retry_after": ("throttle_retry_after", _non_negative),
    "upload_paths": ("upload_paths", _policy),
    "range": ("range_requests", bool),
}


def _config_json(config: EmulatorConfig) -> dict[str, Any]:
    return {key: getattr(config, attr) for key, (attr, _) in _CONFIG_KEYS.items()}


def _emulator(request: Request) -> Emulator:
    emu: Emulator = request.app.state.emulator
    return emu


async def stats(request: Request) -> Response:
    return JSONResponse(_emulator(request).stats.statistics())


async def reset_stats(request: Request) -> Response:
    emu = _emulator(request)
    emu.stats.reset()
    return JSONResponse(emu.stats.statistics())


async def recent_requests(request: Request) -> Response:
    return JSONResponse({"requests": _emulator(request).stats.recent()})


async def get_faults(request: Request) -> Response:
    return JSONResponse({"rules": _emulator(request).faults.to_json()})


async def set_faults(request: Request) -> Response:
    emu = _emulator(request)
    body = await _json(request)
    raw = body.get("rules") if isinstance(body, Mapping) else body
    if not isinstance(raw, list):
        raise bad_request("Expected a JSON list of fault rules.", param="rules")
    emu.faults.set([FaultRule.from_json(rule) for rule in raw])
    return JSONResponse({"rules": emu.faults.to_json()})


async def clear_faults(request: Request) -> Response:
    emu = _emulator(request)
    emu.faults.clear()
    return JSONResponse({"rules": []})


async def get_config(request: Request) -> Response:
    return JSONResponse(_config_json(_emulator(request).config))


async def set_config(request: Request) -> Response:
    config = _emulator(request).config
    body = await _json(request)
    if not isinstance(body, Mapping):
        raise bad_request("Expected a JSON object.")
    updates = {}
    for key, value in body.items():
        if key not in _CONFIG_KEYS:
            raise bad_request(f"Unknown setting {key!r}.", param=key)
        attr, convert = _CONFIG_KEYS[key]
        try:
            updates[attr] = convert(value)
        except (TypeError, ValueError) as exc:
            raise bad_request(f"Invalid {key!r}: {exc}.", param=key) from exc
    for attr, value in updates.items():
        setattr(config, attr, value)
    log.info("config changed: %s", updates)
    return JSONResponse(_config_json(config))


async def state(request: Request) -> Response:
    emu = _emulator(request)
    await emu.expire_due()
    containers = []
    for container in emu.store.all_containers():
        entry = container.to_json()
        entry["files"] = [f.to_json() for f in emu.store.all_files(container.id)]
        options = emu.store.container_options(container.id)
        entry["created_with"] = {"file_ids": options.file_ids, "skills": options.skills}
        containers.append(entry)
    files = [f.to_json() for f in emu.store.all_api_files()]
    return JSONResponse({"containers": containers, "files": files, "now": emu.config.clock.now()})


def _live_container(emu: Emulator, cid: str) -> None:
    row = emu.store.get_container(cid)
    if row is None:
        raise not_found(f"No container found with id '{cid}'.")
    if row.expired:
        raise bad_request("Container is expired.")


async def expire(request: Request) -> Response:
    emu = _emulator(request)
    cid = request.path_params["container_id"]
    if emu.store.get_container(cid) is None:
        raise not_found(f"No container found with id '{cid}'.")
    await emu.remove_blobs(emu.store.expire_container(cid))
    row = emu.store.get_container(cid)
    assert row is not None
    return JSONResponse(row.to_json())


async def add_file(request: Request) -> Response:
    emu = _emulator(request)
    cid = request.path_params["container_id"]
    await emu.expire_due()
    _live_container(emu, cid)
    body = await _json(request)
    if isinstance(body, Mapping):
        body = {"source": "assistant", **body}
    try:
        seed = parse_file(body, where="file")
    except SeedError as exc:
        raise bad_request(str(exc)) from exc
    # Admin-added files are small test fixtures; written on the loop like seeds.
    row = emu.store.add_file_bytes(
        cid,
        path=seed.path,
        content=seed.content,
        source=seed.source,
        report_bytes=seed.report_bytes,
    )
    return JSONResponse(row.to_json())


async def get_clock(request: Request) -> Response:
    clock = _emulator(request).config.clock
    return JSONResponse({"now": clock.now(), "offset": clock.offset})


async def advance_clock(request: Request) -> Response:
    clock = _emulator(request).config.clock
    body = await _json(request)
    seconds = body.get("advance_seconds") if isinstance(body, Mapping) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise bad_request("Expected {'advance_seconds': N} with N >= 0.", param="advance_seconds")
    clock.advance(seconds)
    return JSONResponse({"now": clock.now(), "offset": clock.offset})


AdminHandler = Callable[[Request], Any]

# (path, method, handler); paths are under ``/_emulator``.
ROUTES: list[tuple[str, str, AdminHandler]] = [
    ("/stats", "GET", stats),
    ("/reset-stats", "POST", reset_stats),
    ("/requests", "GET", recent_requests),
    ("/faults", "GET", get_faults),
    ("/faults", "POST", set_faults),
    ("/faults", "DELETE", clear_faults),
    ("/config", "GET", get_config),
    ("/config", "POST", set_config),
    ("/state", "GET", state),
    ("/containers/{container_id}/expire", "POST", expire),
    ("/containers/{container_id}/files", "POST", add_file),
    ("/clock", "GET", get_clock),
    ("/clock", "POST", advance_clock),
]


async def run_admin(handler: AdminHandler, request: Request) -> Response:
    try:
        response: Response = await handler(request)
    except ApiError as exc:
        return exc.response()
    return response
