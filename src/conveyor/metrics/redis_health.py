"""The Redis server's health, and the settings under which it loses jobs without a word.

Conveyor keeps every job in Redis, so two server settings decide whether a job survives:

* ``maxmemory-policy``: anything but ``noeviction`` lets Redis delete keys when it reaches
  ``maxmemory`` -- a waiting job, a running job's lease, a flow's parent -- silently. Under
  ``noeviction`` a full Redis refuses writes instead, which producers see as an error. This
  is a failed check, and the worker and the API warn about it when they start.
* persistence: without AOF and without RDB save points, a restart of Redis loses every job.
  Many deployments choose that knowingly (a cache-like queue, replicas for safety), so it is
  a warning, never a failure.

Everything is read from ``INFO``, which managed services (ElastiCache, Memorystore, Azure)
allow, while many refuse ``CONFIG``. Only the RDB save points are not in ``INFO``: they come
from ``CONFIG GET save`` and are "unknown" where ``CONFIG`` is refused.

:func:`read_health` is one operation (:mod:`conveyor.ops.steps`) for both faces; :func:`read`
and :func:`aread` run it, :func:`checks` judges what it read, :func:`families` exports it
(``conveyor_redis_*``). On Redis Cluster the commands reach the one node redis-py sends
server commands to, not every primary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from redis.exceptions import AuthenticationError, ResponseError

from ..ops.steps import Command, Step
from .exposition import Family

__all__ = [
    "CONFIG_REFUSED",
    "MEMORY_FAIL",
    "MEMORY_WARN",
    "SAFE_POLICY",
    "AsyncRunner",
    "Check",
    "RedisHealth",
    "Runner",
    "Status",
    "aread",
    "checks",
    "exit_code",
    "families",
    "overall",
    "parse_info",
    "read",
    "read_health",
    "size",
    "unreachable",
    "unsafe_policy_message",
    "warn_if_evicting",
]

T = TypeVar("T")

Status = Literal["ok", "warn", "fail"]

MEMORY_WARN = 0.80
"""Used memory at or above this share of ``maxmemory`` is a warning."""
MEMORY_FAIL = 0.90
"""... and at or above this share a failed check: a burst of enqueues can fill the rest in
seconds, and a full Redis under ``noeviction`` refuses every write, acknowledgements too."""

SAFE_POLICY = "noeviction"

_ORDER: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}

CONFIG_REFUSED: tuple[type[Exception], ...] = (ResponseError, AuthenticationError)
"""How a server refuses ``CONFIG``: a renamed or disabled command answers ``ERR unknown
command``, an ACL ``NOPERM`` (which the transports raise as an authentication error)."""


@dataclass(frozen=True, slots=True)
class RedisHealth:
    """What one ``INFO`` (and ``CONFIG GET save``) said about the server."""

    product: str
    """``redis``, ``valkey``, ...: the real server, not the Redis version it claims to be."""
    version: str
    used_memory: int
    """Bytes (``used_memory``)."""
    max_memory: int
    """Bytes (``maxmemory``); 0: no limit."""
    eviction_policy: str
    """``maxmemory_policy``; empty when ``INFO`` does not say."""
    aof_enabled: bool
    save_points: str | None
    """``CONFIG GET save``: ``"3600 1 300 100"``, ``""`` for none, None when ``CONFIG`` was refused."""
    rdb_changes_since_last_save: int
    """Writes a crash would lose when RDB snapshots are the only persistence."""
    connected_clients: int
    blocked_clients: int
    ops_per_second: int
    """``instantaneous_ops_per_sec``: Redis's own estimate over its last few samples."""

    @classmethod
    def from_info(cls, info: str | Mapping[str, Any], save_points: str | None) -> RedisHealth:
        """From an ``INFO`` reply: its text (the lean transports), or the dict redis-py makes
        of it (the Sentinel and Cluster transports, a redis-py client of the user's)."""
        fields = parse_info(info) if isinstance(info, str) else {k: str(v) for k, v in info.items()}
        product, version = _server(fields)
        return cls(
            product=product,
            version=version,
            used_memory=_int(fields, "used_memory"),
            max_memory=_int(fields, "maxmemory"),
            eviction_policy=fields.get("maxmemory_policy", ""),
            aof_enabled=_int(fields, "aof_enabled") == 1,
            save_points=save_points,
            rdb_changes_since_last_save=_int(fields, "rdb_changes_since_last_save"),
            connected_clients=_int(fields, "connected_clients"),
            blocked_clients=_int(fields, "blocked_clients"),
            ops_per_second=_int(fields, "instantaneous_ops_per_sec"),
        )

    @property
    def server(self) -> str:
        """``valkey 9.1.2``."""
        return f"{self.product} {self.version}".strip()

    @property
    def persistence_enabled(self) -> bool | None:
        """AOF on, or RDB save points set; None when AOF is off and the save points are unknown."""
        if self.aof_enabled:
            return True
        if self.save_points is None:
            return None
        return bool(self.save_points.strip())

    @property
    def memory_ratio(self) -> float | None:
        """Used memory as a share of ``maxmemory``; None without a limit."""
        return self.used_memory / self.max_memory if self.max_memory else None

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON (``conveyor health --json``)."""
        return {
            "server": self.server,
            "product": self.product,
            "version": self.version,
            "used_memory_bytes": self.used_memory,
            "max_memory_bytes": self.max_memory,
            "eviction_policy": self.eviction_policy or None,
            "aof_enabled": self.aof_enabled,
            "save_points": self.save_points,
            "persistence_enabled": self.persistence_enabled,
            "rdb_changes_since_last_save": self.rdb_changes_since_last_save,
            "connected_clients": self.connected_clients,
            "blocked_clients": self.blocked_clients,
            "ops_per_second": self.ops_per_second,
        }


def parse_info(text: str) -> dict[str, str]:
    """``INFO``'s ``field:value`` lines as a dict (section headers and blank lines skipped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def _int(fields: Mapping[str, str], name: str) -> int:
    try:
        return int(float(fields.get(name, "0")))
    except ValueError:
        return 0


def _server(fields: Mapping[str, str]) -> tuple[str, str]:
    """The product and its version. Valkey (and other forks) report ``redis_version`` as the
    Redis version they are compatible with (7.2.4), and their own beside it: Valkey 8 and
    later name themselves in ``server_name``, and every fork has its own ``<name>_version``."""
    named = fields.get("server_name", "").lower()
    if named and fields.get(f"{named}_version"):
        return named, fields[f"{named}_version"]
    for product in ("valkey", "dragonfly", "keydb"):
        if fields.get(f"{product}_version"):
            return product, fields[f"{product}_version"]
    return "redis", fields.get("redis_version", "")


def _config_value(reply: Any) -> str | None:
    """The value from a ``CONFIG GET`` of one parameter (``[name, value]``); None when the
    server does not know the parameter."""
    return str(reply[1]) if reply and len(reply) >= 2 else None


def read_health(config: bool = True) -> Generator[Step, Any, RedisHealth]:
    """Read the server's health: ``CONFIG GET save`` (unless ``config`` is false), then ``INFO``.

    ``CONFIG`` goes first so that a server refusing it has cost one round trip, not a
    wasted ``INFO``: the caller runs the operation again with ``config=False`` (see :func:`read`).
    """
    save_points: str | None = None
    if config:
        save_points = _config_value((yield Command(("CONFIG", "GET", "save"))))
    info = yield Command(("INFO",))
    return RedisHealth.from_info(info, save_points)


class Runner(Protocol):
    """What runs an operation on the sync face: a :class:`~conveyor.Client`, a ``SyncExecutor``."""

    def run(self, operation: Generator[Step, Any, T]) -> T: ...


class AsyncRunner(Protocol):
    """What runs an operation on the async face: an :class:`~conveyor.AsyncClient`, an ``AsyncExecutor``."""

    def run(self, operation: Generator[Step, Any, T]) -> Awaitable[T]: ...


def read(runner: Runner) -> RedisHealth:
    """The server's health; ``CONFIG`` refused leaves the save points unknown. Raises what
    the transport raises when Redis cannot be reached."""
    try:
        return runner.run(read_health())
    except CONFIG_REFUSED:
        return runner.run(read_health(config=False))


async def aread(runner: AsyncRunner) -> RedisHealth:
    """As :func:`read`, on the async face."""
    try:
        return await runner.run(read_health())
    except CONFIG_REFUSED:
        return await runner.run(read_health(config=False))


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict: ``ok``, ``warn`` (worth a look, nothing fails) or ``fail``."""

    name: str
    status: Status
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message}


def size(count: float) -> str:
    """Bytes for people: ``1.1 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def checks(health: RedisHealth) -> list[Check]:
    """The verdicts on a server that answered: reachable, memory headroom, eviction policy,
    persistence."""
    return [
        Check("redis", "ok", f"{health.server} answers"),
        _memory(health),
        _eviction(health),
        _persistence(health),
    ]


def unreachable(error: BaseException | str) -> list[Check]:
    """The verdicts when Redis did not answer: one failed check saying why."""
    return [Check("redis", "fail", f"cannot reach Redis: {error}")]


def _memory(health: RedisHealth) -> Check:
    used = size(health.used_memory)
    ratio = health.memory_ratio
    if ratio is None:
        return Check("memory", "ok", f"{used} used; no maxmemory limit set")
    text = f"{used} of {size(health.max_memory)} used ({ratio:.0%})"
    if ratio >= MEMORY_FAIL:
        return Check("memory", "fail", f"{text}: a full Redis refuses every write; add memory or remove jobs")
    if ratio >= MEMORY_WARN:
        return Check("memory", "warn", f"{text}: nearly full")
    return Check("memory", "ok", text)


def _eviction(health: RedisHealth) -> Check:
    policy = health.eviction_policy
    if policy == SAFE_POLICY:
        return Check("eviction_policy", "ok", "noeviction: a full Redis refuses writes rather than drop jobs")
    if not policy:
        return Check(
            "eviction_policy", "warn", "INFO does not report maxmemory_policy; check it is noeviction"
        )
    return Check("eviction_policy", "fail", unsafe_policy_message(policy))


def unsafe_policy_message(policy: str) -> str:
    return (
        f"maxmemory-policy is {policy!r}: when memory runs short Redis deletes keys to make room, "
        "queued and running jobs among them, and those jobs are lost without an error. "
        "Set maxmemory-policy noeviction"
    )


def _persistence(health: RedisHealth) -> Check:
    if health.aof_enabled:
        return Check("persistence", "ok", "AOF on")
    if health.save_points is None:
        return Check(
            "persistence",
            "warn",
            "AOF off, and the RDB save points are unknown (CONFIG is refused): "
            "check your provider's persistence settings, or a restart may lose every job",
        )
    if health.save_points.strip():
        return Check(
            "persistence",
            "ok",
            f"RDB snapshots (save {health.save_points}); AOF off: a crash loses the "
            f"{health.rdb_changes_since_last_save:,} writes since the last snapshot",
        )
    return Check("persistence", "warn", "neither AOF nor RDB snapshots: a restart of Redis loses every job")


def overall(found: list[Check]) -> Status:
    """The worst status among ``found``."""
    return max((check.status for check in found), key=_ORDER.__getitem__, default="ok")


def exit_code(found: list[Check], reachable: bool = True) -> int:
    """``conveyor health``'s exit code: 0 healthy (warnings included), 1 a failed check,
    2 Redis unreachable."""
    if not reachable:
        return 2
    return 1 if overall(found) == "fail" else 0


class Primaries(Protocol):
    async def call_on_primaries(self, *args: Any) -> list[Any]: ...


async def warn_if_evicting(transport: Primaries, log: logging.Logger, timeout: float = 5.0) -> None:
    """Log a loud warning when a server may evict keys under memory pressure (an evicted job
    is a lost job): for the start of a worker or the API, where someone reads the log. From
    INFO, which managed services allow where they refuse CONFIG, on every primary (a cluster
    has several). Never raises: the check is advice, never a reason not to start."""
    try:
        async with asyncio.timeout(timeout):
            replies = await transport.call_on_primaries("INFO", "memory")
    except Exception as exc:
        log.debug("could not read Redis's eviction policy at start: %r", exc)
        return
    for reply in replies:
        fields = reply if isinstance(reply, dict) else parse_info(str(reply))
        policy = str(fields.get("maxmemory_policy") or "")
        if policy and policy != SAFE_POLICY:
            log.warning("UNSAFE REDIS SETTING, JOBS CAN BE LOST: %s", unsafe_policy_message(policy))
            return


def families(health: RedisHealth | None) -> list[Family]:
    """The ``conveyor_redis_*`` families of a scrape; ``health`` None: Redis did not answer,
    and only ``conveyor_redis_up 0`` is exported.

    ``conveyor_redis_persistence_enabled`` is left out when it is unknown (AOF off, the
    save points unreadable): an absent series says "unknown", a 0 would say "off".
    """
    up = Family("conveyor_redis_up", "gauge", "1 when Redis answered this scrape, else 0")
    up.add(0 if health is None else 1)
    if health is None:
        return [up]
    used = Family("conveyor_redis_memory_used_bytes", "gauge", "Memory Redis uses (used_memory)")
    used.add(health.used_memory)
    limit = Family("conveyor_redis_memory_max_bytes", "gauge", "Redis's maxmemory (0: no limit)")
    limit.add(health.max_memory)
    info = Family(
        "conveyor_redis_info",
        "gauge",
        "The Redis server's product and version, eviction policy and AOF state",
    )
    info.add(
        1,
        (
            ("version", health.server),
            ("eviction_policy", health.eviction_policy or "unknown"),
            ("aof_enabled", "1" if health.aof_enabled else "0"),
        ),
    )
    safe = Family(
        "conveyor_redis_eviction_policy_safe",
        "gauge",
        "1 when maxmemory-policy is noeviction; 0 when Redis may evict (lose) jobs",
    )
    safe.add(1 if health.eviction_policy == SAFE_POLICY else 0)
    persistence = Family(
        "conveyor_redis_persistence_enabled", "gauge", "1 when AOF is on or RDB save points are set, else 0"
    )
    if health.persistence_enabled is not None:
        persistence.add(1 if health.persistence_enabled else 0)
    connected = Family("conveyor_redis_connected_clients", "gauge", "Client connections to Redis")
    connected.add(health.connected_clients)
    blocked = Family("conveyor_redis_blocked_clients", "gauge", "Clients waiting in a blocking command")
    blocked.add(health.blocked_clients)
    ops = Family("conveyor_redis_ops_per_second", "gauge", "Commands per second (instantaneous_ops_per_sec)")
    ops.add(health.ops_per_second)
    return [up, used, limit, info, safe, persistence, connected, blocked, ops]
