"""The body of create-container, checked field by field as the real service checks it.

Part of the emulator's HTTP layer, used by ``api``: each optional field has a validator that
returns what the store keeps (``create_options``); an error names the offending ``param``
the way the service does. Secrets and skill payloads are checked, never kept.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from containerfs.emulator.errors import bad_request
from containerfs.emulator.params import (
    int_in_range,
    invalid_type,
    invalid_value,
    missing,
    reject_unknown,
)
from containerfs.emulator.rows import JsonObject

MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
NETWORK_POLICIES = ("disabled", "allowlist")
MAX_EXPIRES_MINUTES = 1440
MAX_SKILL_ID_LENGTH = 64
MAX_SKILL_DATA_LENGTH = 70254592
MAX_SECRET_LENGTH = 10485760


def _expires_after(value: object) -> int:
    if not isinstance(value, dict):
        raise invalid_type("expires_after", "an object", value)
    if "anchor" not in value:
        raise missing("expires_after.anchor")
    if value["anchor"] != "last_active_at":
        raise invalid_value("expires_after.anchor", value["anchor"], ("last_active_at",))
    if "minutes" not in value:
        raise missing("expires_after.minutes")
    return int_in_range("expires_after.minutes", value["minutes"], 1, MAX_EXPIRES_MINUTES)


def _non_empty_string(param: str, value: object, *, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    if not value:
        raise bad_request(
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param=param,
            code="empty_string",
        )
    if max_length is not None and len(value) > max_length:
        raise bad_request(
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{max_length}, but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )
    return value


def _non_empty_array(param: str, value: object, expected: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid_type(param, expected, value)
    if not value:
        raise bad_request(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1.",
            param=param,
            code="empty_array",
        )
    return value


def _object(param: str, value: object, known: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    for key in value:
        if key not in known:
            raise bad_request(
                f"Unknown parameter: '{param}.{key}'.",
                param=f"{param}.{key}",
                code="unknown_parameter",
            )
    return value


def _domain_secret(param: str, value: object) -> None:
    secret = _object(param, value, frozenset({"domain", "name", "value"}))
    for key in ("domain", "name", "value"):
        if key not in secret:
            raise missing(f"{param}.{key}")
    _non_empty_string(f"{param}.domain", secret["domain"])
    _non_empty_string(f"{param}.name", secret["name"])
    _non_empty_string(f"{param}.value", secret["value"], max_length=MAX_SECRET_LENGTH)


_POLICY_FIELDS = {
    "disabled": frozenset({"type"}),
    "allowlist": frozenset({"type", "allowed_domains", "domain_secrets"}),
}


def _network_policy(value: object) -> JsonObject:
    """The stored (and shown) policy; ``domain_secrets`` are checked but never kept."""
    if not isinstance(value, dict):
        raise invalid_type("network_policy", "an object", value)
    kind = value.get("type")
    if kind is None:
        raise missing("network_policy.type")
    if kind not in NETWORK_POLICIES:
        raise invalid_value("network_policy.type", kind, NETWORK_POLICIES)
    _object("network_policy", value, _POLICY_FIELDS[kind])
    if kind == "disabled":
        return {"type": "disabled"}
    if "allowed_domains" not in value:
        raise missing("network_policy.allowed_domains")
    param = "network_policy.allowed_domains"
    domains = _non_empty_array(param, value["allowed_domains"], "an array of strings")
    for i, domain in enumerate(domains):
        _non_empty_string(f"{param}[{i}]", domain)
    if "domain_secrets" in value:
        param = "network_policy.domain_secrets"
        secrets = _non_empty_array(param, value["domain_secrets"], "an array of objects")
        for i, secret in enumerate(secrets):
            _domain_secret(f"{param}[{i}]", secret)
    # The container object has no field for secrets (the spec shows type and domains only),
    # and an emulator has no use for them: they are dropped here, never stored or logged.
    return {"type": "allowlist", "allowed_domains": list(domains)}


def _memory_limit(value: object) -> str:
    if not isinstance(value, str) or value not in MEMORY_LIMITS:
        raise invalid_value("memory_limit", value, MEMORY_LIMITS)
    return value


def _file_ids(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise invalid_type("file_ids", "an array of strings", value)
    return list(value)


_SKILL_TYPES = ("skill_reference", "inline")
_SKILL_FIELDS = {
    "skill_reference": frozenset({"type", "skill_id", "version"}),
    "inline": frozenset({"type", "name", "description", "source"}),
}
_INLINE_SOURCE_FIELDS = frozenset({"type", "media_type", "data"})


def _skill(param: str, value: object) -> JsonObject:
    """One skill as stored: a reference as given, an inline skill without its payload."""
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    kind = value.get("type")
    if kind is None:
        raise missing(f"{param}.type")
    if kind not in _SKILL_TYPES:
        raise invalid_value(f"{param}.type", kind, _SKILL_TYPES)
    skill = _object(param, value, _SKILL_FIELDS[kind])
    required = ("skill_id",) if kind == "skill_reference" else ("name", "description", "source")
    for key in required:
        if key not in skill:
            raise missing(f"{param}.{key}")
    if kind == "skill_reference":
        _non_empty_string(f"{param}.skill_id", skill["skill_id"], max_length=MAX_SKILL_ID_LENGTH)
        stored: JsonObject = {"type": kind, "skill_id": skill["skill_id"]}
        if "version" in skill:
            version = skill["version"]
            if not isinstance(version, str):
                raise invalid_type(f"{param}.version", "a string", version)
            if version != "latest" and not (version.isdigit() and int(version) > 0):
                raise bad_request(
                    f"Invalid '{param}.version': expected a positive integer or 'latest', "
                    f"but got {version!r} instead.",
                    param=f"{param}.version",
                    code="invalid_value",
                )
            stored["version"] = version
        return stored
    for key in ("name", "description"):
        if not isinstance(skill[key], str):
            raise invalid_type(f"{param}.{key}", "a string", skill[key])
    _inline_source(f"{param}.source", skill["source"])
    # The zip payload (up to 67 MiB) is checked, not kept: nothing in the emulator runs it.
    return {"type": kind, "name": skill["name"], "description": skill["description"]}


def _inline_source(param: str, value: object) -> None:
    source = _object(param, value, _INLINE_SOURCE_FIELDS)
    for key in ("type", "media_type", "data"):
        if key not in source:
            raise missing(f"{param}.{key}")
    if source["type"] != "base64":
        raise invalid_value(f"{param}.type", source["type"], ("base64",))
    if source["media_type"] != "application/zip":
        raise invalid_value(f"{param}.media_type", source["media_type"], ("application/zip",))
    data = _non_empty_string(f"{param}.data", source["data"], max_length=MAX_SKILL_DATA_LENGTH)
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise bad_request(
            f"Invalid '{param}.data': not valid base64.", param=f"{param}.data"
        ) from exc


def _skills(value: object) -> list[JsonObject]:
    if not isinstance(value, list):
        raise invalid_type("skills", "an array", value)
    return [_skill(f"skills[{i}]", skill) for i, skill in enumerate(value)]


_CREATE_FIELDS = frozenset(
    {"name", "expires_after", "file_ids", "memory_limit", "network_policy", "skills"}
)
# Optional fields of create-container: validator, and the store keyword it fills.
_CREATE_OPTIONAL: dict[str, tuple[Callable[[object], Any], str]] = {
    "expires_after": (_expires_after, "expires_minutes"),
    "memory_limit": (_memory_limit, "memory_limit"),
    "network_policy": (_network_policy, "network_policy"),
    "file_ids": (_file_ids, "file_ids"),
    "skills": (_skills, "skills"),
}


def create_options(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The name of the container to create, and the store keywords its other fields fill."""
    reject_unknown(body, _CREATE_FIELDS)
    if "name" not in body:
        raise missing("name")
    name = body["name"]
    if not isinstance(name, str):
        raise invalid_type("name", "a string", name)
    options: dict[str, Any] = {}
    for key, (validate, keyword) in _CREATE_OPTIONAL.items():
        if key in body:
            options[keyword] = validate(body[key])
    return name, options
