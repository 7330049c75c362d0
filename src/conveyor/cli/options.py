"""What a command acts on: the Redis URL, the queue, the job, and the client that reaches them.

Every command that names a queue or a job takes the same options with the same variables, so they are
declared once here and stacked by the commands.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from .. import ops
from ..client import Client
from ..config import DEFAULT_REDIS_URL
from ..job import JobState
from ..ops.keys import queues_key

F = TypeVar("F", bound=Callable[..., Any])

STATES = [s.value for s in JobState]


def url_option(f: F) -> F:
    return click.option(
        "--url",
        "url",
        envvar="CONVEYOR_REDIS_URL",
        show_envvar=True,
        default=DEFAULT_REDIS_URL,
        show_default=True,
        help="Redis URL: redis://, rediss:// (TLS), unix://, redis+sentinel://, redis+cluster://.",
    )(f)


def log_level_option(f: F) -> F:
    """How much a long-running command (worker, archiver) logs."""
    return click.option(
        "--log-level",
        envvar="CONVEYOR_LOG_LEVEL",
        show_envvar=True,
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"]),
    )(f)


def queue_option(f: F) -> F:
    # -Q too: the worker names its queues with -Q, and a user moving between commands
    # should not have to remember which letter goes with which.
    return click.option(
        "--queue",
        "-q",
        "-Q",
        envvar="CONVEYOR_QUEUE",
        show_envvar=True,
        default="default",
        show_default=True,
        help="Queue name.",
    )(f)


def queue_options(f: F) -> F:
    """``--url`` then ``--queue``: the target of a command that acts on one queue."""
    return url_option(queue_option(f))


def job_options(f: F) -> F:
    """``JOB_ID``, ``--url``, ``--queue``: the target of a command that acts on one job.

    ``JOB_ID`` may be ``QUEUE/ID``, the form the worker's logs print (neither a queue name
    nor a job id can hold a ``/``); see :func:`job_ref`."""
    return click.argument("job_id", metavar="[QUEUE/]JOB_ID")(queue_options(f))


def json_option(f: F) -> F:
    """``--json``: every command that reads something can print it for a program to parse."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


def job_ref(queue: str, job_id: str) -> tuple[str, str]:
    """The queue and id a job argument names: ``QUEUE/ID``, or an id in ``--queue``.

    A ``QUEUE/`` part that contradicts a ``--queue`` given on the same command line is
    refused rather than one of the two silently chosen; one from ``CONVEYOR_QUEUE`` is a
    default, which the argument's own queue overrides.
    """
    named, slash, bare = job_id.partition("/")
    if not slash:
        return queue, job_id
    if not named or not bare:
        raise click.BadParameter(f"{job_id!r}: expected QUEUE/JOB_ID or JOB_ID", param_hint="JOB_ID")
    source = click.get_current_context().get_parameter_source("queue")
    if named != queue and source is ParameterSource.COMMANDLINE:
        raise click.BadParameter(
            f"{job_id!r} names queue {named!r}, but --queue is {queue!r}", param_hint="JOB_ID"
        )
    return named, bare


def queue_is_known(client: Client, queue: str) -> bool:
    """Whether anything ever used the queue: an enqueue (which registers it), a job, a
    setting or a schedule. A name that fails all four is most likely a typo."""
    if queue in client.queues():
        return True
    if any(client.counts(queue).values()) or client.settings_of(queue):
        return True
    return bool(client.schedules(queue))


def require_known_queue(client: Client, queue: str, create: bool, action: str) -> None:
    """Refuse to act on a queue nothing ever used, unless ``--create`` insists; with it, the
    queue is registered, so that ``conveyor info`` lists what was just set on it."""
    if create:
        client.run(ops.register_queue(queues_key(client.settings.prefix), queue))
        return
    if queue_is_known(client, queue):
        return
    known = client.queues()
    close = difflib.get_close_matches(queue, known, n=3)
    hint = f" Did you mean {' or '.join(repr(q) for q in close)}?" if close else ""
    listed = f" Known queues: {', '.join(known)}." if known and not close else ""
    raise click.ClickException(
        f"queue {queue!r} has never had a job (a typo?), so nothing was done.{hint}{listed} "
        f"Pass --create to {action} it anyway."
    )


def create_option(f: F) -> F:
    return click.option(
        "--create",
        is_flag=True,
        help="Act on the queue even if it never had a job (else refused as a likely typo).",
    )(f)


def connect(url: str) -> Client:
    return Client.from_url(url)


class AppImportError(click.ClickException):
    """The app module raised while being imported: shown as the user's own frames only."""

    exit_code = 2  # as for an app that cannot be found: the command line names a bad app


def import_app_module(module_name: str) -> Any:
    """Import the module of an app (``conveyor worker APP``), from the current directory too.

    A module that cannot be found is a one-line error. One that raises while it runs (a
    syntax error, a failing import of its own, a bug at module level) is shown with the
    frames of the user's code only: importlib's, click's and Conveyor's frames around them
    made a 40-line traceback in which the one line that matters was hard to find.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppImportError(f"cannot import {module_name!r}: {exc}") from None
        raise AppImportError(_app_failure(module_name, exc)) from None
    except Exception as exc:
        raise AppImportError(_app_failure(module_name, exc)) from None


_OURS = [Path(click.__file__).resolve().parent, Path(__file__).resolve().parents[1]]
"""Click's and Conveyor's own code: frames there (and importlib's) are never the user's."""

_LIBRARIES = [
    Path(sysconfig.get_path(name)).resolve() for name in ("stdlib", "platstdlib", "purelib", "platlib")
]
"""The standard library and installed packages: the frames of the user's own code are
shown without them, unless the user's code is all among them (an installed app)."""


def _outside(frame: traceback.FrameSummary, directories: list[Path]) -> bool:
    if frame.filename.startswith("<"):  # <frozen importlib._bootstrap> and the like
        return False
    path = Path(frame.filename).resolve()
    return not any(path.is_relative_to(directory) for directory in directories)


def _app_failure(module_name: str, exc: BaseException) -> str:
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if _outside(frame, _OURS)]
    frames = [frame for frame in frames if _outside(frame, _LIBRARIES)] or frames
    lines = [f"importing {module_name!r} raised an exception:"]
    if frames:
        lines.append("Traceback (your code only):")
        lines += [line.rstrip("\n") for line in traceback.format_list(frames)]
    lines += [line.rstrip("\n") for line in traceback.format_exception_only(type(exc), exc)]
    return "\n".join(lines)
