"""What happens to one claimed job: decode it, decide its outcome, describe its error.

Pure functions and plain data; the runner (:mod:`conveyor.worker.run`) does the I/O.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import backoff as backoff_policies
from .. import serialization
from ..errors import Fail, Retry, RetryAfter, UnknownTask
from ..flows import ChildOutcome
from ..ops.flows import parse_children
from ..ops.lifecycle import Claimed
from ..task import Task, Tasks

if TYPE_CHECKING:
    from ..metrics.worker import TaskFigures

MAX_TRACEBACK_CHARS = 8_000


@dataclass(slots=True)
class Prepared:
    """A claimed job ready to run: its task, decoded arguments and effective options."""

    queue: str
    claimed: Claimed
    task: Task[Any, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    retries: int
    timeout: float | None
    backoff: backoff_policies.Backoff
    started: float = 0.0
    """Event-loop time when the job started, for its duration in the log."""
    context: Any = None
    """The job's :class:`~conveyor.context.JobContext`, once it runs."""
    aborted: bool = False
    """Someone cancelled the job while it ran; its outcome is recorded as cancelled."""
    fenced: bool = False
    """A newer attempt owns the job (this one's lease was lost): record nothing."""
    make_context: Any = None
    """Makes the JobContext on the first ``current_job()`` call."""
    children: list[ChildOutcome] | None = None
    """For the parent of a flow: how its children ended, in the order they were given."""
    figures: TaskFigures | None = None
    """Where the worker's metrics count this job (its queue and task); None with metrics off."""


class Undeliverable(Exception):
    """The job names an unknown task or carries a payload that cannot be decoded."""

    def __init__(self, reason: str, message: str, kind: str) -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(message)


def prepare(queue: str, claimed: Claimed, tasks: Tasks) -> Prepared:
    """Decode a claimed job; raises :class:`Undeliverable` when it can never run here."""
    try:
        task = tasks.get(claimed.task)
    except UnknownTask as exc:
        raise Undeliverable("unknown_task", str(exc), "UnknownTask") from None
    try:
        args = serialization.loads(claimed.args) if claimed.args else []
        kwargs = serialization.loads(claimed.kwargs) if claimed.kwargs else {}
        options = serialization.loads(claimed.options) if claimed.options else {}
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(options, dict):
            raise ValueError("args must be a JSON array, kwargs and options JSON objects")
    except ValueError as exc:
        raise Undeliverable(
            "bad_payload", f"the job's payload cannot be decoded: {exc}", "PayloadDecodeError"
        ) from None
    children = None
    if claimed.children:
        try:
            passed, children = parse_children(claimed.children)
        except (ValueError, KeyError, TypeError) as exc:
            raise Undeliverable(
                "bad_payload",
                f"the outcomes of the job's children cannot be decoded: {exc}",
                "PayloadDecodeError",
            ) from None
        if passed:  # chain: the one result; chord ("list"): the list of results, in order
            results = [child.result for child in children]
            args = [results[0] if len(results) == 1 and passed != "list" else results, *args]
    defaults = task.defaults
    backoff = defaults.backoff
    if "backoff" in options:
        try:
            backoff = backoff_policies.from_dict(options["backoff"])
        except (ValueError, TypeError, AttributeError) as exc:
            raise Undeliverable(
                "bad_payload", f"invalid backoff option: {exc}", "PayloadDecodeError"
            ) from None
    retries, timeout = defaults.retries, defaults.timeout
    if options:
        retries = options.get("retries", retries)
        timeout = options.get("timeout", timeout)
        # Checked here, not where they are used: a wrong type there fails every attempt
        # (or, raised from the claim loop, stops the worker claiming at all).
        if not _is_number(retries, integral=True) or (timeout is not None and not _is_number(timeout)):
            raise Undeliverable(
                "bad_payload",
                f"invalid options: retries={retries!r} (a non-negative integer), "
                f"timeout={timeout!r} (seconds or null)",
                "PayloadDecodeError",
            )
    return Prepared(
        queue=queue,
        claimed=claimed,
        task=task,
        args=args,
        kwargs=kwargs,
        retries=retries,
        timeout=timeout,
        backoff=backoff,
        children=children,
    )


def _is_number(value: Any, integral: bool = False) -> bool:
    kinds = int if integral else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and value >= 0


def error_payload(exc: BaseException, *, reason: str = "exception", with_traceback: bool = True) -> bytes:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ in ("builtins", None)
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    data: dict[str, Any] = {"type": name, "message": str(exc), "reason": reason}
    if with_traceback and exc.__traceback__ is not None:
        text = "".join(traceback.format_exception(exc))
        data["traceback"] = text[-MAX_TRACEBACK_CHARS:]
    return serialization.dumps(data)


def retry_delay_ms(job: Prepared, exc: BaseException) -> int:
    """Milliseconds until the next attempt, or -1 when the job is out of retries."""
    attempt = int(job.claimed.attempts)
    if isinstance(exc, RetryAfter):
        return max(0, round(exc.delay * 1000))
    if attempt > job.retries or isinstance(exc, Fail):
        return -1
    if isinstance(exc, Retry) and exc.delay is not None:
        return max(0, round(exc.delay * 1000))
    try:
        seconds = job.backoff.delay(attempt, exc)
    except Exception:  # a broken custom backoff must not lose the job: retry at once
        seconds = 0.0
    return max(0, round(seconds * 1000))
