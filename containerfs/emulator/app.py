"""The emulator's Starlette application: routes, the request pipeline, errors, request ids.

Every ``/v1`` request goes through one pipeline: count it, add latency, apply fault rules
and random failures, authenticate, expire idle containers, run the handler, apply
``after_body`` fault rules. Errors become the API's envelope here and nowhere else.
"""

from __future__ import annotations

import functools
import logging
import random
import secrets
from collections.abc import Awaitable, Callable

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from containerfs.emulator import admin, api, files_api
from containerfs.emulator.config import EmulatorConfig
from containerfs.emulator.errors import ApiError
from containerfs.emulator.faults import ConnectionDropped, DroppedResponse, FaultRule
from containerfs.emulator.state import Emulator
from containerfs.emulator.stats import LOGGED_HEADERS, RequestRecord
from containerfs.emulator.store import Store

log = logging.getLogger(__name__)

Handler = Callable[[Request, Emulator], Awaitable[Response]]

# (path, method, route name, handler); the route names key the counters and fault rules.
API_ROUTES: list[tuple[str, str, str, Handler]] = [
    ("/v1/containers", "GET", "list_containers", api.list_containers),
    ("/v1/containers", "POST", "create_container", api.create_container),
    ("/v1/containers/{container_id}", "GET", "retrieve_container", api.retrieve_container),
    ("/v1/containers/{container_id}", "DELETE", "delete_container", api.delete_container),
    ("/v1/containers/{container_id}/files", "GET", "list_files", api.list_files),
    ("/v1/containers/{container_id}/files", "POST", "upload_file", api.upload_file),
    ("/v1/containers/{container_id}/files/{file_id}", "GET", "retrieve_file", api.retrieve_file),
    ("/v1/containers/{container_id}/files/{file_id}", "DELETE", "delete_file", api.delete_file),
    (
        "/v1/containers/{container_id}/files/{file_id}/content",
        "GET",
        "file_content",
        api.file_content,
    ),
    ("/v1/files", "GET", "list_api_files", files_api.list_files),
    ("/v1/files", "POST", "create_api_file", files_api.create_file),
    ("/v1/files/{file_id}", "GET", "retrieve_api_file", files_api.retrieve_file),
    ("/v1/files/{file_id}", "DELETE", "delete_api_file", files_api.delete_file),
    ("/v1/files/{file_id}/content", "GET", "api_file_content", files_api.file_content),
]

_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username. You can obtain an API key from https://platform.openai.com/account/api-keys."
)


def mask_key(key: str) -> str:
    """The service's masked form of a key: a few characters at each end, stars between."""
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def _authenticate(api_key: str | None, request: Request) -> None:
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, _MISSING_KEY)
    if not secrets.compare_digest(given.encode(), api_key.encode()):
        raise ApiError(
            401,
            f"Incorrect API key provided: {mask_key(given)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )


def _random_failure(config: EmulatorConfig) -> ApiError | None:
    if config.fail_rate and random.random() < config.fail_rate:
        return ApiError.for_status(500)
    if config.throttle_rate and random.random() < config.throttle_rate:
        seconds = config.throttle_retry_after
        retry_after = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
        return ApiError.for_status(429, headers={"retry-after": retry_after})
    return None


def _fault_error(rule: FaultRule) -> ApiError:
    headers = rule.throttle_headers() if rule.action == "throttle" else None
    return ApiError.for_status(rule.status, message=rule.message, headers=headers)


async def _apply_after(rule: FaultRule, response: Response) -> Response:
    """A fault applied to the answer of an operation that already took place."""
    if rule.action == "stall":
        await anyio.sleep(rule.seconds)
        return response
    if rule.action == "drop":
        return DroppedResponse(response, keep=rule.drop_after_bytes)
    return _fault_error(rule).response()


async def _run(emu: Emulator, route: str, handler: Handler, request: Request) -> Response:
    """Everything between the counters and the handler; returns the answer to send."""
    method = request.method
    if emu.config.latency_ms > 0:
        await anyio.sleep(emu.config.latency_ms / 1000)
    rule = emu.faults.take(route, method, after_body=False)
    if rule is not None:
        emu.stats.faults_applied += 1
        if rule.action == "stall":
            await anyio.sleep(rule.seconds)
        elif rule.action == "drop" and method != "GET":
            return DroppedResponse(ApiError.for_status(500).response(), keep=rule.drop_after_bytes)
        elif rule.action != "drop":
            raise _fault_error(rule)
    failure = _random_failure(emu.config)
    if failure is not None:
        raise failure
    _authenticate(emu.config.api_key, request)
    await emu.expire_due()
    try:
        response = await handler(request, emu)
    except ApiError as exc:
        response = exc.response()
    if rule is not None and rule.action == "drop":  # a dropped GET: truncate the real answer
        return DroppedResponse(response, keep=rule.drop_after_bytes)
    after = emu.faults.take(route, method, after_body=True)
    if after is not None:
        emu.stats.faults_applied += 1
        response = await _apply_after(after, response)
    return response


async def _endpoint(route: str, handler: Handler, request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    emu.stats.count(route)
    try:
        response = await _run(emu, route, handler, request)
    except ApiError as exc:
        response = exc.response()
    except ClientDisconnect:
        log.info("%s: client disconnected before the request was read", route)
        response = Response(status_code=499)
    except Exception:
        log.exception("%s: unexpected error", route)
        response = ApiError.for_status(500).response()
    emu.stats.record(
        RequestRecord(
            route=route,
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            status=response.status_code,
            headers={h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers},
        )
    )
    return response


async def _admin_endpoint(handler: admin.AdminHandler, request: Request) -> Response:
    return await admin.run_admin(handler, request)


async def _invalid_url(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods get the service's 404 ``Invalid URL``."""
    if isinstance(exc, HTTPException) and exc.status_code not in (404, 405):
        return ApiError.for_status(exc.status_code, message=exc.detail).response()
    emu: Emulator = request.app.state.emulator
    emu.stats.count("unknown_route")
    return ApiError(404, f"Invalid URL ({request.method} {request.url.path})").response()


class RequestIdMiddleware:
    """Adds ``x-request-id: req_<hex>`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ("req_" + secrets.token_hex(16)).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-request-id", request_id)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(config: EmulatorConfig, *, store: Store | None = None) -> Starlette:
    """The emulator as an ASGI app; its state is ``app.state.emulator`` (an :class:`Emulator`).

    Opens a :class:`Store` in ``config.data_dir`` unless one is given; the caller closes it
    with ``app.state.emulator.close()``.
    """
    routes = [
        Route(path, functools.partial(_endpoint, name, handler), methods=[method], name=name)
        for path, method, name, handler in API_ROUTES
    ]
    routes += [
        Route("/_emulator" + path, functools.partial(_admin_endpoint, handler), methods=[method])
        for path, method, handler in admin.ROUTES
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={404: _invalid_url, 405: _invalid_url, HTTPException: _invalid_url},
    )
    app.state.emulator = Emulator(config, store=store)
    return app


__all__ = ["ConnectionDropped", "Emulator", "create_app"]
