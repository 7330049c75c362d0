"""``conveyor worker``: run the tasks of an app, in one process or several under a supervisor."""

from __future__ import annotations

import importlib
import os
import sys

import click

from ..task import Tasks
from . import logs
from .options import url_option


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


@click.command()
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
    """``args`` without the option ``names`` and its value: each supervised child reruns the same
    command line with its own ``--processes 1``."""
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
