"""The worker registry: live workers announce themselves with heartbeats.

A worker's hash expires when its heartbeats stop, so a SIGKILLed worker disappears from
``conveyor workers`` within a few heartbeat intervals without anyone cleaning up after it.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from .steps import Command, Step, as_dict


def heartbeat(
    workers_key: str, worker_key: str, worker_id: str, info: Mapping[str, Any], ttl_ms: int, now_ms: int
) -> list[Generator[Step, Any, None]]:
    """Three one-command operations, so that the heartbeat thread can send them along with its
    lease renewals in one round trip (``SyncExecutor.run_together``). The two keys are in
    different slots of a cluster, so this cannot be one script."""
    flat: list[Any] = []
    for field, value in info.items():
        flat += (field, value)
    return [
        _command(("HSET", worker_key, *flat)),
        _command(("PEXPIRE", worker_key, ttl_ms)),
        _command(("ZADD", workers_key, now_ms, worker_id)),
    ]


def _command(args: tuple[Any, ...]) -> Generator[Step, Any, None]:
    yield Command(args)


def unregister(workers_key: str, worker_key: str, worker_id: str) -> Generator[Step, Any, None]:
    yield Command(("DEL", worker_key))
    yield Command(("ZREM", workers_key, worker_id))


def list_workers(workers_key: str, prefix: str) -> Generator[Step, Any, list[dict[str, Any]]]:
    """Live workers with their info; entries whose hash expired are dropped from the index."""
    ids = yield Command(("ZRANGE", workers_key, 0, -1))
    live: list[dict[str, Any]] = []
    for worker_id in ids:
        info = yield Command(("HGETALL", f"{prefix}:worker:{worker_id}"))
        if info:
            live.append({"id": worker_id, **as_dict(info)})
        else:
            yield Command(("ZREM", workers_key, worker_id))
    return live
