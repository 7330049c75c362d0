"""Tasks: typed functions that can be enqueued, and the registry a worker serves.

``@tasks.task`` keeps the function's signature (``ParamSpec``), so ``client.enqueue(add, 1, 2)``
is type-checked against ``add(x: int, y: int)``. Options that say *how* to run a job
(delay, priority, retries, ...) are passed apart from the task's own arguments, through
``add.with_options(...)``, and validated when given, not when the job runs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

from . import backoff as backoff_policies
from .errors import UnknownTask
from .ops.ids import validate_job_id
from .ops.keys import validate_queue_name

P = ParamSpec("P")
R = TypeVar("R")
Lifecycle = TypeVar("Lifecycle", bound=Callable[[], Any])
R_co = TypeVar("R_co", covariant=True)

DEFAULT_QUEUE = "default"
DEFAULT_RETRIES = 3
DEFAULT_MAX_DEFERRALS = 50
MAX_PRIORITY = 1 << 20


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"{what} must be zero or more seconds, got {value!r}")
    return seconds


def _check_priority(priority: int) -> int:
    if not isinstance(priority, int) or not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be an integer between {-MAX_PRIORITY} and {MAX_PRIORITY}")
    return priority


def _check_dedup(key: str) -> str:
    if not key or len(key) > 512 or any(ch in key for ch in "{}") or not key.isprintable():
        raise ValueError(f"dedup key {key!r} must be 1 to 512 printable characters without braces")
    return key


def _check_group(key: str) -> str:
    if not key or len(key) > 256 or any(ch in key for ch in "{}") or not key.isprintable():
        raise ValueError(f"group key {key!r} must be 1 to 256 printable characters without braces")
    return key


def _check_retries(retries: int, name: str = "retries") -> int:
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {retries!r}")
    return retries


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """How jobs of a task run unless an enqueue says otherwise. Known to the worker."""

    queue: str = DEFAULT_QUEUE
    retries: int = DEFAULT_RETRIES
    backoff: backoff_policies.Backoff = field(default_factory=backoff_policies.Exponential)
    timeout: float | None = None
    priority: int = 0
    isolation: Literal["default", "process"] = "default"
    """``"process"``: each job runs in a child process, killed at its timeout or on abort."""
    max_deferrals: int = DEFAULT_MAX_DEFERRALS
    """How often a job may ask to come back later (``RetryAfter``) without spending an
    attempt; once more, and it fails for good (reason ``max_deferrals``)."""


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Per-enqueue overrides; ``None`` means "use the task's default"."""

    queue: str | None = None
    job_id: str | None = None
    delay: float | None = None
    run_at: datetime | None = None
    priority: int | None = None
    retries: int | None = None
    backoff: backoff_policies.Exponential | backoff_policies.Fixed | None = None
    timeout: float | None = None
    ttl: float | None = None
    """Seconds the job may wait to be started; after that it expires (failed, reason "expired")."""
    dedup: str | None = None
    """Deduplication key: an enqueue matching an existing job's key creates nothing."""
    dedup_window: float | None = None
    """Seconds the key holds after the first enqueue (throttle); None: while that job is unfinished."""
    debounce: bool = False
    """With ``dedup`` and ``dedup_window``: the job waits out the window, and a later enqueue
    with the same key within it replaces the waiting job (the last one wins)."""
    group: str | None = None
    """Group key (a tenant, a customer, an API host): groups are served round-robin and held
    to the queue's per-group limits (``set_limits(group_concurrency=, group_rate=)``)."""
    traceparent: str | None = None
    """W3C trace context of the enqueue (``00-<trace id>-<span id>-<flags>``), kept in the
    job's options under this name so that a producer in any language can set it; the
    worker's span of the job continues that trace (see :mod:`conveyor.tracing`)."""
    tracestate: str | None = None
    """The W3C ``tracestate`` that goes with ``traceparent``."""

    def stored(self) -> dict[str, Any]:
        """The overrides the worker must see, as they are kept in the job (only those given)."""
        out: dict[str, Any] = {}
        if self.traceparent is not None:
            out["traceparent"] = self.traceparent
            if self.tracestate:
                out["tracestate"] = self.tracestate
        if self.retries is not None:
            out["retries"] = self.retries
        if self.backoff is not None:
            out["backoff"] = self.backoff.to_dict()
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out


DEFAULT_OPTIONS = EnqueueOptions()


@dataclass(slots=True)  # not frozen: made once per job, and frozen init costs 3x
class TaskCall(Generic[R_co]):
    """One invocation of a task, ready to enqueue (``add.call(1, 2)``); used for bulk enqueue."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    options: EnqueueOptions = DEFAULT_OPTIONS


class Task(Generic[P, R]):
    """A function registered as a task. Calling it runs the function directly, in-process."""

    def __init__(
        self,
        function: Callable[P, R] | Callable[P, Awaitable[R]],
        name: str,
        defaults: TaskDefaults,
        options: EnqueueOptions | None = None,
    ) -> None:
        self.function = function
        self.name = name
        self.defaults = defaults
        self.enqueue_options = options = options or DEFAULT_OPTIONS
        # Where and how urgently a call of this task goes, worked out once: call() is made
        # for every job of a bulk enqueue.
        self._queue = options.queue or defaults.queue
        self._priority = defaults.priority if options.priority is None else options.priority
        self.is_async = inspect.iscoroutinefunction(function)
        self.cancellable = self.is_async or defaults.isolation == "process"
        """The worker can stop a running job of this task (cancel its coroutine or kill its
        process); a sync job in a thread can only be asked to stop."""
        self.__doc__ = function.__doc__
        self.__name__ = getattr(function, "__name__", name)
        self.__wrapped__ = function

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue}>"

    def with_options(
        self,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        retries: int | None = None,
        backoff: backoff_policies.Exponential | backoff_policies.Fixed | float | None = None,
        timeout: float | timedelta | None = None,
        ttl: float | timedelta | None = None,
        dedup: str | None = None,
        dedup_window: float | timedelta | None = None,
        debounce: bool | None = None,
        group: str | None = None,
    ) -> Task[P, R]:
        """A copy of this task whose enqueues use these options.

        ``client.enqueue(send.with_options(delay=60, priority=5), "hi")``. A higher
        ``priority`` runs first (default 0; negative ones after all others), FIFO within one
        priority. ``delay`` and
        ``run_at`` exclude each other; ``job_id`` makes the enqueue idempotent.
        """
        if delay is not None and run_at is not None:
            raise ValueError("give either delay or run_at, not both")
        if run_at is not None and run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware (for example datetime.now(UTC) + ...)")
        policy: backoff_policies.Exponential | backoff_policies.Fixed | None = None
        if backoff is not None:
            coerced = backoff_policies.coerce(backoff)
            if isinstance(coerced, backoff_policies.Custom):
                raise ValueError(
                    "a custom backoff function belongs on the task decorator, not on one enqueue"
                )
            policy = coerced
        current = self.enqueue_options
        options = replace(
            current,
            queue=validate_queue_name(queue) if queue is not None else current.queue,
            job_id=validate_job_id(job_id) if job_id is not None else current.job_id,
            delay=_seconds(delay, "delay") if delay is not None else current.delay,
            run_at=run_at if run_at is not None else current.run_at,
            priority=_check_priority(priority) if priority is not None else current.priority,
            retries=_check_retries(retries) if retries is not None else current.retries,
            backoff=policy or current.backoff,
            timeout=_seconds(timeout, "timeout") if timeout is not None else current.timeout,
            ttl=_seconds(ttl, "ttl") if ttl is not None else current.ttl,
            dedup=_check_dedup(dedup) if dedup is not None else current.dedup,
            dedup_window=_seconds(dedup_window, "dedup_window")
            if dedup_window is not None
            else current.dedup_window,
            debounce=debounce if debounce is not None else current.debounce,
            group=_check_group(group) if group is not None else current.group,
        )
        if options.debounce and not (options.dedup and options.dedup_window):
            raise ValueError("debounce needs dedup= (the key) and dedup_window= (the quiet period)")
        return Task(self.function, self.name, self.defaults, options)

    def call(self, *args: P.args, **kwargs: P.kwargs) -> TaskCall[R]:
        """Describe one invocation for ``enqueue_many``, with this task's options."""
        return TaskCall(self.name, args, kwargs, self._queue, self._priority, self.enqueue_options)


# The async overloads take ``Coroutine[Any, Any, R]``, not ``Awaitable[R]``: an async
# function also matches the sync overload (with R the coroutine), and when its signature
# holds an ``Any`` (``-> dict``, ``-> dict[str, Any]``, a parameter typed ``Any``) mypy calls
# two matches with different argument types ambiguous and answers ``Task[Any, Any]``,
# which type-checks every enqueue. With ``Coroutine`` both matches take the same argument
# type, which mypy does not call ambiguous: it picks the first. (Only coroutine functions
# run as async jobs anyway: a sync function returning an awaitable runs in a thread.)
class _Decorator(Protocol):
    @overload
    def __call__(self, function: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, function: Callable[P, R], /) -> Task[P, R]: ...


class Tasks:
    """A registry of tasks: what ``conveyor worker module:tasks`` serves.

    ::

        tasks = Tasks()

        @tasks.task(retries=5, timeout=30)
        async def send_email(to: str) -> None: ...
    """

    def __init__(self, *, queue: str = DEFAULT_QUEUE) -> None:
        self.default_queue = validate_queue_name(queue)
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._schedules: dict[str, Any] = {}
        self.startup: list[Callable[[], Any]] = []
        self.shutdown: list[Callable[[], Any]] = []

    def on_startup(self, function: Lifecycle) -> Lifecycle:
        """Run ``function`` (sync or async, no arguments) in each worker process before it
        claims its first job: to open what the tasks share (a database pool). If it raises,
        the worker stops before claiming anything. In registration order; usable as a
        decorator."""
        self.startup.append(function)
        return function

    def on_shutdown(self, function: Lifecycle) -> Lifecycle:
        """Run ``function`` (sync or async, no arguments) in each worker process once its last
        job finished or was handed back, before it exits: to close what the tasks share. An
        exception is logged and the other functions still run. In reverse registration order
        (what was opened first is closed last); usable as a decorator."""
        self.shutdown.append(function)
        return function

    @overload
    def task(self, function: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, function: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: backoff_policies.Backoff
        | float
        | Callable[[int, BaseException | None], float]
        | None = None,
        timeout: float | timedelta | None = None,
        priority: int = 0,
        cron: str | None = None,
        every: float | timedelta | None = None,
        timezone: str = "UTC",
        missed: str = "skip",
        isolation: Literal["default", "process"] = "default",
        max_deferrals: int = DEFAULT_MAX_DEFERRALS,
    ) -> _Decorator: ...

    def task(  # ``function`` is not positional-only: mypy 2 rejects that overload implementation
        self,
        function: Any = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: Any = None,
        timeout: Any = None,
        priority: int = 0,
        cron: str | None = None,
        every: float | timedelta | None = None,
        timezone: str = "UTC",
        missed: str = "skip",
        isolation: Literal["default", "process"] = "default",
        max_deferrals: int = DEFAULT_MAX_DEFERRALS,
    ) -> Any:
        """Register a function (sync or async) as a task. Usable with or without arguments.

        ``cron="*/5 * * * *"`` (with ``timezone=``) or ``every=timedelta(minutes=5)`` also
        makes it a repeatable job, run without arguments by the workers of its queue;
        ``missed="run_once"`` makes up for ticks missed while no worker ran (default: skip).
        ``isolation="process"`` runs each job in a child process that is killed at the job's
        timeout or when it is aborted (see :mod:`conveyor.worker.isolation`).
        ``max_deferrals`` caps how often a job may raise ``RetryAfter`` (which does not spend
        an attempt) before it fails for good; default 50.
        """
        if isolation not in ("default", "process"):
            raise ValueError("isolation must be 'default' or 'process'")
        defaults = TaskDefaults(
            queue=validate_queue_name(queue) if queue is not None else self.default_queue,
            retries=_check_retries(retries),
            backoff=backoff_policies.coerce(backoff)
            if backoff is not None
            else backoff_policies.Exponential(),
            timeout=_seconds(timeout, "timeout"),
            priority=_check_priority(priority),
            isolation=isolation,
            max_deferrals=_check_retries(max_deferrals, "max_deferrals"),
        )

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or fn.__name__
            if task_name in self._tasks and self._tasks[task_name].function is not fn:
                raise ValueError(f"a different task is already registered as {task_name!r}; pass name=")
            if defaults.isolation == "process":
                from .worker.isolation import check_importable

                check_importable(fn, task_name)
            registered: Task[Any, Any] = Task(fn, task_name, defaults)
            self._tasks[task_name] = registered
            if cron is not None or every is not None:
                from .schedules import Schedule

                self._schedules[task_name] = Schedule(
                    name=task_name,
                    task=task_name,
                    queue=defaults.queue,
                    cron=cron,
                    every=_seconds(every, "every"),
                    timezone=timezone,
                    missed=missed,  # type: ignore[arg-type]
                    priority=defaults.priority,
                )
            return registered

        return register(function) if function is not None else register

    def get(self, name: str) -> Task[Any, Any]:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(
                f"no task named {name!r} is registered with this worker "
                f"(known: {', '.join(sorted(self._tasks)) or 'none'})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task[Any, Any]]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def schedules(self) -> dict[str, list[Any]]:
        """The repeatable jobs declared on tasks (``cron=``/``every=``), by queue."""
        out: dict[str, list[Any]] = {}
        for schedule in self._schedules.values():
            out.setdefault(schedule.queue, []).append(schedule)
        return out

    @property
    def queues(self) -> list[str]:
        """The queues this registry's tasks go to, the registry's default queue first."""
        seen = [self.default_queue]
        for task in self._tasks.values():
            if task.defaults.queue not in seen:
                seen.append(task.defaults.queue)
        return seen
