"""Commands on jobs: enqueue one, show one, list a page of them, retry, remove or cancel them."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from .. import ops
from ..job import Job, JobState
from .options import STATES, connect, job_options, job_ref, json_option, queue_options
from .output import console, err_console, error_text, table, timestamp


@click.command()
@click.argument("task")
@click.argument("args", nargs=-1)
@queue_options
@click.option(
    "--kwargs",
    "kwargs_json",
    default=None,
    help='Keyword arguments as a JSON object, e.g. \'{"to": "a@b"}\'.',
)
@click.option("--delay", type=click.FloatRange(0), default=None, help="Seconds before the job may run.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--job-id", default=None, help="Your own id; enqueueing an existing id creates nothing.")
@click.option("--retries", type=click.IntRange(0), default=None, help="Override the task's retries.")
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(0),
    default=None,
    help="Wait up to this many seconds for the result and print it.",
)
@click.option(
    "--json-args",
    "json_args",
    is_flag=True,
    help="Every ARG must be JSON: refuse one that is not, rather than send it as a string.",
)
@json_option
def enqueue(
    task: str,
    args: tuple[str, ...],
    url: str,
    queue: str,
    kwargs_json: str | None,
    delay: float | None,
    priority: int,
    job_id: str | None,
    retries: int | None,
    wait_seconds: float | None,
    json_args: bool,
    as_json: bool,
) -> None:
    """Enqueue one job of TASK with ARGS, each parsed as JSON (1, 2.5, true, null, '"text"',
    '[1, 2]'); an ARG that is not JSON is sent as a string, and said so (--json-args refuses it).

    \b
    Example: conveyor enqueue add 1 2 --queue math --wait 10
    """
    from ..task import EnqueueOptions, TaskCall, _check_priority

    parsed = [_json_or_text(a, index, json_args) for index, a in enumerate(args, 1)]
    kwargs = _kwargs_object(kwargs_json)
    call: TaskCall[Any] = TaskCall(
        task,
        tuple(parsed),
        kwargs,
        queue,
        _check_priority(priority),
        EnqueueOptions(job_id=job_id, delay=delay, retries=retries),
    )
    with connect(url) as client:
        [handle] = client.enqueue_many([call])
        if not as_json:  # the id first: the wait may be long
            word = "created" if handle.created else "already existed"
            console.print(f"{handle.id} [bold]{word}[/bold] in queue {queue}")
        result = handle.result(timeout=wait_seconds) if wait_seconds is not None else None
    if as_json:
        data: dict[str, Any] = {
            "id": handle.id,
            "queue": queue,
            "outcome": handle.outcome.value,
            "created": handle.created,
        }
        if wait_seconds is not None:
            data["result"] = result
        click.echo(json.dumps(data, indent=2, default=str))
    elif wait_seconds is not None:
        console.print_json(json.dumps(result, default=str))


def _json_or_text(value: str, index: int, strict: bool) -> Any:
    """An ARG as JSON; one that is not JSON is a string, said so on stderr (``--json-args``
    refuses it): ``conveyor enqueue add 1 two`` sending ``"two"`` unnoticed hid typos."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        if strict:
            raise click.BadParameter(
                f"argument {index} ({value!r}) is not JSON; quote a string as '\"{value}\"'",
                param_hint="ARGS",
            ) from None
        err_console.print(
            f"note: argument {index} ({value!r}) is not JSON: sent as the string {json.dumps(value)} "
            "(--json-args refuses such arguments)",
            highlight=False,
        )
        return value


def _kwargs_object(kwargs_json: str | None) -> dict[str, Any]:
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--kwargs") from None
    if not isinstance(kwargs, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--kwargs")
    return kwargs


@click.command()
@job_options
@json_option
def job(job_id: str, url: str, queue: str, as_json: bool) -> None:
    """Show one job: state, arguments, result or error, attempts, times."""
    queue, job_id = job_ref(queue, job_id)
    with connect(url) as client:
        found = client.get_job(queue, job_id)
    data = found.to_dict()
    if as_json:
        click.echo(json.dumps(data, default=str, indent=2))
        return
    fields = Table(show_header=False, box=None)
    fields.add_column(style="bold")
    fields.add_column()
    for key, value in data.items():
        if key == "error" and value:
            fields.add_row("error", error_text(value))
            if value.get("traceback"):
                fields.add_row("traceback", value["traceback"].rstrip())
            continue
        fields.add_row(key, json.dumps(value, default=str) if isinstance(value, dict | list) else str(value))
    console.print(fields)


@click.command()
@queue_options
@click.option("--state", "-s", type=click.Choice(STATES), default="waiting", show_default=True)
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@json_option
def jobs(url: str, queue: str, state: str, limit: int, offset: int, as_json: bool) -> None:
    """List jobs of a queue in one state, a page at a time."""
    with connect(url) as client:
        page, total = client.list_jobs(queue, state, offset, limit)
    if as_json:
        data = {"jobs": [item.to_dict() for item in page], "total": total, "offset": offset}
        click.echo(json.dumps(data, indent=2, default=str))
        return
    listing = table(
        f"{state} jobs in {queue}: {offset + 1 if page else 0}-{offset + len(page)} of {total:,}",
        ("id", "task", "attempts", "created", "info"),
    )
    for item in page:
        listing.add_row(
            item.id, item.task, str(item.attempts), timestamp(item.created_at, ""), _summary(item)
        )
    console.print(listing)


def _summary(item: Job) -> str:
    if item.error:
        return error_text(item.error)[:80]
    if item.state is JobState.COMPLETED:
        return json.dumps(item.result, default=str)[:80]
    if item.run_at:
        return f"due {item.run_at:%H:%M:%S}"
    return ""


@click.command()
@click.argument("job_ids", nargs=-1, metavar="[[QUEUE/]JOB_ID]...")
@queue_options
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed job of the queue.")
def retry(job_ids: tuple[str, ...], url: str, queue: str, retry_all: bool) -> None:
    """Move failed (dead-lettered) jobs back to waiting: the given JOB_IDS, or --all.

    A given job that is not failed is named with its state, and the exit code is 1."""
    if not job_ids and not retry_all:
        raise click.UsageError("give job ids, or --all to retry every failed job")
    if retry_all:
        with connect(url) as client:
            moved = client.retry(queue)
        console.print(f"{moved} job(s) moved back to waiting in {queue}")
        return
    by_queue: dict[str, list[str]] = {}
    for ref in job_ids:
        named, job_id = job_ref(queue, ref)
        by_queue.setdefault(named, []).append(job_id)
    refused: list[str] = []
    with connect(url) as client:
        for named, ids in by_queue.items():
            # Looked at first: the retry itself only counts what it moved, not why the rest stayed.
            found = {job_id: client.run(ops.get_job(client.keys(named), job_id)) for job_id in ids}
            failed = [job_id for job_id, item in found.items() if item and item.state is JobState.FAILED]
            moved = client.retry(named, failed) if failed else 0
            console.print(f"{moved} job(s) moved back to waiting in {named}")
            for job_id, item in found.items():
                if item is None:
                    refused.append(f"{named}/{job_id}: no such job (check the queue; finished jobs expire)")
                elif item.state is not JobState.FAILED:
                    refused.append(f"{named}/{job_id}: not retried, it is {item.state.value}, not failed")
            if moved < len(failed):
                refused.append(f"{len(failed) - moved} of the failed jobs in {named} changed state meanwhile")
    for line in refused:
        err_console.print(line, highlight=False)
    if refused:
        sys.exit(1)


@click.command()
@job_options
def remove(job_id: str, url: str, queue: str) -> None:
    """Delete one job that is not running."""
    queue, job_id = job_ref(queue, job_id)
    with connect(url) as client:
        state = client.remove(queue, job_id)
    console.print(f"removed {job_id} (was {state.value})")


@click.command()
@job_options
@click.option("--reason", default="cancelled from the command line", show_default=True)
def cancel(job_id: str, url: str, queue: str, reason: str) -> None:
    """Cancel a waiting or delayed job, or abort a running one."""
    queue, job_id = job_ref(queue, job_id)
    with connect(url) as client:
        outcome = client.cancel(queue, job_id, reason=reason)
    if outcome == "aborting":
        console.print(f"{job_id} is running: its worker stops it at its next heartbeat")
    else:
        console.print(f"{job_id} cancelled")
