"""The ``conveyor`` command line. Every option can also be set by a ``CONVEYOR_*`` variable.

This module holds the command group, the mapping of failures to exit codes, and the list of commands; each
family of commands lives in its own module: :mod:`.worker`, :mod:`.jobs`, :mod:`.queues`, :mod:`.schedules`,
:mod:`.history` and :mod:`.history_feed` (the ``history`` group), :mod:`.service` (``api``, ``dev``),
:mod:`.live` (``events``, ``logs`` and the ``--watch`` views).
:mod:`.options` declares what a command acts on, :mod:`.output` how it prints.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import redis

from .. import __version__
from ..errors import ConveyorError
from . import health, history, history_feed, jobs, live, metrics, queues, schedules, service, worker
from .output import err_console

__all__ = ["main"]


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)
        except ValueError as exc:  # a bad name or option value: the message says which
            err_console.print(f"[red]error:[/red] {exc}")
            sys.exit(2)
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


for _command in (
    worker.worker,
    jobs.enqueue,
    queues.info,
    jobs.job,
    jobs.jobs,
    live.logs,
    live.events,
    queues.workers,
    jobs.retry,
    queues.purge,
    jobs.remove,
    jobs.cancel,
    queues.pause,
    queues.resume,
    queues.limits,
    schedules.schedules,
    history.history,
    service.api,
    metrics.metrics,
    service.dev,
    health.health,
):
    main.add_command(_command)
# The hand-off commands live apart from the ones that read the store, in one group.
for _command in (history_feed.archive, history_feed.enable, history_feed.disable, history_feed.backlog):
    history.history.add_command(_command)
