"""Request parsing shared by the ``/v1`` handlers: JSON bodies, list parameters, and the
validation errors named the way the real service names them (``param``, ``code``).

Part of the emulator's HTTP layer (below ``api`` and ``files_api``, above ``errors``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from containerfs.emulator.errors import ApiError, bad_request
from containerfs.emulator.rows import Order

ORDERS: tuple[Order, ...] = ("asc", "desc")

_JSON_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def type_name(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def invalid_type(param: str, expected: str, value: object) -> ApiError:
    return bad_request(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, value: object, allowed: tuple[str, ...]) -> ApiError:
    choices = ", ".join(f"'{a}'" for a in allowed)
    return bad_request(
        f"Invalid value: {value!r}. Supported values are: {choices}.",
        param=param,
        code="invalid_value",
    )


def missing(param: str) -> ApiError:
    return bad_request(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def int_in_range(param: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(param, "an integer", value)
    if value < low:
        raise bad_request(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    if value > high:
        raise bad_request(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )
    return value


async def json_body(request: Request) -> Mapping[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)"
        ) from exc
    if not isinstance(body, dict):
        raise bad_request(f"Invalid body: expected an object, but got {type_name(body)}.")
    return body


def reject_unknown(body: Mapping[str, Any], known: frozenset[str]) -> None:
    for key in body:
        if key not in known:
            raise bad_request(f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


def list_params(
    request: Request, *, default_limit: int = 20, max_limit: int = 100
) -> tuple[int, Order, str | None]:
    """``limit``, ``order`` and ``after`` of a listing (the containers' bounds by default)."""
    query = request.query_params
    limit = default_limit
    if "limit" in query:
        try:
            value: object = int(query["limit"])
        except ValueError:
            value = query["limit"]
        limit = int_in_range("limit", value, 1, max_limit)
    order = query.get("order", "desc")
    if order not in ORDERS:
        raise invalid_value("order", order, ORDERS)
    return limit, order, query.get("after")


def unknown_cursor(after: str) -> ApiError:
    # Documented choice: an ``after`` naming no object of the listing is a 400 (the cursor
    # of an object deleted meanwhile still works, see ``store``).
    return bad_request(f"Invalid 'after': no object with id '{after}' in this list.", param="after")
