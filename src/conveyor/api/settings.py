"""The API service's settings: a frozen value object read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import DEFAULT_REDIS_URL, from_env
from ..errors import ConfigurationError
from ..history.store import parse_url
from ..ops.keys import DEFAULT_PREFIX
from ..serialization import DEFAULT_MAX_PAYLOAD_BYTES
from .auth import TokenStore

MAX_BULK = 10_000
"""Jobs one bulk request may carry."""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the API service runs. Environment: ``CONVEYOR_API_<FIELD>`` for its own fields
    (``CONVEYOR_API_CORS_ORIGINS`` comma-separated, ``CONVEYOR_API_MAX_BODY_BYTES``,
    ``CONVEYOR_API_MAX_WAIT``, ``CONVEYOR_API_MAX_STREAMS``, ``CONVEYOR_API_ARCHIVE``),
    ``CONVEYOR_API_TOKENS`` /
    ``CONVEYOR_API_TOKENS_FILE``, and what every producer reads: ``CONVEYOR_REDIS_URL``,
    ``CONVEYOR_PREFIX``, ``CONVEYOR_MAX_PAYLOAD_BYTES``, ``CONVEYOR_CLUSTER_WAIT_MS``; the
    history's ``CONVEYOR_HISTORY_URL``, as the archiver and ``conveyor history`` read it.
    ``docs`` is set by argument only."""

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
    history_url: str | None = None
    """The history store of finished jobs (``sqlite:///path`` or ``postgresql://...``), served
    under ``/v1/history``; opened on the first request that needs it. None (the default) turns
    those endpoints off: they answer 404 ``history-disabled``, saying how to turn them on."""
    archive: bool = True
    """With a history URL: this process also archives the finished jobs of every queue (and
    of queues created later) into the store, as workers with a history URL do; any number of
    processes may (``CONVEYOR_API_ARCHIVE=0`` leaves it to workers or ``conveyor history
    archive``)."""

    def __post_init__(self) -> None:
        # A bad URL fails at startup, not on the first history request hours later.
        if self.history_url is not None:
            try:
                parse_url(self.history_url)
            except ValueError as exc:
                raise ConfigurationError(f"CONVEYOR_HISTORY_URL: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ApiSettings:
        """Defaults, then the environment, then ``overrides`` (ignoring ``None`` values)."""
        env = os.environ if environ is None else environ
        # Tokens come from two variables, inline and a file: read apart, then ranked like any
        # other value from the environment (a keyword argument wins).
        tokens = TokenStore.from_env(env)
        if overrides.get("tokens") is None:
            overrides["tokens"] = tokens
        return from_env(
            cls,
            env,
            overrides,
            prefix="CONVEYOR_API_",
            shared=("redis_url", "prefix", "max_payload_bytes", "cluster_wait_ms", "history_url"),
            skip=("tokens", "docs"),
        )
