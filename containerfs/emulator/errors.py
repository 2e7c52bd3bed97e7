"""API errors and the error envelope ``{"error": {message, type, param, code}}``.

Handlers raise :class:`ApiError`; the request pipeline in ``app`` turns it into a response.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

# Default (type, code, message) for a status, used by fault rules and random failures.
_STATUS_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", None, "Not found."),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", "conflict", "The request conflicted with another request."),
    413: ("invalid_request_error", None, "Request entity too large."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 100, Used 100, Requested 1. "
        "Please try again in 600ms.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
}


class ApiError(Exception):
    """An error answer of the API, raised anywhere below a route handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = dict(headers or {})

    @classmethod
    def for_status(
        cls,
        status: int,
        *,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiError:
        """The service's usual answer for ``status`` (fault injection, random failures)."""
        family = 500 if status >= 500 else 400
        type_, code, default = _STATUS_DEFAULTS.get(status, _STATUS_DEFAULTS[family])
        return cls(status, message or default, code=code, type=type_, headers=headers)

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.envelope(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, *, param: str | None = None) -> ApiError:
    return ApiError(404, message, param=param)
