"""Commands on queues and the workers serving them: counts, live workers, purge, pause, limits."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.table import Table

from ..client import UNSET
from ..redis.connect import redact
from .options import STATES, connect, queue_options, url_option
from .output import console, table


@click.command()
@url_option
@click.option("--queue", "-q", "queue_names", multiple=True, help="Only these queues (repeatable).")
def info(url: str, queue_names: tuple[str, ...]) -> None:
    """A table of queues and how many jobs each holds in every state."""
    with connect(url) as client:
        names = list(queue_names) or client.queues()
        counts_table = Table(title=f"Queues on {redact(url)}")
        counts_table.add_column("queue", style="bold")
        for state in STATES:
            counts_table.add_column(state, justify="right")
        for name in names:
            counts = client.counts(name)
            counts_table.add_row(name, *(f"{counts[s]:,}" for s in STATES))
        if not names:
            console.print("no queues yet: enqueue a job first")
            return
        console.print(counts_table)


@click.command()
@url_option
def workers(url: str) -> None:
    """Live workers, from their heartbeats."""
    with connect(url) as client:
        found = client.workers()
    if not found:
        console.print("no live workers")
        return
    listing = table("Workers", ("id", "queues", "concurrency", "busy", "processed", "failed", "up"))
    now = time.time()
    for w in found:
        up = now - int(w.get("started", now * 1000)) / 1000
        listing.add_row(
            w["id"],
            w.get("queues", ""),
            w.get("concurrency", ""),
            w.get("busy", ""),
            w.get("processed", ""),
            w.get("failed", ""),
            f"{up:.0f}s",
        )
    console.print(listing)


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
def pause(url: str, queue: str) -> None:
    """Stop workers from claiming jobs of a queue (jobs keep arriving)."""
    with connect(url) as client:
        client.pause(queue)
    console.print(f"{queue} paused")


@click.command()
@queue_options
def resume(url: str, queue: str) -> None:
    """Let workers claim jobs of a paused queue again."""
    with connect(url) as client:
        client.resume(queue)
    console.print(f"{queue} resumed")


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
def limits(
    url: str,
    queue: str,
    concurrency: int | None,
    rate: str | None,
    group_concurrency: int | None,
    group_rate: str | None,
    priority_aging: float | None,
) -> None:
    """Show or set a queue's limits across all workers, and per group key."""
    with connect(url) as client:
        client.set_limits(
            queue,
            concurrency=_limit(concurrency),
            rate=_rate(rate, "--rate"),
            group_concurrency=_limit(group_concurrency),
            group_rate=_rate(group_rate, "--group-rate"),
            priority_aging=_limit(priority_aging),
        )
        current = client.settings_of(queue)
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
