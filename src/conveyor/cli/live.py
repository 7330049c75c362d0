"""Live views: ``info --watch``, ``workers --watch``, ``events`` and ``logs``: the fleet as it runs.

On a terminal a watch redraws one table in place (rich's ``Live``). Piped or redirected, it
prints one plain table per refresh instead -- aligned columns, no box drawing, a timestamp
first -- or with ``--json`` one JSON line per row, so that the same command feeds a log file,
``grep`` or a script. Ctrl-C is how a user leaves a live view, not a failure: every view
ends on it with exit code 0, as it does when a reader closes the pipe (``| head``).

The figures are the fleet's (``client.figures``: kept in Redis by the scripts that move the
jobs), so any machine that reaches Redis sees what every worker did, not what one process saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .. import ops
from ..client import Client
from ..errors import JobNotFound
from ..job import JobState
from ..ops.keys import workers_key
from ..redis.connect import redact
from .options import connect, job_options, job_ref, queue_options
from .output import console, err_console, error_text

F = TypeVar("F", bound=Callable[..., Any])

WINDOW_MINUTES = 5
"""The window of ``info --watch``'s rates and p95 times: long enough to smooth a burst,
short enough to show a change within a minute or two."""

FINAL_EVENTS = {"completed": 0, "failed": 1, "cancelled": 1}
"""The events that end a job, and the exit code of ``logs --follow`` for each."""

_EVENT_STYLES = {
    "completed": "green",
    "failed": "bold red",
    "retrying": "yellow",
    "stalled": "yellow",
    "cancelled": "magenta",
    "aborting": "magenta",
}


# ---------------------------------------------------------------------------- watch machinery


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    """A line break where a terminal may stack the header to keep the table narrow; a plain
    table joins the lines (with ``_`` between words) so that every header is one token."""
    numeric: bool = True


@dataclass(slots=True)
class Frame:
    """One refresh of a live table: what a terminal, a pipe and ``--json`` each show of it."""

    title: str
    columns: Sequence[Column]
    rows: list[list[Text]] = field(default_factory=list)
    """Cells without spaces, so that a plain table splits on whitespace."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """The same rows for ``--json``, with raw numbers (seconds, counts) instead of text."""
    empty: str = "nothing to show"


def watch_options(f: F) -> F:
    """``--watch``, ``--interval``, ``--count``: a command that can show its table live."""
    f = click.option(
        "--count",
        type=click.IntRange(1),
        default=None,
        metavar="N",
        help="With --watch: stop after N refreshes [default: until Ctrl-C].",
    )(f)
    f = click.option(
        "--interval",
        type=click.FloatRange(0.1),
        default=2.0,
        show_default=True,
        metavar="SECONDS",
        help="With --watch: seconds between refreshes.",
    )(f)
    return click.option(
        "--watch",
        "-w",
        is_flag=True,
        help="Refresh the table in place until Ctrl-C. Piped or redirected: print one plain "
        "table per refresh (with --json, one JSON line per row), for a log or a script.",
    )(f)


def check_watch_options(watching: bool) -> None:
    """Refuse --interval or --count without --watch rather than ignore them."""
    ctx = click.get_current_context()
    for name in ("interval", "count"):
        if not watching and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            raise click.UsageError(f"--{name} only applies with --watch")


def watch(read: Callable[[], Frame], *, interval: float, count: int | None, as_json: bool) -> None:
    """Show ``read()`` every ``interval`` seconds, ``count`` times (None: until Ctrl-C)."""
    frames = _frames(read, interval, count)
    with _stoppable():
        if as_json:
            for frame in frames:
                stamp = _utc_iso(time.time())
                for record in frame.records:
                    click.echo(json.dumps({"time": stamp, **record}, default=str))
        elif console.is_terminal:
            with Live(console=console, auto_refresh=False) as live:
                for frame in frames:
                    caption = f"every {interval:g}s, updated {time.strftime('%H:%M:%S')}; Ctrl-C to quit"
                    live.update(rich_table(frame, caption), refresh=True)
        else:
            for frame in frames:
                click.echo(plain_table(frame))


def _frames(read: Callable[[], Frame], interval: float, count: int | None) -> Iterator[Frame]:
    shown = 0
    while True:
        started = time.monotonic()
        yield read()
        shown += 1
        if count is not None and shown >= count:
            return
        # Measured from the start of the read, so that a slow Redis does not stretch the period.
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """Ends a view quietly on Ctrl-C, or when the reader of the pipe went away."""
    try:
        yield
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # Python flushes stdout once more at exit, which would fail again and print a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def rich_table(frame: Frame, caption: str | None = None) -> Table:
    # Text, not a string: rich would read markup in a title that holds a URL or a queue name.
    shown = Table(title=Text(frame.title), caption=caption, caption_justify="right")
    for column in frame.columns:
        shown.add_column(column.name, justify="right" if column.numeric else "left")
    for row in frame.rows:
        shown.add_row(*row)
    if not frame.rows:
        shown.add_row(Text(frame.empty, style="dim"), *([""] * (len(frame.columns) - 1)))
    return shown


def plain_table(frame: Frame) -> str:
    """The frame as aligned text under a timestamped title: a log line per row."""
    header = [column.name.replace("\n/", "/").replace("\n", "_") for column in frame.columns]
    cells = [[cell.plain for cell in row] for row in frame.rows]
    widths = [max(len(line[i]) for line in (header, *cells)) for i in range(len(header))]
    lines = [f"{time.strftime('%Y-%m-%d %H:%M:%S')} {frame.title}"]
    if not cells:
        return "\n".join([*lines, frame.empty, ""])
    for line in (header, *cells):
        padded = (
            text.rjust(width) if column.numeric else text.ljust(width)
            for text, width, column in zip(line, widths, frame.columns, strict=True)
        )
        lines.append("  ".join(padded).rstrip())
    return "\n".join([*lines, ""])


# ---------------------------------------------------------------------------- info --watch

QUEUE_COLUMNS = (
    Column("queue", numeric=False),
    Column("waiting"),
    Column("delayed"),
    Column("active"),
    Column("failed"),
    Column("completed\n/min"),
    Column("failed\n/min"),
    Column("retried\n/min"),
    Column("wait\np95"),
    Column("run\np95"),
    Column("oldest\nwaiting"),
    Column("paused", numeric=False),
    Column("workers"),
)


def queues_frame(client: Client, url: str, wanted: Sequence[str]) -> Callable[[], Frame]:
    """A reader of the figures of ``wanted`` queues (all when empty) for :func:`watch`."""

    def read() -> Frame:
        names = list(wanted) or client.queues()
        serving = _serving(client.workers())
        frame = Frame(
            f"Queues on {redact(url)}: rates and p95 over the last {WINDOW_MINUTES} minutes",
            QUEUE_COLUMNS,
            empty="no queues yet: enqueue a job first",
        )
        for name in names:
            figures = client.figures(name, minutes=WINDOW_MINUTES)
            workers, slots = serving.get(name, (0, 0))
            record = queue_record(figures, workers, slots)
            frame.records.append(record)
            frame.rows.append(_queue_row(record))
        return frame

    return read


def queue_record(figures: ops.QueueFigures, workers: int, slots: int) -> dict[str, Any]:
    """One queue's line of ``info --watch --json``; times in seconds (None: nothing measured)."""
    period = figures.window(WINDOW_MINUTES)
    counts = figures.counts
    return {
        "queue": figures.queue,
        "waiting": counts["waiting"],
        "delayed": counts["delayed"],
        "delayed_due": figures.delayed_due,
        "active": counts["active"],
        "failed": counts["failed"],
        "window_minutes": WINDOW_MINUTES,
        "completed_in_window": period.completed,
        "failed_in_window": period.failed,
        "retried_in_window": period.retried,
        "completed_per_minute": figures.rate_per_minute("completed", WINDOW_MINUTES),
        "failed_per_minute": figures.rate_per_minute("failed", WINDOW_MINUTES),
        "retried_per_minute": figures.rate_per_minute("retried", WINDOW_MINUTES),
        "wait_p95_seconds": period.wait.quantile(0.95),
        "run_p95_seconds": period.run.quantile(0.95),
        "oldest_waiting_seconds": figures.oldest_waiting_s if counts["waiting"] else None,
        "paused": figures.paused,
        "workers": workers,
        "worker_concurrency": slots,
    }


def _queue_row(record: dict[str, Any]) -> list[Text]:
    failing = record["failed_per_minute"] > 0
    return [
        Text(record["queue"], style="bold"),
        Text(f"{record['waiting']:,}"),
        Text(f"{record['delayed']:,}"),
        Text(f"{record['active']:,}"),
        Text(f"{record['failed']:,}", style="red" if record["failed"] else ""),
        Text(rate(record["completed_per_minute"])),
        Text(rate(record["failed_per_minute"]), style="red" if failing else ""),
        Text(rate(record["retried_per_minute"])),
        Text(duration(record["wait_p95_seconds"])),
        Text(duration(record["run_p95_seconds"])),
        Text(duration(record["oldest_waiting_seconds"])),
        Text("yes", style="yellow") if record["paused"] else Text("no", style="dim"),
        # Jobs waiting with nobody to run them is the thing to notice.
        Text(str(record["workers"]), style="red" if not record["workers"] and record["waiting"] else ""),
    ]


def _serving(workers: Iterable[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per queue: how many live workers serve it, and their summed concurrency."""
    serving: dict[str, tuple[int, int]] = {}
    for worker in workers:
        for name in str(worker.get("queues", "")).split(","):
            if name:
                count, slots = serving.get(name, (0, 0))
                serving[name] = (count + 1, slots + int(worker.get("concurrency") or 0))
    return serving


def rate(per_minute: float) -> str:
    if per_minute == 0:
        return "0"
    return f"{per_minute:,.0f}" if per_minute >= 100 else f"{per_minute:.1f}"


def duration(seconds: float | None) -> str:
    """A time short enough to read at a glance: 4.2ms, 350ms, 2.5s, 3m05s, 2h10m; ``-``: none."""
    if seconds is None:
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


# ---------------------------------------------------------------------------- workers --watch

WORKER_COLUMNS = (
    Column("worker", numeric=False),
    Column("queues", numeric=False),
    Column("busy"),
    Column("processed"),
    Column("failed"),
    Column("heartbeat"),
    Column("up"),
)


def workers_frame(client: Client) -> Callable[[], Frame]:
    """A reader of the live workers for :func:`watch`, the busiest first."""

    def read() -> Frame:
        found = client.workers()
        beats = client.run(_heartbeats(client.settings.prefix))
        now = time.time()
        frame = Frame("Workers", WORKER_COLUMNS, empty="no live workers")
        found.sort(key=lambda w: (-int(w.get("busy") or 0), w["id"]))
        for worker in found:
            beat = beats.get(worker["id"])
            started = int(worker.get("started") or now * 1000) / 1000
            frame.records.append(
                {
                    **worker,
                    "heartbeat_age_seconds": None if beat is None else max(0.0, now - beat),
                    "up_seconds": max(0.0, now - started),
                }
            )
            frame.rows.append(_worker_row(frame.records[-1]))
        return frame

    return read


def _worker_row(record: dict[str, Any]) -> list[Text]:
    busy, slots = int(record.get("busy") or 0), int(record.get("concurrency") or 0)
    return [
        Text(record["id"], style="bold"),
        Text(record.get("queues") or "-"),
        Text(f"{busy}/{slots}", style="green" if busy else "dim"),
        Text(f"{int(record.get('processed') or 0):,}"),
        Text(f"{int(record.get('failed') or 0):,}"),
        Text(duration(record["heartbeat_age_seconds"])),
        Text(duration(record["up_seconds"])),
    ]


def _heartbeats(prefix: str) -> Generator[ops.Step, Any, dict[str, float]]:
    """When each worker last beat (s since the epoch): the scores of the registry's index."""
    reply = yield ops.Command(("ZRANGE", workers_key(prefix), 0, -1, "WITHSCORES"))
    # A RESP3 connection answers [member, score] pairs, RESP2 a flat list.
    pairs = (
        reply if reply and isinstance(reply[0], list | tuple) else zip(reply[::2], reply[1::2], strict=True)
    )
    return {str(member): float(score) / 1000 for member, score in pairs}


# ---------------------------------------------------------------------------- events


@click.command()
@queue_options
@click.option(
    "--from-start",
    is_flag=True,
    help="Begin with the oldest event the queue still keeps (about the last 10,000) "
    "instead of only new ones.",
)
@click.option("--count", type=click.IntRange(1), default=None, metavar="N", help="Exit after N events.")
@click.option("--json", "as_json", is_flag=True, help="Print each event as a JSON object on one line.")
def events(url: str, queue: str, from_start: bool, count: int | None, as_json: bool) -> None:
    """Follow the lifecycle events of a queue (--queue) as they happen, one line each: time,
    event, job ids, extra fields (worker, delay, reason, ...). Ctrl-C stops (exit code 0).

    A line is one thing that happened at once: a batch enqueue, claim or acknowledgement names
    all its jobs, comma-separated. --json prints each as a JSON object with a "job_ids" list.

    \b
    Events: enqueued, active, progress, completed, retrying, failed, stalled, promoted,
    waiting (a parent whose children finished), aborting, cancelled.

    \b
    Examples:
      conveyor events -q emails                   new events of the queue emails
      conveyor events -q emails | grep JOB_ID     what happens to one job
      conveyor events -q emails --from-start --json > events.jsonl
    """
    shown = 0
    with connect(url) as client, _stoppable():
        # "$" pinned to a position now: a read from "$" that found nothing would answer "$"
        # again, and what happened between two reads would be missed.
        position = "0-0" if from_start else client.last_event_id(queue)
        err_console.print(
            f"following the events of {queue} from {'the start' if from_start else 'now'} (Ctrl-C to stop)",
            highlight=False,
            soft_wrap=True,
        )
        while count is None or shown < count:
            batch, position = client.read_events(queue, position, count=500, block=5.0)
            for entry in _entries(batch)[: None if count is None else count - shown]:
                _print_event(queue, entry, as_json)
                shown += 1


def _entries(batch: Sequence[ops.Event]) -> list[list[ops.Event]]:
    """The events regrouped by stream entry: ``read_events`` gives one per job of a batch."""
    grouped: list[list[ops.Event]] = []
    for event in batch:
        if grouped and grouped[-1][0].stream_id == event.stream_id:
            grouped[-1].append(event)
        else:
            grouped.append([event])
    return grouped


def _print_event(queue: str, entry: list[ops.Event], as_json: bool) -> None:
    first = entry[0]
    moment = int(first.stream_id.partition("-")[0]) / 1000
    ids = [event.job_id for event in entry]
    if as_json:
        data = {"time": _utc_iso(moment), "id": first.stream_id, "queue": queue, "event": first.kind}
        click.echo(json.dumps({**data, "job_ids": ids, **first.fields}))
        return
    stamp = datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    line = Text(f"{stamp}  ")
    line.append(f"{first.kind:<9}", style=_EVENT_STYLES.get(first.kind, "cyan"))
    line.append(f"  {','.join(ids)}")
    if first.fields:
        line.append("  " + " ".join(f"{key}={value}" for key, value in first.fields.items()), style="dim")
    _echo(line)


def _echo(line: Text) -> None:
    if console.is_terminal:
        console.print(line, soft_wrap=True, highlight=False)
    else:  # click.echo flushes each line: a pipe sees every event when it happens
        click.echo(line.plain)


def _utc_iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---------------------------------------------------------------------------- logs

FOLLOW_SECONDS = 0.5
"""How often ``logs --follow`` reads the log: a job's log lines raise no event to wait on."""


@click.command()
@job_options
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing new lines until the job ends (across its retries); "
    "then exit 0 if it completed, 1 if it failed or was cancelled.",
)
@click.option("--json", "as_json", is_flag=True, help='Print each line as a JSON object {"line": ...}.')
def logs(job_id: str, url: str, queue: str, follow: bool, as_json: bool) -> None:
    """Print the lines a job wrote with current_job().log(...), oldest first. The last 1,000
    lines of a job are kept, for a while after the job ended.

    \b
    Exit codes:
      0  the lines were printed; with --follow: the job completed (or Ctrl-C)
      1  no such job; with --follow: the job failed or was cancelled
    """
    queue, job_id = job_ref(queue, job_id)
    with connect(url) as client, _stoppable():
        if follow:
            sys.exit(_follow(client, queue, job_id, as_json))
        lines = client.job_logs(queue, job_id)
        if not lines:
            client.get_job(queue, job_id)  # raises when there is no such job: a typo, or expired
            err_console.print(
                f"job {queue}/{job_id} has logged nothing (yet)", highlight=False, soft_wrap=True
            )
        _print_lines(lines, as_json)


def _follow(client: Client, queue: str, job_id: str, as_json: bool) -> int:
    """Print the job's log as it grows until the job ends; returns the exit code.

    The end is learnt from the event stream rather than from the job's state: a job whose
    retention deletes it as soon as it finishes still says how it ended there.
    """
    position = client.last_event_id(queue)  # before the state is read: no end can slip between
    state = client.get_job(queue, job_id).state
    seen: list[str] = []
    ended: str | None = state.value if state.value in FINAL_EVENTS else None
    next_read = 0.0
    while True:
        if ended is None:
            batch, position = client.read_events(queue, position, count=1000, block=FOLLOW_SECONDS)
            ended = next((e.kind for e in batch if e.job_id == job_id and e.kind in FINAL_EVENTS), None)
        # On a busy queue the stream answers at once: the log is still read only twice a second.
        if ended is not None or time.monotonic() >= next_read:
            lines = client.job_logs(queue, job_id)
            _print_lines(new_lines(seen, lines), as_json)
            seen = lines
            next_read = time.monotonic() + FOLLOW_SECONDS
        if ended is not None:
            _say_how_it_ended(client, queue, job_id, ended)
            return FINAL_EVENTS[ended]


def new_lines(before: Sequence[str], now: Sequence[str]) -> list[str]:
    """The lines of ``now`` that ``before`` (an earlier read of the same log) lacked.

    A log only grows at its end, but past its cap the oldest lines are dropped, so the new
    lines start where the longest tail of ``before`` that opens ``now`` ends. A log of one
    line repeated over and over past the cap is ambiguous: nothing in Redis tells how many
    of them are new, and the shortest answer is given.
    """
    if list(now[: len(before)]) == list(before):
        return list(now[len(before) :])
    for dropped in range(1, len(before)):
        if list(now[: len(before) - dropped]) == list(before[dropped:]):
            return list(now[len(before) - dropped :])
    return list(now)


def _print_lines(lines: Iterable[str], as_json: bool) -> None:
    for line in lines:
        click.echo(json.dumps({"line": line}) if as_json else line)


def _say_how_it_ended(client: Client, queue: str, job_id: str, kind: str) -> None:
    note = f"job {queue}/{job_id} {kind}"
    try:
        found = client.get_job(queue, job_id)
    except JobNotFound:
        found = None  # retention already removed it; the event told how it ended
    if found is not None and found.error and found.state is not JobState.COMPLETED:
        note += f": {error_text(found.error)}"
    err_console.print(note, style="green" if kind == "completed" else "red", highlight=False, soft_wrap=True)
