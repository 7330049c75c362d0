"""``conveyor worker``: run the tasks of an app, in one process or several under a supervisor."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

import click

from ..task import Tasks
from . import logs
from .options import import_app_module, log_level_option, url_option

if TYPE_CHECKING:
    from ..worker.engine import Worker

log = logging.getLogger("conveyor.worker")


def load_tasks(spec: str) -> Tasks:
    """Import ``module:attribute`` (attribute defaults to ``tasks``) and check it is a registry."""
    module_name, _, attribute = spec.partition(":")
    module = import_app_module(module_name)
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
    "--history-url",
    envvar="CONVEYOR_HISTORY_URL",
    show_envvar=True,
    default=None,
    metavar="URL",
    help="Archive the jobs that finish into this history store (postgresql://... or "
    "sqlite:///path) and turn history on for the worker's queues.",
)
@click.option(
    "--burst", envvar="CONVEYOR_BURST", show_envvar=True, is_flag=True, help="Drain the queues, then exit."
)
@click.option(
    "--metrics-port",
    envvar="CONVEYOR_WORKER_METRICS_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics at /metrics and liveness at /livez on this port (0: any free "
    "port) [default: off]. With --processes N the supervisor serves the sum of its processes.",
)
@click.option(
    "--metrics-host",
    envvar="CONVEYOR_WORKER_METRICS_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics port listens on (0.0.0.0: every interface, e.g. in a pod).",
)
@log_level_option
@click.option(
    "--log-format",
    envvar="CONVEYOR_LOG_FORMAT",
    show_envvar=True,
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
)
# How a child of --processes N takes its orders from the supervisor (conveyor.worker.supervisor).
@click.option("--supervisor-fd", type=int, default=None, hidden=True)
# Where such a child writes its figures for the supervisor to serve (conveyor.metrics.worker).
@click.option("--metrics-snapshot", default=None, hidden=True)
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
    history_url: str | None,
    burst: bool,
    metrics_port: int | None,
    metrics_host: str,
    log_level: str,
    log_format: str,
    supervisor_fd: int | None,
    metrics_snapshot: str | None,
) -> None:
    """Run a worker for the tasks in APP (module:attribute, e.g. myapp.jobs:tasks).

    SIGTERM or Ctrl-C stops claiming and lets running jobs finish within the grace period;
    unfinished jobs go back to waiting at once. A second signal stops at once: running jobs
    go back to waiting, and the process ends without waiting for sync jobs' threads.
    """
    logs.configure(log_level, log_format)
    if processes > 1:
        from ..worker.supervisor import supervise

        # The supervisor serves the metrics; each child is handed a snapshot file instead.
        shared = ("--processes", "-p", "--metrics-port", "--metrics-host")
        child = [*_without_option(sys.argv[1:], shared), "--processes", "1"]
        metrics = None if metrics_port is None else (metrics_host, metrics_port)
        with _metrics_port_checked():
            code = supervise(child, processes, burst=burst, metrics=metrics)
        sys.exit(code)
    from ..worker.engine import Worker

    registry = load_tasks(app)
    if supervisor_fd is not None:
        # The port is the supervisor's (CONVEYOR_WORKER_METRICS_PORT reaches the children too).
        metrics_port = None
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    instance = Worker(
        registry,
        url=url,
        queues=queue_list,
        concurrency=concurrency,
        threads=threads,
        lease=lease,
        max_loop_block=max_loop_block,
        sweep_interval=sweep_interval,
        shutdown_grace=shutdown_grace,
        history_url=history_url or None,
        burst=burst,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    if supervisor_fd is None:
        with _metrics_port_checked():
            _run_process(instance, instance.run)
    else:
        from ..worker.supervisor import serve_as_child

        _run_process(instance, lambda: serve_as_child(instance, supervisor_fd, metrics_snapshot))


@contextlib.contextmanager
def _metrics_port_checked() -> Iterator[None]:
    """A metrics port that cannot be listened on ends the command with the reason, not a traceback."""
    from ..metrics.http import PortUnavailable

    try:
        yield
    except PortUnavailable as exc:
        raise click.ClickException(str(exc.strerror)) from exc


def _run_process(worker: Worker, run: Callable[[], None]) -> None:
    """Run ``worker`` as this process. A sync job it handed back while its thread still ran
    (stopped at once, or out of grace) would keep the process alive until the function
    returns -- the interpreter waits for the threads at exit -- and run on while the job runs
    again elsewhere. The thread cannot be stopped, so the process ends without waiting:
    the jobs are back in waiting, the connections closed, only the logs are left to flush."""
    try:
        run()
    except BaseException:
        if not worker.abandoned:
            raise
        log.exception("the worker failed")
        _end_now(worker, 1)
    if worker.abandoned:
        _end_now(worker, 0)


def _end_now(worker: Worker, code: int) -> NoReturn:
    log.warning(
        "ending the process without waiting for %d handed-back sync jobs still running in threads",
        worker.abandoned,
    )
    logging.shutdown()  # flushes the handlers
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


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
