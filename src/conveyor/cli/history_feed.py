"""``conveyor history archive|enable|disable|backlog``: the hand-off of finished jobs from Redis
to the history store (:mod:`conveyor.history.archiver`). The commands join the ``history``
group beside the ones that read the store (:mod:`.history`)."""

from __future__ import annotations

import asyncio
import signal
import time

import click

from ..client import AsyncClient
from ..history.archiver import archive_until_closed
from ..ops import history as handoff
from ..ops.history import DEFAULT_MAX_JOBS
from ..ops.keys import QueueKeys, validate_queue_name
from .history import duration, history_url_option, print_json, require_url
from .options import json_option, log_level_option, url_option
from .output import console, table


@click.command()
@url_option
@history_url_option
@click.option(
    "--queue",
    "-q",
    "-Q",
    "queues",
    multiple=True,
    help="A queue to archive (repeatable) [default: every queue, and those created later].",
)
@click.option(
    "--batch", type=click.IntRange(1, 50_000), default=1000, show_default=True, help="Jobs per transaction."
)
@click.option(
    "--claim-idle",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds after which entries another archiver read and did not store are taken over.",
)
@log_level_option
def archive(
    url: str, history_url: str | None, queues: tuple[str, ...], batch: int, claim_idle: float, log_level: str
) -> None:
    """Move finished jobs from Redis into the history database, until SIGTERM or Ctrl-C.

    Turns history on for the queues it archives. Any number of archivers may run (workers
    started with --history-url archive too): they share the work, and one that dies leaves
    its entries to the others. Jobs keep running while the database is away; their records
    wait in Redis (up to the bound of `conveyor history enable`) and are stored when it
    returns.
    """
    from . import logs

    logs.configure(log_level, "text")
    target = require_url(history_url, must_exist=False)
    asyncio.run(_archive(url, target, list(queues), batch, claim_idle))


async def _archive(url: str, history_url: str, queues: list[str], batch: int, claim_idle: float) -> None:
    closing = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, closing.set)
    async with AsyncClient.from_url(url) as client:
        named = {queue: client.keys(validate_queue_name(queue)) for queue in queues}

        async def every_queue() -> dict[str, QueueKeys]:
            return {queue: client.keys(queue) for queue in await client.queues()}

        await archive_until_closed(
            client,
            named,
            history_url,
            closing,
            batch=batch,
            claim_idle=claim_idle,
            discover=None if queues else every_queue,
        )


@click.command()
@url_option
@click.option("--queue", "-q", "-Q", "queues", multiple=True, required=True, help="Queue (repeatable).")
@click.option(
    "--max-jobs",
    type=click.IntRange(1),
    default=DEFAULT_MAX_JOBS,
    show_default=True,
    help="Finished jobs Redis holds for the archivers at most; beyond, they are counted as dropped.",
)
def enable(url: str, queues: tuple[str, ...], max_jobs: int) -> None:
    """Turn history on for QUEUE: from now on, every job that ends is handed to the archivers.

    Also sets (or changes) the bound of what Redis holds while no archiver stores it. An
    archiver turns history on by itself; this command is for setting the bound ahead.
    """

    async def run() -> None:
        async with AsyncClient.from_url(url) as client:
            for queue in queues:
                bound = await client.run(
                    handoff.enable(client.keys(validate_queue_name(queue)), max_jobs, replace=True)
                )
                console.print(
                    f"history on for {queue}: Redis holds at most {bound:,} finished jobs for the archivers"
                )

    asyncio.run(run())


@click.command()
@url_option
@click.option("--queue", "-q", "-Q", "queues", multiple=True, required=True, help="Queue (repeatable).")
def disable(url: str, queues: tuple[str, ...]) -> None:
    """Turn history off for QUEUE: jobs that end from now on are not recorded. What Redis
    holds already is still archived. An archiver started later turns it on again."""

    async def run() -> None:
        async with AsyncClient.from_url(url) as client:
            for queue in queues:
                await client.run(handoff.disable(client.keys(validate_queue_name(queue))))
                console.print(f"history off for {queue}")

    asyncio.run(run())


@click.command()
@url_option
@click.option(
    "--queue", "-q", "-Q", "queues", multiple=True, help="Queue (repeatable) [default: every queue]."
)
@json_option
def backlog(url: str, queues: tuple[str, ...], as_json: bool) -> None:
    """What Redis holds for the archivers, per queue: entries waiting to be stored, those an
    archiver is storing now, how old the oldest is, and how many were dropped because the
    bound was reached."""

    async def run() -> list[tuple[str, handoff.Backlog]]:
        async with AsyncClient.from_url(url) as client:
            names = [validate_queue_name(q) for q in queues] or await client.queues()
            return [(queue, await client.run(handoff.backlog(client.keys(queue)))) for queue in names]

    found = asyncio.run(run())
    now_ms = time.time() * 1000
    if as_json:
        print_json(
            [
                {
                    "queue": queue,
                    "enabled": b.enabled,
                    "max_jobs": b.max_jobs,
                    "jobs": b.jobs,
                    "entries": b.entries,
                    "pending": b.pending,
                    "dropped": b.dropped,
                    "oldest_age_seconds": round((now_ms - b.oldest_ms) / 1000, 3) if b.oldest_ms else None,
                }
                for queue, b in found
            ]
        )
        return
    listing = table(
        "History hand-off",
        ("queue", "history", "jobs held", "entries being stored", "oldest", "jobs dropped"),
    )
    for queue, b in found:
        listing.add_row(
            queue,
            f"on (max {b.max_jobs:,} jobs)" if b.enabled else "off",
            f"{b.jobs:,}",
            f"{b.pending:,}",
            duration(now_ms - b.oldest_ms) if b.oldest_ms else "-",
            f"[red]{b.dropped:,}[/red]" if b.dropped else "0",
        )
    console.print(listing)
