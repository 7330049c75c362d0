"""The API service's settings: a frozen value object read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import DEFAULT_REDIS_URL
from ..errors import ConfigurationError
from ..ops.keys import DEFAULT_PREFIX
from ..serialization import DEFAULT_MAX_PAYLOAD_BYTES
from .auth import TokenStore

MAX_BULK = 10_000
"""Jobs one bulk request may carry."""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the API service runs. Environment: ``CONVEYOR_REDIS_URL``, ``CONVEYOR_PREFIX``,
    ``CONVEYOR_API_TOKENS`` / ``CONVEYOR_API_TOKENS_FILE``, ``CONVEYOR_API_CORS_ORIGINS``
    (comma-separated), ``CONVEYOR_API_MAX_WAIT``, ``CONVEYOR_API_MAX_STREAMS``,
    ``CONVEYOR_CLUSTER_WAIT_MS``."""

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    tokens: TokenStore = field(default_factory=TokenStore)
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS; empty (the default) sends no CORS headers at all."""
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    """Largest arguments of one job, as for every producer."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body (a bulk enqueue of many jobs)."""
    max_wait: float = 60.0
    """Longest long poll a client may ask for when waiting for a result."""
    max_streams: int = 1000
    """Long polls and event streams open at once in this process; more get 429."""
    docs: bool = True
    """Serve the OpenAPI document at /openapi.json and interactive docs at /docs."""
    cluster_wait_ms: int = 30_000
    """Redis Cluster: how long a request waits out a slot migration or failover before
    answering 503, as for every producer (``CONVEYOR_CLUSTER_WAIT_MS``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ApiSettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("CONVEYOR_REDIS_URL"):
            values["redis_url"] = env["CONVEYOR_REDIS_URL"]
        if env.get("CONVEYOR_PREFIX"):
            values["prefix"] = env["CONVEYOR_PREFIX"]
        values["tokens"] = TokenStore.from_env(env)
        if env.get("CONVEYOR_API_CORS_ORIGINS"):
            values["cors_origins"] = tuple(
                o.strip() for o in env["CONVEYOR_API_CORS_ORIGINS"].split(",") if o.strip()
            )
        for name, kind in (
            ("max_payload_bytes", int),
            ("max_body_bytes", int),
            ("max_wait", float),
            ("max_streams", int),
            ("cluster_wait_ms", int),
        ):
            variable = (
                f"CONVEYOR_{name.upper()}"
                if name in ("max_payload_bytes", "cluster_wait_ms")
                else f"CONVEYOR_API_{name.upper()}"
            )
            raw = env.get(variable)
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ConfigurationError(f"{variable} must be a number, got {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)
