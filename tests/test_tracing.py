"""Tracing (conveyor.tracing): an enqueue and the runs of its job are one trace.

Spans are recorded with the OpenTelemetry SDK's in-memory exporter; the jobs go through the
session's real server and a real worker in this event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import AsyncClient, Fixed, Tasks, tracing
from conveyor.errors import ConfigurationError
from conveyor.task import EnqueueOptions, TaskCall

from helpers import running_worker, wait_until


class Recorder:
    """The spans a tracer provider finished, with a tracer of the test's own from it."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self, kind: SpanKind | None = None, name: str | None = None) -> list[ReadableSpan]:
        return [
            span
            for span in self.exporter.get_finished_spans()
            if (kind is None or span.kind is kind) and (name is None or span.name == name)
        ]

    async def wait_for(self, count: int, kind: SpanKind) -> list[ReadableSpan]:
        """The spans of ``kind`` once ``count`` of them ended (a consumer span ends when its
        job's task is done, which can be just after the client saw the result)."""
        await wait_until(lambda: len(self.spans(kind)) >= count, timeout=5)
        return sorted(self.spans(kind), key=lambda span: span.start_time or 0)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    monkeypatch.delenv(tracing.ENV_VARIABLE, raising=False)
    recorder = Recorder()
    tracing.instrument(recorder.provider)
    yield recorder
    tracing.uninstrument()
    recorder.provider.shutdown()


def _traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_enqueue_and_run_are_one_trace(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, recorder: Recorder
) -> None:
    @tasks.task
    async def add(x: int, y: int) -> int:
        return x + y

    with recorder.tracer.start_as_current_span("request") as request:
        handle = await aclient.enqueue(add, 2, 3)
    async with running_worker(tasks, url):
        assert await handle.result(timeout=5) == 5
        [consumer] = await recorder.wait_for(1, SpanKind.CONSUMER)
    [producer] = recorder.spans(SpanKind.PRODUCER)

    assert producer.name == f"publish {queue}"
    assert producer.parent is not None and producer.parent.span_id == request.get_span_context().span_id
    assert _attributes(producer) == {
        "messaging.system": "conveyor",
        "messaging.destination.name": queue,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.message.id": handle.id,
        "conveyor.task": "add",
        "conveyor.enqueue.outcome": "created",
    }
    assert consumer.name == f"process {queue}"
    assert consumer.context is not None and producer.context is not None
    assert consumer.context.trace_id == producer.context.trace_id == request.get_span_context().trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.parent.is_remote, "the consumer continues a context that came through Redis"
    assert _attributes(consumer) == {
        "messaging.system": "conveyor",
        "messaging.destination.name": queue,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": handle.id,
        "conveyor.task": "add",
        "conveyor.attempt": 1,
        "conveyor.outcome": "completed",
    }
    assert not consumer.links, "a first attempt has its producer as parent, no link"
    assert consumer.status.status_code is StatusCode.UNSET
    job = await handle.fetch()
    assert job.options["traceparent"] == _traceparent(producer)


async def test_a_retried_job_has_a_span_per_attempt_linked_to_the_enqueue(
    aclient: AsyncClient, tasks: Tasks, url: str, recorder: Recorder
) -> None:
    runs: list[int] = []

    @tasks.task(retries=2, backoff=Fixed(0))
    async def flaky() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("the first call fails")
        return "ok"

    handle = await aclient.enqueue(flaky)
    async with running_worker(tasks, url):
        assert await handle.result(timeout=5) == "ok"
        first, second = await recorder.wait_for(2, SpanKind.CONSUMER)
    [producer] = recorder.spans(SpanKind.PRODUCER)
    assert producer.context is not None

    for attempt, span in enumerate((first, second), start=1):
        assert span.context is not None and span.context.trace_id == producer.context.trace_id
        assert span.parent is not None and span.parent.span_id == producer.context.span_id
        assert _attributes(span)["conveyor.attempt"] == attempt
    assert first.status.status_code is StatusCode.ERROR
    assert _attributes(first)["conveyor.outcome"] == "retrying"
    assert _attributes(first)["error.type"] == "ConnectionError"
    [event] = first.events
    assert (
        event.name == "exception" and (event.attributes or {})["exception.message"] == "the first call fails"
    )
    assert not first.links
    assert second.status.status_code is StatusCode.UNSET
    assert _attributes(second)["conveyor.outcome"] == "completed"
    [link] = second.links
    assert link.context.span_id == producer.context.span_id
    assert link.context.trace_id == producer.context.trace_id


async def test_a_job_failed_for_good_has_status_error(
    aclient: AsyncClient, tasks: Tasks, url: str, recorder: Recorder
) -> None:
    @tasks.task(retries=0)
    def broken() -> None:
        raise ValueError("bad input")

    handle = await aclient.enqueue(broken)
    async with running_worker(tasks, url):
        [span] = await recorder.wait_for(1, SpanKind.CONSUMER)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: bad input"
    assert _attributes(span)["conveyor.outcome"] == "failed"
    assert [event.name for event in span.events] == ["exception"]
    assert (await handle.fetch()).error is not None


async def test_spans_made_inside_tasks_nest_under_the_job_span(
    aclient: AsyncClient, tasks: Tasks, url: str, recorder: Recorder
) -> None:
    threads: list[str] = []

    @tasks.task
    def sync_step() -> None:
        threads.append(threading.current_thread().name)
        with recorder.tracer.start_as_current_span("sync work"):
            pass

    @tasks.task
    async def async_step() -> None:
        with recorder.tracer.start_as_current_span("async work"):
            await asyncio.sleep(0)

    sync_handle = await aclient.enqueue(sync_step)
    async_handle = await aclient.enqueue(async_step)
    async with running_worker(tasks, url):
        await sync_handle.result(timeout=5)
        await async_handle.result(timeout=5)
        consumers = await recorder.wait_for(2, SpanKind.CONSUMER)
    assert threads[0].startswith("conveyor-job"), "the sync task ran in the worker's thread pool"
    by_job = {_attributes(span)["messaging.message.id"]: span for span in consumers}
    for handle, name in ((sync_handle, "sync work"), (async_handle, "async work")):
        [inner] = recorder.spans(name=name)
        job_span = by_job[handle.id]
        assert job_span.context is not None and inner.context is not None
        assert inner.parent is not None and inner.parent.span_id == job_span.context.span_id, name
        assert inner.context.trace_id == job_span.context.trace_id


async def test_a_cancelled_job_and_one_handed_back_at_shutdown_say_so(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, recorder: Recorder
) -> None:
    started = asyncio.Event()

    @tasks.task
    async def long() -> None:
        started.set()
        await asyncio.sleep(60)

    cancelled = await aclient.enqueue(long)
    async with running_worker(tasks, url, lease=1.0):
        await asyncio.wait_for(started.wait(), 5)
        assert await aclient.cancel(queue, cancelled.id) == "aborting"
        [span] = await recorder.wait_for(1, SpanKind.CONSUMER)
    assert _attributes(span)["conveyor.outcome"] == "cancelled"
    assert span.status.status_code is StatusCode.UNSET, "a cancellation is no failure of the job"

    started.clear()
    handed_back = await aclient.enqueue(long)
    async with running_worker(tasks, url, shutdown_grace=0.1):
        await asyncio.wait_for(started.wait(), 5)
    spans = await recorder.wait_for(2, SpanKind.CONSUMER)
    [span] = [s for s in spans if _attributes(s)["messaging.message.id"] == handed_back.id]
    assert _attributes(span)["conveyor.outcome"] == "handed_back"


async def test_a_bulk_enqueue_is_one_producer_span(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, recorder: Recorder
) -> None:
    @tasks.task
    async def square(x: int) -> int:
        return x * x

    handles = await aclient.enqueue_many([square.call(i) for i in range(3)])
    async with running_worker(tasks, url):
        assert [await h.result(timeout=5) for h in handles] == [0, 1, 4]
        consumers = await recorder.wait_for(3, SpanKind.CONSUMER)
    [producer] = recorder.spans(SpanKind.PRODUCER)
    assert producer.context is not None
    assert _attributes(producer)["messaging.batch.message_count"] == 3
    assert _attributes(producer)["conveyor.task"] == "square"
    assert "messaging.message.id" not in _attributes(producer)
    assert sorted(_attributes(span)["messaging.message.id"] for span in consumers) == sorted(
        h.id for h in handles
    )
    assert all(span.parent and span.parent.span_id == producer.context.span_id for span in consumers)


async def test_a_traceparent_from_another_producer_is_continued(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, recorder: Recorder
) -> None:
    """A job written by a producer that does not trace with Conveyor (another language, the
    HTTP API handed a traceparent) carries its context in the options: the worker joins it."""

    @tasks.task
    async def noop() -> None:
        return None

    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    options = EnqueueOptions(traceparent=f"00-{trace_id}-{span_id}-01", tracestate="vendor=1")
    tracing.uninstrument()  # the producer does not trace
    [handle] = await aclient.enqueue_many([TaskCall[None]("noop", (), {}, queue, 0, options)])
    job = await handle.fetch()
    assert job.options == {"traceparent": f"00-{trace_id}-{span_id}-01", "tracestate": "vendor=1"}

    tracing.instrument(recorder.provider)  # the worker does
    async with running_worker(tasks, url):
        await handle.result(timeout=5)
        [consumer] = await recorder.wait_for(1, SpanKind.CONSUMER)
    assert consumer.context is not None and format(consumer.context.trace_id, "032x") == trace_id
    assert consumer.parent is not None and format(consumer.parent.span_id, "016x") == span_id
    assert consumer.context.trace_state.get("vendor") == "1"
    assert recorder.spans(SpanKind.PRODUCER) == []


async def test_a_producer_span_continues_a_traceparent_given_with_the_call(
    aclient: AsyncClient, queue: str, recorder: Recorder
) -> None:
    trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    options = EnqueueOptions(traceparent=f"00-{trace_id}-{span_id}-01")
    [handle] = await aclient.enqueue_many([TaskCall[None]("anything", (), {}, queue, 0, options)])
    [producer] = recorder.spans(SpanKind.PRODUCER)
    assert producer.context is not None and format(producer.context.trace_id, "032x") == trace_id
    assert producer.parent is not None and format(producer.parent.span_id, "016x") == span_id
    assert (await handle.fetch()).options["traceparent"] == _traceparent(producer)


async def test_an_undeliverable_job_gets_a_failed_span(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, recorder: Recorder
) -> None:
    @tasks.task
    async def known() -> None:
        return None

    [handle] = await aclient.enqueue_many([TaskCall[None]("not_registered", (), {}, queue)])
    async with running_worker(tasks, url):
        [span] = await recorder.wait_for(1, SpanKind.CONSUMER)
    assert _attributes(span)["messaging.message.id"] == handle.id
    assert _attributes(span)["error.type"] == "UnknownTask"
    assert span.status.status_code is StatusCode.ERROR


async def test_tracing_off_makes_no_spans_and_stores_no_context(
    aclient: AsyncClient, tasks: Tasks, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(tracing.ENV_VARIABLE, raising=False)
    assert tracing.active is None
    recorder = Recorder()  # the application traces; Conveyor was not asked to
    parents: list[Any] = []

    @tasks.task
    def work() -> None:
        with recorder.tracer.start_as_current_span("inside") as span:
            parents.append(span.parent)  # type: ignore[attr-defined]

    with recorder.tracer.start_as_current_span("request"):
        handle = await aclient.enqueue(work)
    async with running_worker(tasks, url):
        await handle.result(timeout=5)
    assert (await handle.fetch()).options == {}, "no traceparent written into the job"
    assert recorder.spans(SpanKind.PRODUCER) == recorder.spans(SpanKind.CONSUMER) == []
    assert parents == [None], "no job span around the task: its span starts a trace of its own"
    assert tracing.current_ids() is None


def test_the_environment_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "active", None)
    assert tracing.from_env({"CONVEYOR_TRACING": "0"}) is None
    assert tracing.from_env({}) is None
    with pytest.raises(ConfigurationError, match="CONVEYOR_TRACING"):
        tracing.from_env({"CONVEYOR_TRACING": "maybe"})
    on = tracing.from_env({"CONVEYOR_TRACING": "true"})
    assert on is not None and tracing.active is on
    assert tracing.from_env({"CONVEYOR_TRACING": "1"}) is on, "already on: the same tracing"
    assert tracing.from_env({}) is on, "an unset variable leaves instrument() alone"
