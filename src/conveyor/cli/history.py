"""``conveyor history``: search, show and count finished jobs in the history store, migrate its
schema, prune what is past its retention.

The store is named by ``--history-url`` or ``CONVEYOR_HISTORY_URL`` and never defaulted here:
a command that silently opened ``./conveyor-history.db`` would answer "no jobs" from an empty
file made on the spot, when the user meant another database. For the same reason the read
commands refuse a SQLite file that does not exist (``migrate`` creates it).

The JSON forms of a record and of a stats row (:func:`record_json`, :func:`stats_row_json`)
are also what the HTTP API answers, so ``--json`` and ``GET /v1/history/...`` agree field for
field.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from ..history import (
    ENV_URL,
    FinalState,
    HistoryConfig,
    HistoryStore,
    JobRecord,
    SearchQuery,
    StatsQuery,
    open_store,
    parse_url,
)
from ..history.documents import check_cursor, database_errors, iso, record_json, stats_row_json, text_of
from ..history.query import BUCKET_SECONDS, MAX_LIMIT
from .output import console, err_console, table, timestamp

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

FINAL_STATES = [s.value for s in FinalState]
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
STATS_DEFAULT_SINCE = "24h"
ERROR_WIDTH = 60
"""Characters of an error shown in a table cell: the rest is in ``show``."""


# ---------------------------------------------------------------- parsing what the user typed
def parse_time(text: str, option: str, now: datetime) -> datetime:
    """An ISO 8601 time (naive means UTC, as every Conveyor clock), or an age before ``now``:
    ``90s``, ``15m``, ``2h``, ``7d``, ``1w``."""
    age = _AGE.match(text)
    if age:
        try:
            return now - timedelta(seconds=float(age.group(1)) * AGE_UNITS[age.group(2)])
        except OverflowError:
            raise ValueError(f"{option}: {text!r} reaches before the year 1") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{option}: {text!r} is neither an ISO 8601 time (2026-03-10T12:00Z) nor an age "
            "(90s, 15m, 2h, 7d, 1w)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def is_age(text: str | None) -> bool:
    return text is not None and _AGE.match(text) is not None


def parse_states(given: Sequence[str]) -> list[FinalState] | None:
    """``--state`` values (repeatable, or comma-separated) as final states; a name that is not
    one is refused with the list, and a Redis state says the history holds finished jobs only."""
    names = [name.strip().lower() for value in given for name in value.split(",") if name.strip()]
    if not names:
        return None
    for name in names:
        if name not in FINAL_STATES:
            why = (
                " (the history holds finished jobs only)"
                if name in ("waiting", "delayed", "active", "waiting_children")
                else ""
            )
            raise ValueError(f"--state: {name!r} is not a final state{why}; use {', '.join(FINAL_STATES)}")
    return [FinalState(name) for name in names]


# ---------------------------------------------------------------- running the store
def history_url_option(f: F) -> F:
    return click.option(
        "--history-url",
        "history_url",
        envvar=ENV_URL,
        show_envvar=True,
        default=None,
        metavar="URL",
        help="The history database: sqlite:///path/history.db or postgresql://user@host/db.",
    )(f)


class HistoryError(click.ClickException):
    """A one-line failure of the history database: it cannot be found, reached or read."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        err_console.print(f"[red]error:[/red] {escape(self.message)}", highlight=False)


def require_url(url: str | None, *, must_exist: bool) -> str:
    if not url:
        raise HistoryError(
            "no history database named: pass --history-url sqlite:///path/to/history.db "
            f"(or postgresql://user@host/db), or set {ENV_URL}"
        )
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise HistoryError(f"--history-url: {exc}") from None
    missing = parsed.backend == "sqlite" and parsed.target != ":memory:" and not Path(parsed.target).exists()
    if must_exist and missing:
        raise HistoryError(
            f"no history database at {Path(parsed.target).resolve()} (from --history-url or "
            f"{ENV_URL}); check the path, or create it with `conveyor history migrate`"
        )
    return url


def run_store(
    url: str | None,
    action: Callable[[HistoryStore], Awaitable[T]],
    *,
    must_exist: bool = True,
    config: HistoryConfig | None = None,
) -> T:
    """Open the store, run ``action`` on it in a fresh event loop, close it. A database that
    cannot be opened or read is one line on stderr and exit code 2."""
    url = require_url(url, must_exist=must_exist)

    async def run() -> T:
        store = await open_store(url, config)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except database_errors() as exc:
        # psycopg's messages name host and port, never the password; the URL is not repeated.
        raise HistoryError(f"the history database failed: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------- formatting
def duration(ms: float | None) -> str:
    """Milliseconds, shortly: ``850 ms``, ``1.2 s``, ``2m 05s``, ``1h 02m``, ``3d 04h``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())  # a message on one line: tracebacks and newlines would break rows
    return text if len(text) <= width else text[: width - 1] + "…"


def _error_cell(error_type: str | None, message: str | bytes | None) -> str:
    if not error_type and not message:
        return ""
    return escape(_cut(f"{error_type or 'error'}: {text_of(message) or ''}".rstrip(": "), ERROR_WIDTH))


_STATE_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow", "expired": "magenta"}


def _state_cell(state: FinalState) -> str:
    style = _STATE_STYLE.get(state.value)
    return f"[{style}]{state.value}[/{style}]" if style else state.value


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------- the commands
@click.group()
def history() -> None:
    """The history of finished jobs: search it, show one job, count and time them.

    Jobs reach it through archivers: `conveyor history archive`, or any worker started with
    --history-url. Until one runs for a queue, nothing of it is recorded.

    \b
    The database is named by --history-url or CONVEYOR_HISTORY_URL:
      sqlite:///relative/history.db, sqlite:////absolute/history.db, postgresql://user@host/db
    Times are ISO 8601 (UTC unless they say otherwise) or an age: 90s, 15m, 2h, 7d, 1w.

    \b
    Examples:
      conveyor history search --state failed --since 2h
      conveyor history show emails 1m8Xr2
      conveyor history stats --queue emails --since 7d --bucket day
      conveyor history archive --queue emails
      conveyor history backlog
    """


@history.command()
@history_url_option
@click.option("--queue", "-q", default=None, help="Only this queue.")
@click.option("--task", "-t", default=None, help="Only this task.")
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    metavar="STATE",
    help=f"Only these final states (repeatable or comma-separated): {', '.join(FINAL_STATES)}.",
)
@click.option("--since", default=None, metavar="TIME", help="Finished at or after: ISO 8601 or an age (2h).")
@click.option("--until", default=None, metavar="TIME", help="Finished before: ISO 8601 or an age (15m).")
@click.option("--group", default=None, help="Only jobs of this group key.")
@click.option("--worker", default=None, help="Only jobs any of whose attempts ran on this worker.")
@click.option("--text", default=None, help="In the error message or the arguments (substring).")
@click.option("--id", "job_id", default=None, help="Only this job id (each time it finished).")
@click.option("--limit", "-n", type=click.IntRange(1, MAX_LIMIT), default=20, show_default=True)
@click.option("--cursor", default=None, help="Where the previous page ended (its 'more:' line).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the page as JSON: items, next_cursor, since and until."
)
def search(
    history_url: str | None,
    queue: str | None,
    task: str | None,
    states: tuple[str, ...],
    since: str | None,
    until: str | None,
    group: str | None,
    worker: str | None,
    text: str | None,
    job_id: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Finished jobs matching every filter given, newest first, a page at a time."""
    # Whole seconds: the resolved times go into the 'more:' line, and read better short.
    now = datetime.now(UTC).replace(microsecond=0)
    since_at = parse_time(since, "--since", now) if since is not None else None
    until_at = parse_time(until, "--until", now) if until is not None else None
    query = SearchQuery(
        id=job_id,
        queue=queue,
        task=task,
        states=parse_states(states),
        since=since_at,
        until=until_at,
        group=group,
        worker=worker,
        text=text,
        cursor=cursor,
        limit=limit,
    )
    check_cursor(query)
    page = run_store(history_url, lambda store: store.search(query))
    if as_json:
        # The times as resolved too: a script that follows next_cursor passes them, not "2h".
        print_json(
            {
                "items": [record_json(r) for r in page.items],
                "next_cursor": page.next_cursor,
                "since": iso(since_at),
                "until": iso(until_at),
            }
        )
        return
    if not page.items:
        console.print("no finished jobs match" + (" on this page" if cursor else ""))
        return
    listing = table(
        f"{len(page.items)} finished job(s), newest first{', more after them' if page.next_cursor else ''}",
        ("id", "queue", "task", "state", "attempts", "finished (UTC)", "wait", "run", "error"),
    )
    for r in page.items:
        listing.add_row(
            escape(r.id),
            escape(r.queue),
            escape(r.task),
            _state_cell(r.state),
            str(r.attempts),
            timestamp(r.finished_at, "-"),
            duration(r.wait_ms),
            duration(r.run_ms),
            _error_cell(r.error_type, r.error_message),
        )
    console.print(listing)
    if page.next_cursor:
        # A cursor belongs to the exact filters of its search: an age given as --since/--until
        # means another time on the next run, so the hint fixes the time this page used.
        fixed = [
            f"--{name} {iso(at)}"
            for name, given, at in (("since", since, since_at), ("until", until, until_at))
            if is_age(given)
        ]
        console.print(
            f"more: --cursor {page.next_cursor}" + "".join(" " + part for part in fixed), highlight=False
        )


@history.command()
@history_url_option
@click.argument("queue", metavar="QUEUE[/ID]")
@click.argument("job_id", metavar="[ID]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the record and its attempts as JSON.")
def show(history_url: str | None, queue: str, job_id: str | None, as_json: bool) -> None:
    """One finished job: arguments, result, error and traceback, and every attempt.

    Name it QUEUE ID, or QUEUE/ID as the worker's logs print it. A job that finished more than
    once (retried by hand) shows its latest record."""
    if job_id is None:
        queue, slash, job_id = queue.partition("/")
        if not slash or not queue or not job_id:
            raise click.UsageError("name the job as QUEUE ID or QUEUE/ID")
    found = run_store(history_url, lambda store: store.get(queue, job_id))
    if found is None:
        err_console.print(
            f"[red]error:[/red] no job {job_id!r} of queue {queue!r} in the history (not finished, "
            "not archived yet, or past its retention)",
            highlight=False,
        )
        sys.exit(1)
    if as_json:
        print_json(record_json(found, with_attempts=True))
        return
    console.print(_record_fields(found))
    if found.attempt_log:
        attempts = table(
            "Attempts", ("attempt", "worker", "started (UTC)", "finished (UTC)", "outcome", "error")
        )
        for a in found.attempt_log:
            attempts.add_row(
                str(a.attempt),
                escape(a.worker or "-"),
                timestamp(a.started_at, "-"),
                timestamp(a.finished_at, "-"),
                a.outcome.value,
                _error_cell(a.error_type, a.error_message),
            )
        console.print(attempts)


def _record_fields(r: JobRecord) -> Table:
    fields = Table(show_header=False, box=None)
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    rows: list[tuple[str, str | None]] = [
        ("queue", r.queue),
        ("id", r.id),
        ("task", r.task),
        ("state", _state_cell(r.state)),
        ("attempts", str(r.attempts)),
        ("enqueued", timestamp(r.enqueued_at, "") or None),
        ("scheduled for", timestamp(r.scheduled_for, "") or None),
        ("started", timestamp(r.started_at, "") or None),
        ("finished", timestamp(r.finished_at, "-")),
        ("wait", duration(r.wait_ms)),
        ("run", duration(r.run_ms)),
        ("worker", r.worker),
        ("priority", str(r.priority) if r.priority else None),
        ("group", r.group),
        ("parent", "/".join(r.parent) if r.parent else None),
        ("flow", r.flow),
        ("schedule", r.schedule),
        ("arguments", text_of(r.arguments)),
        ("result", text_of(r.result)),
        (
            "error",
            f"{r.error_type or 'error'}: {text_of(r.error_message) or ''}"
            if r.error_type or r.error_message
            else None,
        ),
        ("traceback", (text_of(r.traceback) or "").rstrip() or None),
        ("truncated", ", ".join(sorted(r.truncated)) or None),
    ]
    for name, value in rows:
        if value is not None:
            # Stored text is shown as text: markup in an argument must not restyle the screen.
            fields.add_row(name, value if name == "state" else escape(value))
    return fields


@history.command()
@history_url_option
@click.option("--queue", "-q", default=None, help="Only this queue.")
@click.option("--task", "-t", default=None, help="Only this task.")
@click.option(
    "--since", default=STATS_DEFAULT_SINCE, show_default=True, metavar="TIME", help="ISO 8601 or an age."
)
@click.option("--until", default=None, metavar="TIME", help="ISO 8601 or an age [default: now].")
@click.option("--bucket", type=click.Choice(list(BUCKET_SECONDS)), default="hour", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def stats(
    history_url: str | None,
    queue: str | None,
    task: str | None,
    since: str,
    until: str | None,
    bucket: str,
    as_json: bool,
) -> None:
    """Jobs per time bucket, queue and task: counts, failure rate, wait and run percentiles.

    The failure rate is failed / (completed + failed). Wait runs from when a job was due to
    its first start; run is its last attempt. Buckets without jobs are left out."""
    now = datetime.now(UTC).replace(microsecond=0)
    query = StatsQuery(
        since=parse_time(since, "--since", now),
        until=parse_time(until, "--until", now) if until is not None else now,
        bucket=bucket,  # type: ignore[arg-type]  # click.Choice checked it
        queue=queue,
        task=task,
    )
    rows = run_store(history_url, lambda store: store.stats(query))
    if as_json:
        print_json(
            {
                "since": iso(query.since),
                "until": iso(query.until),
                "bucket": query.bucket,
                "rows": [stats_row_json(row) for row in rows],
            }
        )
        return
    if not rows:
        console.print(
            f"no jobs finished between {timestamp(query.since, '')} and {timestamp(query.until, '')} UTC"
        )
        return
    listing = table(
        f"Jobs per {bucket}, {timestamp(query.since, '')} to {timestamp(query.until, '')} UTC",
        (
            "start (UTC)",
            "queue",
            "task",
            "jobs",
            "failed",
            "failure rate",
            "wait p50/p95/p99",
            "run p50/p95/p99",
        ),
    )
    for row in rows:
        listing.add_row(
            row.start.strftime("%Y-%m-%d %H:%M"),
            escape(row.queue),
            escape(row.task),
            f"{row.total:,}",
            f"{row.counts.get(FinalState.FAILED, 0):,}",
            f"{row.failure_rate:.1%}" if row.failure_rate is not None else "-",
            _percentiles(row.wait_ms),
            _percentiles(row.run_ms),
        )
    console.print(listing)


def _percentiles(values: dict[float, float | None]) -> str:
    return " / ".join(duration(values.get(p)) for p in (0.5, 0.95, 0.99))


@history.command()
@history_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the version and what was applied as JSON.")
def migrate(history_url: str | None, as_json: bool) -> None:
    """Create the history's tables, or bring them up to date (safe to run from several
    processes at once). A SQLite file is created if it does not exist."""
    result = run_store(
        history_url, lambda store: store.migrate(), must_exist=False, config=HistoryConfig(migrate=False)
    )
    if as_json:
        print_json({"version": result.version, "applied": result.applied})
        return
    if result.applied:
        console.print(f"history schema now at version {result.version}; applied: {', '.join(result.applied)}")
    else:
        console.print(f"history schema at version {result.version}, up to date: nothing to apply")


@history.command()
@history_url_option
@click.option("--json", "as_json", is_flag=True, help="Print what was deleted as JSON.")
def prune(history_url: str | None, as_json: bool) -> None:
    """Delete the records older than the retention of their state (completed 30 days, failed
    90, the others 30), in short transactions; on PostgreSQL, drop whole monthly partitions."""
    config = HistoryConfig()
    result = run_store(history_url, lambda store: store.prune(), config=config)
    if as_json:
        print_json(
            {
                "deleted": {state.value: count for state, count in result.deleted.items()},
                "dropped_partitions": result.dropped_partitions,
                "created_partitions": result.created_partitions,
            }
        )
        return
    listing = table("Pruned history", ("state", "kept for", "records deleted"))
    for state in FinalState:
        kept = config.retention.for_state(state)
        deleted = result.deleted.get(state)
        listing.add_row(state.value, _kept(kept), f"{deleted:,}" if deleted is not None else "-")
    console.print(listing)
    if result.dropped_partitions:
        console.print(f"dropped partitions: {', '.join(result.dropped_partitions)}", highlight=False)
    if result.created_partitions:
        console.print(f"created partitions ahead: {', '.join(result.created_partitions)}", highlight=False)


def _kept(kept: timedelta | None) -> str:
    if kept is None:
        return "forever"
    if kept.days and not kept.seconds and not kept.microseconds:
        return f"{kept.days} days"
    return str(kept)
