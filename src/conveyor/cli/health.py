"""``conveyor health``: is Redis reachable, and is it set up so that it cannot lose jobs."""

from __future__ import annotations

import json
import sys

import click
import redis

from ..metrics import redis_health
from ..metrics.redis_health import Check, RedisHealth
from ..redis.connect import redact
from .options import connect, json_option, url_option
from .output import console, table

_STYLE = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}

_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)


@click.command()
@url_option
@json_option
def health(url: str, as_json: bool) -> None:
    """Check Redis: reachable, memory headroom, an eviction policy that cannot lose jobs
    (noeviction), persistence (AOF or RDB snapshots).

    Memory at 80 % of maxmemory is a warning, at 90 % a failure; any maxmemory-policy but
    noeviction fails (Redis would delete queued jobs to make room); no persistence at all is
    a warning. On managed Redis that refuses CONFIG, the RDB save points show as unknown.

    \b
    Exit codes:
      0  healthy (warnings alone still exit 0)
      1  a check failed
      2  Redis is unreachable
    """
    try:
        with connect(url) as client:
            found = redis_health.read(client)
    except _UNREACHABLE as exc:
        _report(url, None, redis_health.unreachable(exc), as_json)
        sys.exit(2)
    verdicts = redis_health.checks(found)
    _report(url, found, verdicts, as_json)
    sys.exit(redis_health.exit_code(verdicts))


def _report(url: str, found: RedisHealth | None, verdicts: list[Check], as_json: bool) -> None:
    if as_json:
        status = "unreachable" if found is None else redis_health.overall(verdicts)
        document = {
            "status": status,
            "checks": [check.as_dict() for check in verdicts],
            "redis": found.as_dict() if found is not None else None,
        }
        click.echo(json.dumps(document, indent=2))
        return
    shown = table(f"Redis health: {redact(url)}", ("check", "status", "message"))
    for check in verdicts:
        shown.add_row(check.name, _STYLE[check.status], check.message)
    console.print(shown)
    if found is not None:
        console.print(_figures(found))


def _figures(found: RedisHealth) -> object:
    figures = table("Figures", ("figure", "value"))
    persistence = found.persistence_enabled
    rows = (
        ("server", found.server),
        ("memory used", redis_health.size(found.used_memory)),
        ("maxmemory", redis_health.size(found.max_memory) if found.max_memory else "no limit"),
        ("maxmemory-policy", found.eviction_policy or "unknown"),
        ("AOF", "on" if found.aof_enabled else "off"),
        ("RDB save points", "unknown" if found.save_points is None else found.save_points or "none"),
        ("persistence", "unknown" if persistence is None else "on" if persistence else "off"),
        ("connected clients", f"{found.connected_clients:,}"),
        ("blocked clients", f"{found.blocked_clients:,}"),
        ("ops/s", f"{found.ops_per_second:,}"),
    )
    for name, value in rows:
        figures.add_row(name, value)
    return figures
