"""How a worker makes HTTP calls: a frozen value object read from ``CONVEYOR_HTTP_*``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import comma_list, from_env
from ..errors import ConfigurationError

DEFAULT_KEEP_HEADERS = ("content-type", "content-length", "location", "etag", "retry-after", "x-request-id")


def _lower_list(raw: str) -> tuple[str, ...]:
    return comma_list(raw.lower())  # header names are compared in lower case


@dataclass(frozen=True, slots=True)
class HttpCallSettings:
    """How a worker makes HTTP calls. Every field can be set as ``CONVEYOR_HTTP_<FIELD>``
    (lists comma-separated)."""

    allow_hosts: tuple[str, ...] = ()
    """When non-empty, only these hosts may be called (``*.example.com`` patterns allowed)."""
    deny_hosts: tuple[str, ...] = ()
    """Hosts never called, even when allowed above."""
    allow_networks: tuple[str, ...] = ()
    """Non-public networks that may be called anyway (``10.0.0.0/8``, ``127.0.0.1/32``)."""
    max_body_bytes: int = 64 * 1024
    """Bytes of the response body kept in the job's result."""
    keep_headers: tuple[str, ...] = DEFAULT_KEEP_HEADERS
    """Response headers kept in the result (lower case)."""
    callback_secret: str | None = None
    """Key of the HMAC-SHA256 signature on completion callbacks; unsigned without one."""
    max_connections: int = 2000
    """Connections the shared client keeps open at most, across all hosts."""
    ca_file: str | None = None
    """A PEM file of CA certificates to trust instead of the system's (an internal CA)."""

    def __post_init__(self) -> None:
        for network in self.allow_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigurationError(f"allow_networks: {network!r} is not an IP network") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HttpCallSettings:
        """Defaults, then the environment, then ``overrides`` (ignoring ``None`` values)."""
        return from_env(cls, environ, overrides, prefix="CONVEYOR_HTTP_", parse={"keep_headers": _lower_list})
