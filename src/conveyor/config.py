"""Settings as a frozen value object.

Precedence, highest first: a keyword argument, a ``CONVEYOR_*`` environment variable, the
default. (A config file layer sits between the environment and the defaults once it exists.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import ConfigurationError
from .ops.keys import DEFAULT_PREFIX
from .serialization import DEFAULT_MAX_PAYLOAD_BYTES

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class Settings:
    """Connection and behaviour shared by producers and workers.

    Every field can be set from the environment as ``CONVEYOR_<FIELD>`` (upper case).
    """

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    durable_replicas: int = 0
    """Durable enqueue: with N > 0, an enqueue returns only once N replicas acknowledged the
    write (``WAIT``), and raises :class:`~conveyor.errors.NotDurable` when they did not
    within ``durable_timeout_ms``. 0: the primary's acknowledgement is enough."""
    durable_timeout_ms: int = 1000
    cluster_wait_ms: int = 30_000
    """Redis Cluster: how long a call waits out refusals -- ``TRYAGAIN`` and redirections
    while a slot migrates, ``CLUSTERDOWN`` during a failover, all of which mean the command
    did not run -- before raising :class:`~conveyor.errors.ClusterUnavailable`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then the environment, then ``overrides`` (ignoring ``None`` values)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"CONVEYOR_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _convert(name: str, raw: str, kind: Any) -> Any:
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"CONVEYOR_{name.upper()} must be an integer, got {raw!r}") from None
    return raw
