"""How a worker makes HTTP calls: a frozen value object read from ``CONVEYOR_HTTP_*``."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

DEFAULT_KEEP_HEADERS = ("content-type", "content-length", "location", "etag", "retry-after", "x-request-id")


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


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
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in ("allow_hosts", "deny_hosts", "allow_networks", "keep_headers"):
            raw = env.get(f"CONVEYOR_HTTP_{name.upper()}")
            if raw:
                values[name] = _split(raw.lower() if name == "keep_headers" else raw)
        for name in ("max_body_bytes", "max_connections"):
            raw = env.get(f"CONVEYOR_HTTP_{name.upper()}")
            if raw:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ConfigurationError(f"CONVEYOR_HTTP_{name.upper()} must be an integer") from None
        if env.get("CONVEYOR_HTTP_CA_FILE"):
            values["ca_file"] = env["CONVEYOR_HTTP_CA_FILE"]
        if env.get("CONVEYOR_HTTP_CALLBACK_SECRET"):
            values["callback_secret"] = env["CONVEYOR_HTTP_CALLBACK_SECRET"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
