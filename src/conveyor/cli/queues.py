"""Commands on queues and the workers serving them: counts, live workers, purge, pause, limits."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from ..client import UNSET
from ..redis.connect import redact
from . import live
from .options import (
    STATES,
    connect,
    create_option,
    json_option,
    queue_is_known,
    queue_options,
    require_known_queue,
    url_option,
)
from .output import console, err_console


@click.command()
@url_option
@click.option(
    "--queue",
    "-q",
    "--queues",
    "-Q",
    "queue_names",
    multiple=True,
    help="Only these queues (repeatable, or comma-separated as for the worker).",
)
@json_option
@live.watch_options
def info(
    url: str,
    queue_names: tuple[str, ...],
    as_json: bool,
    watch: bool,
    interval: float,
    count: int | None,
) -> None:
    """A table of queues: how many jobs each holds in every state, whether it is paused, its limits.

    With --watch, a live view of what the whole fleet does with each queue instead: jobs
    waiting, delayed, active and failed; jobs completed, failed for good and retried per
    minute and the 95th percentile of wait and run times, over the last 5 minutes; how long
    the oldest job has waited; whether the queue is paused; how many live workers serve it.

    \b
    Examples:
      conveyor info --watch                       a live table; Ctrl-C to quit
      conveyor info -w -q emails >> queues.log    a plain table every 2 s, appended to a file
      conveyor info -w --json --interval 60       one JSON line per queue every minute
    """
    wanted = [name for names in queue_names for name in names.split(",") if name]
    live.check_watch_options(watch)
    if watch:
        with connect(url) as client:
            live.watch(
                live.queues_frame(client, url, wanted), interval=interval, count=count, as_json=as_json
            )
        return
    with connect(url) as client:
        names = wanted or client.queues()
        rows = [(name, client.counts(name), client.settings_of(name)) for name in names]
    if as_json:
        listing = [
            {
                "name": name,
                "counts": counts,
                "paused": bool(settings.get("paused")),
                "limits": _limits(settings),
            }
            for name, counts, settings in rows
        ]
        click.echo(json.dumps({"queues": listing}, indent=2))
        return
    if not names:
        console.print("no queues yet: enqueue a job first")
        return
    counts_table = Table(title=f"Queues on {redact(url)}")
    counts_table.add_column("queue", style="bold")
    for state in STATES:
        counts_table.add_column(state, justify="right")
    counts_table.add_column("paused")
    counts_table.add_column("limits")
    for name, counts, settings in rows:
        counts_table.add_row(
            name,
            *(f"{counts[s]:,}" for s in STATES),
            "[yellow]paused[/yellow]" if settings.get("paused") else "",
            _limits_text(settings),
        )
    console.print(counts_table)


def _limits(settings: dict[str, int]) -> dict[str, Any]:
    """A queue's limits as JSON: the ones set, rates as {"max", "seconds"}."""
    out: dict[str, Any] = {}
    for key in ("concurrency", "group_concurrency"):
        if key in settings:
            out[key] = settings[key]
    for prefix in ("", "group_"):
        if f"{prefix}rate_max" in settings:
            out[f"{prefix}rate"] = {
                "max": settings[f"{prefix}rate_max"],
                "seconds": settings.get(f"{prefix}rate_ms", 1000) / 1000,
            }
    if "aging_ms" in settings:
        out["priority_aging_seconds"] = settings["aging_ms"] / 1000
    return out


def _limits_text(settings: dict[str, int]) -> str:
    """The limits of a queue on one short line, for the table of ``conveyor info``."""
    limits = _limits(settings)
    parts = []
    if "concurrency" in limits:
        parts.append(f"concurrency {limits['concurrency']}")
    if "rate" in limits:
        parts.append(f"rate {limits['rate']['max']}/{limits['rate']['seconds']:g}s")
    if "group_concurrency" in limits:
        parts.append(f"per group {limits['group_concurrency']}")
    if "group_rate" in limits:
        parts.append(f"group rate {limits['group_rate']['max']}/{limits['group_rate']['seconds']:g}s")
    if "priority_aging_seconds" in limits:
        parts.append(f"aging {limits['priority_aging_seconds']:g}s")
    return ", ".join(parts)


@click.command()
@url_option
@json_option
@live.watch_options
def workers(url: str, as_json: bool, watch: bool, interval: float, count: int | None) -> None:
    """Live workers, from their heartbeats, the busiest first: jobs running of its
    concurrency (busy), jobs processed and failed, time since its last heartbeat, uptime."""
    live.check_watch_options(watch)
    with connect(url) as client:
        if watch:
            live.watch(live.workers_frame(client), interval=interval, count=count, as_json=as_json)
            return
        if as_json:
            click.echo(json.dumps({"workers": client.workers()}, indent=2, default=str))
            return
        frame = live.workers_frame(client)()
    console.print(live.rich_table(frame) if frame.rows else frame.empty)


@click.command()
@queue_options
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    type=click.Choice([s for s in STATES if s != "active"]),
    help="States to purge (repeatable) [default: waiting and delayed].",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def purge(url: str, queue: str, states: tuple[str, ...], yes: bool) -> None:
    """Delete the jobs of a queue in some states. Active jobs are never purged."""
    chosen = list(states) or ["waiting", "delayed"]
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not asking without a terminal: pass --yes to confirm the purge")
        click.confirm(f"Delete all {' and '.join(chosen)} jobs of {queue}?", abort=True)
    with connect(url) as client:
        deleted = client.purge(queue, chosen)
    console.print(f"deleted {deleted:,} job(s) from {queue}")


@click.command()
@queue_options
@create_option
def pause(url: str, queue: str, create: bool) -> None:
    """Stop workers from claiming jobs of a queue (jobs keep arriving)."""
    with connect(url) as client:
        require_known_queue(client, queue, create, "pause")
        client.pause(queue)
    console.print(f"{queue} paused")


@click.command()
@queue_options
def resume(url: str, queue: str) -> None:
    """Let workers claim jobs of a paused queue again."""
    with connect(url) as client:
        if not queue_is_known(client, queue):
            raise click.ClickException(f"queue {queue!r} has never had a job (a typo?): nothing to resume")
        was_paused = bool(client.settings_of(queue).get("paused"))
        client.resume(queue)
    console.print(f"{queue} resumed" if was_paused else f"{queue} was not paused; it runs as before")


@click.command()
@queue_options
@click.option(
    "--concurrency",
    type=click.IntRange(0),
    default=None,
    help="At most this many active jobs across all workers (0 removes the limit).",
)
@click.option(
    "--rate",
    default=None,
    metavar="N/SECONDS",
    help="At most N jobs started per SECONDS across all workers, e.g. 100/60 ('off' removes it).",
)
@click.option(
    "--group-concurrency",
    type=click.IntRange(0),
    default=None,
    help="At most this many active jobs per group key (0 removes the limit).",
)
@click.option(
    "--group-rate",
    default=None,
    metavar="N/SECONDS",
    help="At most N jobs of one group key started per SECONDS ('off' removes it).",
)
@click.option(
    "--priority-aging",
    type=click.FloatRange(0),
    default=None,
    metavar="SECONDS",
    help="A waiting job gains one priority level per SECONDS waited (0 turns aging off).",
)
@create_option
@json_option
def limits(
    url: str,
    queue: str,
    concurrency: int | None,
    rate: str | None,
    group_concurrency: int | None,
    group_rate: str | None,
    priority_aging: float | None,
    create: bool,
    as_json: bool,
) -> None:
    """Show or set a queue's limits across all workers, and per group key."""
    changes = {
        "concurrency": _limit(concurrency),
        "rate": _rate(rate, "--rate"),
        "group_concurrency": _limit(group_concurrency),
        "group_rate": _rate(group_rate, "--group-rate"),
        "priority_aging": _limit(priority_aging),
    }
    with connect(url) as client:
        if any(value is not UNSET for value in changes.values()):
            require_known_queue(client, queue, create, "set the limits of")
            client.set_limits(queue, **changes)
        elif not queue_is_known(client, queue):
            err_console.print(f"[yellow]warning:[/yellow] queue {queue!r} has never had a job (a typo?)")
        current = client.settings_of(queue)
    if as_json:
        data = {"queue": queue, "paused": bool(current.get("paused")), "limits": _limits(current)}
        click.echo(json.dumps(data, indent=2))
        return
    console.print(_describe_limits(queue, current))


# An option left out leaves its setting as it is (UNSET); zero or 'off' removes it (None).
def _limit(value: float | None) -> Any:
    return UNSET if value is None else (value or None)


def _rate(text: str | None, hint: str) -> Any:
    if text is None:
        return UNSET
    if text == "off":
        return None
    try:
        count, _, seconds = text.partition("/")
        return (int(count), float(seconds or 1))
    except ValueError:
        raise click.BadParameter("use N/SECONDS, e.g. 100/60", param_hint=hint) from None


def _describe_limits(queue: str, current: dict[str, int]) -> str:
    def rate_text(prefix: str) -> str:
        if f"{prefix}rate_max" not in current:
            return "none"
        return f"{current[prefix + 'rate_max']} per {current[prefix + 'rate_ms'] / 1000:g} s"

    return (
        f"{queue}: paused={'yes' if current.get('paused') else 'no'}, "
        f"concurrency={current.get('concurrency', 'unlimited')}, rate={rate_text('')}, "
        f"per group: concurrency={current.get('group_concurrency', 'unlimited')}, "
        f"rate={rate_text('group_')}; priority aging="
        + (f"1 level per {current['aging_ms'] / 1000:g} s" if "aging_ms" in current else "off")
    )
