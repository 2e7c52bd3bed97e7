"""API client settings and counters: ``ApiConfig`` (from the SDKs' environment variables) and
the ``ClientStats`` snapshot. Plain data for the client layer; no I/O, no httpx.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from containerfs.errors import ConfigError

#: Endpoint names, as counted in ``ClientStats.requests``.
ENDPOINTS = (
    "list_containers",
    "create_container",
    "retrieve_container",
    "delete_container",
    "list_files",
    "upload_file",
    "retrieve_file",
    "delete_file",
    "file_content",
)


@dataclass(frozen=True)
class ApiConfig:
    """Where and how to reach the API. The key never appears in ``repr`` or logs."""

    base_url: str = "https://api.openai.com/v1"
    api_key: str = field(default="", repr=False)
    organization: str | None = None
    project: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    rate_limit_per_minute: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ApiConfig:
        """The configuration the official SDKs read: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
        ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``; keyword ``overrides`` win over the environment.
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown API setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            "base_url": (env.get("OPENAI_BASE_URL") or cls.base_url).rstrip("/"),
            "api_key": env.get("OPENAI_API_KEY", ""),
            "organization": env.get("OPENAI_ORG_ID") or None,
            "project": env.get("OPENAI_PROJECT_ID") or None,
        }
        values.update(overrides)
        if not values["api_key"]:
            raise ConfigError("OPENAI_API_KEY is not set: export the API key before mounting")
        return cls(**values)


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of an ``ApiClient``'s counters."""

    requests: Mapping[str, int]  # attempts sent, by endpoint name (retries included)
    bytes_up: int
    bytes_down: int
    retries: int
    errors: Mapping[str, int]  # errors raised to callers, by class name
    adopted: int  # ambiguous creates resolved by finding the created object
    rate_limit_waits: int
    rate_limit_wait_seconds: float

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())
