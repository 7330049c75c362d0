"""The ``conveyor`` command line. Every option can also be set by a ``CONVEYOR_*`` variable."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any

import click
import redis
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..client import Client
from ..config import DEFAULT_REDIS_URL
from ..errors import ConveyorError
from ..job import Job, JobState
from ..redis.connect import redact
from ..task import Tasks
from . import logs

console = Console()
err_console = Console(stderr=True)

STATES = [s.value for s in JobState]


def url_option(f: Any) -> Any:
    return click.option(
        "--url",
        "url",
        envvar="CONVEYOR_REDIS_URL",
        show_envvar=True,
        default=DEFAULT_REDIS_URL,
        show_default=True,
        help="Redis URL: redis://, rediss:// (TLS), unix://, redis+sentinel://, redis+cluster://.",
    )(f)


def queue_option(f: Any) -> Any:
    return click.option(
        "--queue",
        "-q",
        envvar="CONVEYOR_QUEUE",
        show_envvar=True,
        default="default",
        show_default=True,
        help="Queue name.",
    )(f)


def _client(url: str) -> Client:
    return Client.from_url(url)


def load_tasks(spec: str) -> Tasks:
    """Import ``module:attribute`` (attribute defaults to ``tasks``) and check it is a registry."""
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="APP") from None
    registry = getattr(module, attribute or "tasks", None)
    if not isinstance(registry, Tasks):
        raise click.BadParameter(
            f"{spec!r} is not a conveyor.Tasks registry (expected module:attribute, e.g. myapp.jobs:tasks)",
            param_hint="APP",
        )
    return registry


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)
        except (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError) as exc:
            err_console.print(f"[red]error:[/red] cannot reach Redis: {exc}")
            sys.exit(2)
        except redis.RedisError as exc:
            err_console.print(f"[red]error:[/red] Redis answered with an error: {exc}")
            sys.exit(2)


@click.group(
    cls=_Main,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        # Options without a documented variable of their own read CONVEYOR_<COMMAND>_<OPTION>,
        # e.g. CONVEYOR_ENQUEUE_DELAY, so every option can come from the environment.
        "auto_envvar_prefix": "CONVEYOR",
        "show_default": True,
    },
)
@click.version_option(__version__, prog_name="conveyor")
def main() -> None:
    """Conveyor: a fast, reliable job queue on Redis.

    Every option can also be set by an environment variable: the common ones are shown in
    each command's help (CONVEYOR_REDIS_URL, CONVEYOR_QUEUE, ...), any other reads
    CONVEYOR_<COMMAND>_<OPTION>, for example CONVEYOR_ENQUEUE_DELAY.

    \b
    Start here:
      conveyor dev                      run everything locally (embedded Redis, worker, demo)
      conveyor worker myapp.jobs:tasks  run a worker for your tasks
      conveyor info                     queues and their counts
    """


# ---------------------------------------------------------------------------- worker
@main.command()
@click.argument("app", envvar="CONVEYOR_APP")
@url_option
@click.option(
    "--queues",
    "-Q",
    envvar="CONVEYOR_QUEUES",
    show_envvar=True,
    default=None,
    help="Comma-separated queues in strict priority order [default: the queues of APP's tasks].",
)
@click.option(
    "--concurrency",
    "-c",
    envvar="CONVEYOR_CONCURRENCY",
    show_envvar=True,
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Jobs run at once per process.",
)
@click.option(
    "--processes",
    "-p",
    envvar="CONVEYOR_PROCESSES",
    show_envvar=True,
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Worker processes under one supervisor.",
)
@click.option(
    "--threads",
    envvar="CONVEYOR_THREADS",
    show_envvar=True,
    type=click.IntRange(1),
    default=None,
    help="Threads for sync tasks [default: min(concurrency, 64)].",
)
@click.option(
    "--lease",
    envvar="CONVEYOR_LEASE",
    show_envvar=True,
    type=click.FloatRange(1),
    default=10.0,
    show_default=True,
    help="Seconds a claimed job stays leased without a heartbeat.",
)
@click.option(
    "--max-loop-block",
    envvar="CONVEYOR_MAX_LOOP_BLOCK",
    show_envvar=True,
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds the event loop may go without running before the worker counts as hung and "
    "stops renewing its leases [default: 10 x lease, at least 60].",
)
@click.option(
    "--sweep-interval",
    envvar="CONVEYOR_SWEEP_INTERVAL",
    show_envvar=True,
    type=click.FloatRange(0.1),
    default=5.0,
    show_default=True,
    help="Seconds between sweeps for jobs of dead workers.",
)
@click.option(
    "--shutdown-grace",
    envvar="CONVEYOR_SHUTDOWN_GRACE",
    show_envvar=True,
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish on SIGTERM.",
)
@click.option(
    "--burst", envvar="CONVEYOR_BURST", show_envvar=True, is_flag=True, help="Drain the queues, then exit."
)
@click.option(
    "--log-level",
    envvar="CONVEYOR_LOG_LEVEL",
    show_envvar=True,
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    envvar="CONVEYOR_LOG_FORMAT",
    show_envvar=True,
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
)
def worker(
    app: str,
    url: str,
    queues: str | None,
    concurrency: int,
    processes: int,
    threads: int | None,
    lease: float,
    max_loop_block: float | None,
    sweep_interval: float,
    shutdown_grace: float,
    burst: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Run a worker for the tasks in APP (module:attribute, e.g. myapp.jobs:tasks).

    SIGTERM or Ctrl-C stops claiming and lets running jobs finish within the grace period;
    unfinished jobs go back to waiting at once. A second signal stops at once.
    """
    logs.configure(log_level, log_format)
    if processes > 1:
        from ..worker.supervisor import supervise

        child = [*_without_option(sys.argv[1:], ("--processes", "-p")), "--processes", "1"]
        sys.exit(supervise(child, processes, burst=burst))
    from ..worker.engine import Worker

    registry = load_tasks(app)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    Worker(
        registry,
        url=url,
        queues=queue_list,
        concurrency=concurrency,
        threads=threads,
        lease=lease,
        max_loop_block=max_loop_block,
        sweep_interval=sweep_interval,
        shutdown_grace=shutdown_grace,
        burst=burst,
    ).run()


def _without_option(args: list[str], names: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(n + "=") for n in names if n.startswith("--")):
            continue
        out.append(arg)
    return out


# ---------------------------------------------------------------------------- producing
@main.command()
@click.argument("task")
@click.argument("args", nargs=-1)
@url_option
@queue_option
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
) -> None:
    """Enqueue one job of TASK with ARGS (each parsed as JSON, else taken as a string).

    \b
    Example: conveyor enqueue add 1 2 --queue math --wait 10
    """
    from ..task import EnqueueOptions, TaskCall, _check_priority

    parsed = [_json_or_text(a) for a in args]
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--kwargs") from None
    if not isinstance(kwargs, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--kwargs")
    call: TaskCall[Any] = TaskCall(
        task,
        tuple(parsed),
        kwargs,
        queue,
        _check_priority(priority),
        EnqueueOptions(job_id=job_id, delay=delay, retries=retries),
    )
    with _client(url) as client:
        [handle] = client.enqueue_many([call])
        word = "created" if handle.created else "already existed"
        console.print(f"{handle.id} [bold]{word}[/bold] in queue {queue}")
        if wait_seconds is not None:
            console.print_json(json.dumps(handle.result(timeout=wait_seconds), default=str))


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


# ---------------------------------------------------------------------------- reading
@main.command()
@url_option
@click.option("--queue", "-q", "queue_names", multiple=True, help="Only these queues (repeatable).")
def info(url: str, queue_names: tuple[str, ...]) -> None:
    """A table of queues and how many jobs each holds in every state."""
    with _client(url) as client:
        names = list(queue_names) or client.queues()
        table = Table(title=f"Queues on {redact(url)}")
        table.add_column("queue", style="bold")
        for state in STATES:
            table.add_column(state, justify="right")
        for name in names:
            counts = client.counts(name)
            table.add_row(name, *(f"{counts[s]:,}" for s in STATES))
        if not names:
            console.print("no queues yet: enqueue a job first")
            return
        console.print(table)


@main.command()
@click.argument("job_id")
@url_option
@queue_option
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def job(job_id: str, url: str, queue: str, as_json: bool) -> None:
    """Show one job: state, arguments, result or error, attempts, times."""
    with _client(url) as client:
        found = client.get_job(queue, job_id)
    data = found.to_dict()
    if as_json:
        click.echo(json.dumps(data, default=str, indent=2))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if key == "error" and value:
            table.add_row("error", f"{value.get('type')}: {value.get('message')}")
            if value.get("traceback"):
                table.add_row("traceback", value["traceback"].rstrip())
            continue
        table.add_row(key, json.dumps(value, default=str) if isinstance(value, dict | list) else str(value))
    console.print(table)


@main.command()
@url_option
@queue_option
@click.option("--state", "-s", type=click.Choice(STATES), default="waiting", show_default=True)
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
def jobs(url: str, queue: str, state: str, limit: int, offset: int) -> None:
    """List jobs of a queue in one state, a page at a time."""
    with _client(url) as client:
        page, total = client.list_jobs(queue, state, offset, limit)
    table = Table(
        title=f"{state} jobs in {queue}: {offset + 1 if page else 0}-{offset + len(page)} of {total:,}"
    )
    for column in ("id", "task", "attempts", "created", "info"):
        table.add_column(column)
    for item in page:
        table.add_row(
            item.id,
            item.task,
            str(item.attempts),
            item.created_at.strftime("%Y-%m-%d %H:%M:%S") if item.created_at else "",
            _summary(item),
        )
    console.print(table)


def _summary(item: Job) -> str:
    if item.error:
        return f"{item.error.get('type')}: {item.error.get('message')}"[:80]
    if item.state is JobState.COMPLETED:
        return json.dumps(item.result, default=str)[:80]
    if item.run_at:
        return f"due {item.run_at:%H:%M:%S}"
    return ""


@main.command()
@url_option
def workers(url: str) -> None:
    """Live workers, from their heartbeats."""
    with _client(url) as client:
        found = client.workers()
    if not found:
        console.print("no live workers")
        return
    table = Table(title="Workers")
    for column in ("id", "queues", "concurrency", "busy", "processed", "failed", "up"):
        table.add_column(column)
    now = time.time()
    for w in found:
        up = now - int(w.get("started", now * 1000)) / 1000
        table.add_row(
            w["id"],
            w.get("queues", ""),
            w.get("concurrency", ""),
            w.get("busy", ""),
            w.get("processed", ""),
            w.get("failed", ""),
            f"{up:.0f}s",
        )
    console.print(table)


# ---------------------------------------------------------------------------- managing
@main.command()
@click.argument("job_ids", nargs=-1)
@url_option
@queue_option
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed job of the queue.")
def retry(job_ids: tuple[str, ...], url: str, queue: str, retry_all: bool) -> None:
    """Move failed (dead-lettered) jobs back to waiting: the given JOB_IDS, or --all."""
    if not job_ids and not retry_all:
        raise click.UsageError("give job ids, or --all to retry every failed job")
    with _client(url) as client:
        moved = client.retry(queue, None if retry_all else list(job_ids))
    console.print(f"{moved} job(s) moved back to waiting in {queue}")


@main.command()
@url_option
@queue_option
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
    with _client(url) as client:
        deleted = client.purge(queue, chosen)
    console.print(f"deleted {deleted:,} job(s) from {queue}")


@main.command()
@click.argument("job_id")
@url_option
@queue_option
def remove(job_id: str, url: str, queue: str) -> None:
    """Delete one job that is not running."""
    with _client(url) as client:
        state = client.remove(queue, job_id)
    console.print(f"removed {job_id} (was {state.value})")


@main.command()
@click.argument("job_id")
@url_option
@queue_option
@click.option("--reason", default="cancelled from the command line", show_default=True)
def cancel(job_id: str, url: str, queue: str, reason: str) -> None:
    """Cancel a waiting or delayed job, or abort a running one."""
    with _client(url) as client:
        outcome = client.cancel(queue, job_id, reason=reason)
    if outcome == "aborting":
        console.print(f"{job_id} is running: its worker stops it at its next heartbeat")
    else:
        console.print(f"{job_id} cancelled")


@main.command()
@url_option
@queue_option
def pause(url: str, queue: str) -> None:
    """Stop workers from claiming jobs of a queue (jobs keep arriving)."""
    with _client(url) as client:
        client.pause(queue)
    console.print(f"{queue} paused")


@main.command()
@url_option
@queue_option
def resume(url: str, queue: str) -> None:
    """Let workers claim jobs of a paused queue again."""
    with _client(url) as client:
        client.resume(queue)
    console.print(f"{queue} resumed")


@main.command()
@url_option
@queue_option
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
    from ..client import UNSET

    def parse_rate(text: str | None, hint: str) -> Any:
        if text is None:
            return UNSET
        if text == "off":
            return None
        try:
            count, _, seconds = text.partition("/")
            return (int(count), float(seconds or 1))
        except ValueError:
            raise click.BadParameter("use N/SECONDS, e.g. 100/60", param_hint=hint) from None

    def parse_max(value: int | None) -> Any:
        return UNSET if value is None else (value or None)

    with _client(url) as client:
        client.set_limits(
            queue,
            concurrency=parse_max(concurrency),
            rate=parse_rate(rate, "--rate"),
            group_concurrency=parse_max(group_concurrency),
            group_rate=parse_rate(group_rate, "--group-rate"),
            priority_aging=UNSET if priority_aging is None else (priority_aging or None),
        )
        current = client.settings_of(queue)

    def rate_text(prefix: str) -> str:
        if f"{prefix}rate_max" not in current:
            return "none"
        return f"{current[prefix + 'rate_max']} per {current[prefix + 'rate_ms'] / 1000:g} s"

    console.print(
        f"{queue}: paused={'yes' if current.get('paused') else 'no'}, "
        f"concurrency={current.get('concurrency', 'unlimited')}, rate={rate_text('')}, "
        f"per group: concurrency={current.get('group_concurrency', 'unlimited')}, "
        f"rate={rate_text('group_')}; priority aging="
        + (f"1 level per {current['aging_ms'] / 1000:g} s" if "aging_ms" in current else "off")
    )


@main.command()
@url_option
@queue_option
@click.option("--remove", "remove_name", default=None, metavar="NAME", help="Remove the schedule NAME.")
def schedules(url: str, queue: str, remove_name: str | None) -> None:
    """Repeatable jobs (cron and intervals) of a queue, with their next run times."""
    with _client(url) as client:
        if remove_name is not None:
            if not client.remove_schedule(queue, remove_name):
                raise click.ClickException(f"no schedule {remove_name!r} in {queue}")
            console.print(f"removed schedule {remove_name}")
        states = client.schedules(queue)
    if not states:
        console.print(f"no schedules in {queue}")
        return
    table = Table(title=f"Schedules of {queue}")
    for column in ("name", "task", "when", "missed ticks", "next run (UTC)"):
        table.add_column(column)
    for state in states:
        sched = state.schedule
        next_run = state.next_run.strftime("%Y-%m-%d %H:%M:%S") if state.next_run else "-"
        table.add_row(sched.name, sched.task, sched.description, sched.missed, next_run)
    console.print(table)


# ---------------------------------------------------------------------------- api
@main.command()
@url_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Allow browser calls from this origin (repeatable; CORS is off without one).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@click.option(
    "--processes",
    type=click.IntRange(1),
    default=1,
    help="Server processes sharing the port (each its own event loop and Redis connections).",
)
def api(
    url: str, host: str, port: int, cors_origins: tuple[str, ...], log_level: str, processes: int
) -> None:
    """Serve the HTTP API (needs the api extra: pip install 'conveyor[api]').

    Tokens come from CONVEYOR_API_TOKENS or the file named by CONVEYOR_API_TOKENS_FILE
    (see docs/api.md). Without any token the API binds to loopback only.
    """
    import ipaddress

    try:
        import uvicorn

        from ..api import ApiSettings, create_app
    except ImportError as exc:
        raise click.ClickException(f"the API needs its extra: pip install 'conveyor[api]' ({exc})") from None
    settings = ApiSettings.from_env(redis_url=url, cors_origins=cors_origins or None)
    if not settings.tokens.enabled:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise click.ClickException(
                f"refusing to serve on {host} without API tokens: anyone who can reach it could "
                "enqueue and delete jobs. Set CONVEYOR_API_TOKENS (or CONVEYOR_API_TOKENS_FILE), "
                "or bind to 127.0.0.1."
            )
        err_console.print(
            f"[yellow]no API tokens configured: serving on loopback only ({host}), without "
            "authentication[/yellow]"
        )
    err_console.print(f"Conveyor API on http://{host}:{port} (docs at /docs), Redis {redact(url)}")
    if processes == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)
        return
    # Several processes import the app themselves: hand them the settings through the
    # environment, which ApiSettings.from_env reads in each of them.
    os.environ["CONVEYOR_REDIS_URL"] = url
    if cors_origins:
        os.environ["CONVEYOR_API_CORS_ORIGINS"] = ",".join(cors_origins)
    uvicorn.run(
        "conveyor.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        log_level=log_level,
        access_log=False,
    )


# ---------------------------------------------------------------------------- dev
@main.command()
@click.option(
    "--jobs",
    "job_count",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Demo jobs to enqueue.",
)
@click.option("--exit", "exit_after", is_flag=True, help="Exit when the demo workload is done.")
@click.option(
    "--state-dir",
    default=".conveyor",
    show_default=True,
    envvar="CONVEYOR_STATE_DIR",
    show_envvar=True,
    help="Where the embedded Redis keeps its data.",
)
def dev(job_count: int, exit_after: bool, state_dir: str) -> None:
    """Run everything locally: Redis (embedded unless CONVEYOR_REDIS_URL is set), a worker, a demo.

    Ctrl-C stops everything and leaves no process behind.
    """
    from ..dev.mode import run_dev

    sys.exit(run_dev(job_count=job_count, exit_after=exit_after, state_dir=state_dir, console=console))
