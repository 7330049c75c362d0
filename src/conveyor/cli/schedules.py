"""``conveyor schedules``: the repeatable jobs of a queue, and removing one."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from .options import connect, json_option, queue_options
from .output import console, table, timestamp


@click.command()
@queue_options
@click.option("--remove", "remove_name", default=None, metavar="NAME", help="Remove the schedule NAME.")
@json_option
def schedules(url: str, queue: str, remove_name: str | None, as_json: bool) -> None:
    """Repeatable jobs (cron and intervals) of a queue, with their next run times."""
    with connect(url) as client:
        if remove_name is not None:
            if not client.remove_schedule(queue, remove_name):
                raise click.ClickException(f"no schedule {remove_name!r} in {queue}")
            if not as_json:
                console.print(f"removed schedule {remove_name}")
        states = client.schedules(queue)
    if as_json:
        found = [
            {
                **asdict(state.schedule),
                "args": list(state.schedule.args),
                "next_run": state.next_run.isoformat() if state.next_run else None,
            }
            for state in states
        ]
        click.echo(json.dumps({"schedules": found}, indent=2, default=str))
        return
    if not states:
        console.print(f"no schedules in {queue}")
        return
    listing = table(f"Schedules of {queue}", ("name", "task", "when", "missed ticks", "next run (UTC)"))
    for state in states:
        sched = state.schedule
        listing.add_row(
            sched.name, sched.task, sched.description, sched.missed, timestamp(state.next_run, "-")
        )
    console.print(listing)
