"""What a command acts on: the Redis URL, the queue, the job, and the client that reaches them.

Every command that names a queue or a job takes the same options with the same variables, so they are
declared once here and stacked by the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..client import Client
from ..config import DEFAULT_REDIS_URL
from ..job import JobState

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


def queue_option(f: F) -> F:
    return click.option(
        "--queue",
        "-q",
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
    """``JOB_ID``, ``--url``, ``--queue``: the target of a command that acts on one job."""
    return click.argument("job_id")(queue_options(f))


def connect(url: str) -> Client:
    return Client.from_url(url)
