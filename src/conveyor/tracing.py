"""Tracing with OpenTelemetry: a producer span per enqueue, a consumer span per attempt.

Off unless asked for, as Celery's instrumentation is: ``conveyor.tracing.instrument()`` (or
``CONVEYOR_TRACING=1`` in the environment of a process when it makes a client or starts a
worker) turns it on for the whole process, with the global tracer provider or the one given.
Needs ``pip install 'conveyor[otel]'``. While it is off, Conveyor imports nothing of
OpenTelemetry, writes no trace context into jobs, and pays an ``is None`` check per enqueue
and a few per job: ``opentelemetry-api`` is often installed anyway (FastAPI depends on it),
so its presence alone turns nothing on.

While it is on:

* an enqueue starts a ``publish <queue>`` span (kind PRODUCER; one span per queue for a bulk
  enqueue) whose W3C trace context travels inside the job: ``traceparent`` and
  ``tracestate`` in the job's options, the JSON every producer writes, so that a producer in
  another language (or the HTTP API, handed a ``traceparent``) can set them too. A job whose
  options already carry a ``traceparent`` gets a producer span that continues that trace;
* each attempt of a job runs in a ``process <queue>`` span (kind CONSUMER), a child of the
  producer span: the whole life of a job, retries included, is one trace. An attempt after
  the first also links to the producer span, which marks it as a re-delivery of the same
  message. The span is current in the job's asyncio task and, for a sync task, in its
  thread, so the task's own spans nest under it and its log lines carry its ids (see
  :mod:`conveyor.cli.logs`). It ends when the attempt's outcome is known, with the error
  recorded and status ERROR when the attempt failed; ``conveyor.outcome`` says which end it
  came to (completed, retrying, deferred, failed, cancelled, fenced, handed_back).

The attributes follow OpenTelemetry's semantic conventions for messaging:
``messaging.system`` ``"conveyor"``, ``messaging.destination.name`` the queue,
``messaging.operation.type`` ``"send"`` or ``"process"`` (``"send"`` is what the conventions
now call what they used to call ``"publish"``), ``messaging.operation.name`` ``"publish"`` or
``"process"``, ``messaging.message.id`` the job id, with ``conveyor.task`` and
``conveyor.attempt``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import serialization
from .errors import ConfigurationError, RetryAfter
from .task import EnqueueOptions, TaskCall

if TYPE_CHECKING:
    import asyncio

    from opentelemetry.trace import Span, TracerProvider

    from .ops.enqueue import Enqueued
    from .ops.lifecycle import Claimed
    from .worker.outcome import Prepared

__all__ = ["Tracing", "current_ids", "from_env", "instrument", "uninstrument"]

_log = logging.getLogger("conveyor.worker")

SYSTEM = "conveyor"
ENV_VARIABLE = "CONVEYOR_TRACING"
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")

active: Tracing | None = None
"""The process's tracing while it is on, else None. One per process, as OpenTelemetry's own
providers are: a producer reads it on every enqueue, so that ``instrument()`` called after a
client was made still applies; a worker reads it once, when it starts running jobs."""


def instrument(tracer_provider: TracerProvider | None = None) -> Tracing:
    """Trace enqueues and jobs in this process from now on, with ``tracer_provider`` (default:
    the global one, even one set after this call).

    Call it once at start-up, before the worker runs; calling it again replaces the provider.
    Raises ``ImportError`` when OpenTelemetry is not installed (``pip install 'conveyor[otel]'``).
    """
    global active
    active = Tracing(tracer_provider)
    return active


def uninstrument() -> None:
    """Stop tracing new enqueues, and the jobs of workers started from now on."""
    global active
    active = None


def from_env(environ: Mapping[str, str] | None = None) -> Tracing | None:
    """Turn tracing on if ``CONVEYOR_TRACING`` asks for it and it is not on yet; the tracing
    now in force. Clients and workers call it when they are made: a variable that is unset,
    empty or false leaves alone what ``instrument()`` or ``uninstrument()`` set."""
    raw = (os.environ if environ is None else environ).get(ENV_VARIABLE, "").strip().lower()
    if raw in _OFF or active is not None:
        return active
    if raw not in _ON:
        raise ConfigurationError(f"{ENV_VARIABLE} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")
    try:
        return instrument()
    except ImportError as exc:
        raise ConfigurationError(
            f"{ENV_VARIABLE} is set but OpenTelemetry is not installed ({exc}): "
            "pip install 'conveyor[otel]', or unset the variable"
        ) from None


def current_ids() -> tuple[str, str] | None:
    """The current trace id and span id in hex, while tracing is on and a span is current."""
    return None if active is None else active.current_ids()


@dataclass(slots=True)
class _Attempt:
    """The span of one running attempt, and how the attempt failed, if it did."""

    span: Span
    outcome: str | None = None


class Tracing:
    """The spans of enqueues and jobs: made by :func:`instrument`, used by clients and workers."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        # Imported here, not at the top: while tracing is off, OpenTelemetry is never loaded.
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from . import __version__

        self._trace = trace
        self._context = context
        self._tracer = trace.get_tracer(SYSTEM, __version__, tracer_provider=tracer_provider)
        # W3C trace context, not the global propagator: the job's fields are a wire format
        # that producers and workers in other languages read, whatever this process uses.
        self._propagator = TraceContextTextMapPropagator()
        self._attempts: dict[str, _Attempt] = {}
        """Running attempts by fencing token (unique per attempt), on the worker's loop."""

    # ------------------------------------------------------------------ producing
    def enqueue(
        self,
        calls: Sequence[TaskCall[Any]],
        write: Callable[[Sequence[TaskCall[Any]]], Generator[Any, Any, list[Enqueued]]],
    ) -> Generator[Any, Any, list[Enqueued]]:
        """``write(calls)`` inside producer spans, each call carrying its span's context.

        One span per queue (and per trace context a call brought along), not per job: a bulk
        enqueue of 10,000 jobs is one operation, and its jobs share the span as their parent.
        """
        spans: list[Span] = []
        groups: dict[tuple[str, str | None, str | None], tuple[int, str | None, str | None]] = {}
        members: list[int] = []
        traced: list[TaskCall[Any]] = []
        # The calls of a bulk mostly share one options object (their task's): copied once.
        with_context: dict[tuple[int, int], EnqueueOptions] = {}
        for call in calls:
            options = call.options
            key = (call.queue, options.traceparent, options.tracestate)
            group = groups.get(key)
            if group is None:
                span = self._producer_span(call)
                carrier: dict[str, str] = {}
                self._propagator.inject(carrier, self._trace.set_span_in_context(span))
                group = groups[key] = (len(spans), carrier.get("traceparent"), carrier.get("tracestate"))
                spans.append(span)
            index, traceparent, tracestate = group
            members.append(index)
            if traceparent is not None:  # none from a provider that records nothing
                carried = with_context.get((index, id(options)))
                if carried is None:
                    carried = replace(options, traceparent=traceparent, tracestate=tracestate)
                    with_context[index, id(options)] = carried
                call = TaskCall(call.task, call.args, call.kwargs, call.queue, call.priority, carried)
            traced.append(call)
        try:
            results = yield from write(traced)
        except BaseException as exc:
            if isinstance(exc, Exception):  # not when the operation was merely abandoned
                for span in spans:
                    self._fail(span, exc)
            for span in spans:
                span.end()
            raise
        self._describe(spans, members, traced, results)
        for span in spans:
            span.end()
        return results

    def _producer_span(self, call: TaskCall[Any]) -> Span:
        options = call.options
        parent = None  # the caller's current context
        if options.traceparent is not None:  # a trace context handed over with the call
            carrier = {"traceparent": options.traceparent}
            if options.tracestate:
                carrier["tracestate"] = options.tracestate
            parent = self._propagator.extract(carrier)
        return self._tracer.start_span(
            f"publish {call.queue}",
            context=parent,
            kind=self._trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": call.queue,
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
            },
        )

    @staticmethod
    def _describe(
        spans: list[Span], members: list[int], calls: Sequence[TaskCall[Any]], results: list[Enqueued]
    ) -> None:
        """What only the write could tell: the job ids, and whether a job was made."""
        per_span: list[list[int]] = [[] for _ in spans]
        for position, index in enumerate(members):
            per_span[index].append(position)
        for span, positions in zip(spans, per_span, strict=True):
            if len(positions) == 1:
                [position] = positions
                span.set_attributes(
                    {
                        "messaging.message.id": results[position].id,
                        "conveyor.task": calls[position].task,
                        "conveyor.enqueue.outcome": str(results[position].outcome),
                    }
                )
            else:
                span.set_attribute("messaging.batch.message_count", len(positions))
                tasks = {calls[position].task for position in positions}
                if len(tasks) == 1:
                    span.set_attribute("conveyor.task", tasks.pop())

    # ------------------------------------------------------------------ consuming
    def begin(self, queue: str, claimed: Claimed) -> None:
        """Start the span of an attempt and make it current in the caller's context: the
        runner calls this in a context of the job's own, before it starts the job's task
        (which copies that context) and the thread of a sync task (which is handed a copy)."""
        span = self._consumer_span(queue, claimed)
        self._attempts[claimed.token] = _Attempt(span)
        # Never detached: the context is the job's own copy, dropped with the job.
        self._context.attach(self._trace.set_span_in_context(span))

    def watch(self, claimed: Claimed, job: Prepared, running: asyncio.Future[Any]) -> None:
        """End the attempt's span when ``running`` (the job's asyncio task) is done."""
        running.add_done_callback(lambda done: self._end(claimed.token, job, done))

    def failed(self, job: Prepared, exc: BaseException, delay_ms: int) -> None:
        """The attempt failed with ``exc``: retried in ``delay_ms`` ms, or never when negative."""
        attempt = self._attempts.get(job.claimed.token)
        if attempt is None:
            return
        if isinstance(exc, RetryAfter):  # asked to come back later: not an error
            attempt.outcome = "deferred"
            return
        attempt.outcome = "retrying" if delay_ms >= 0 else "failed"
        self._fail(attempt.span, exc)

    def undeliverable(self, queue: str, claimed: Claimed, exc: BaseException) -> None:
        """The job cannot run here (an unknown task, a payload that does not decode)."""
        span = self._consumer_span(queue, claimed)
        span.set_attribute("conveyor.outcome", "failed")
        self._fail(span, exc, getattr(exc, "kind", None))  # UnknownTask, PayloadDecodeError
        span.end()

    def _consumer_span(self, queue: str, claimed: Claimed) -> Span:
        parent = self._context.Context()  # no producer context: the attempt starts a trace
        links = None
        carrier = _carrier(claimed.options)
        if carrier is not None:
            parent = self._propagator.extract(carrier, context=parent)
            producer = self._trace.get_current_span(parent).get_span_context()
            if claimed.attempts > 1 and producer.is_valid:
                links = [self._trace.Link(producer)]
        return self._tracer.start_span(
            f"process {queue}",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": queue,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.message.id": claimed.id,
                "conveyor.task": claimed.task,
                "conveyor.attempt": claimed.attempts,
            },
        )

    def _end(self, token: str, job: Prepared, running: asyncio.Future[Any]) -> None:
        attempt = self._attempts.pop(token, None)
        if attempt is None:
            return
        span = attempt.span
        if job.fenced:
            outcome = "fenced"  # a newer attempt owns the job; this one recorded nothing
        elif attempt.outcome is not None:
            outcome = attempt.outcome
        elif job.aborted:
            outcome = "cancelled"
        elif running.cancelled():
            outcome = "handed_back"  # the worker stopped; the job went back to waiting
        elif (error := running.exception()) is not None:  # the runner itself failed
            outcome = "error"
            self._fail(span, error)
            # Retrieving the error kept asyncio from logging it when the task is collected.
            _log.error("job %s/%s: its task failed", job.queue, job.claimed.id, exc_info=error)
        else:
            outcome = "completed"
        span.set_attribute("conveyor.outcome", outcome)
        span.end()

    def _fail(self, span: Span, exc: BaseException, name: str | None = None) -> None:
        """Record ``exc`` on ``span`` and mark the span failed; ``error.type`` is ``name``, or
        the exception's class qualified by its module unless it is a builtin."""
        kind = type(exc)
        if name is None:
            module = kind.__module__
            name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
        span.set_attribute("error.type", name)
        span.record_exception(exc)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"{kind.__name__}: {exc}"))

    # ------------------------------------------------------------------ logs
    def current_ids(self) -> tuple[str, str] | None:
        """The current trace id and span id in hex, as trace backends write them."""
        context = self._trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _carrier(options: str) -> dict[str, str] | None:
    """The W3C trace context in a job's options JSON, if it has one.

    The worker decoded the options already (:func:`~conveyor.worker.outcome.prepare`) but
    keeps only what it runs the job with; decoding them again costs only traced jobs.
    """
    if not options or "traceparent" not in options:
        return None
    try:
        decoded = serialization.loads(options)
    except ValueError:
        return None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("traceparent"), str):
        return None
    carrier = {"traceparent": decoded["traceparent"]}
    if isinstance(decoded.get("tracestate"), str):
        carrier["tracestate"] = decoded["tracestate"]
    return carrier
