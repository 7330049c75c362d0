"""Log lines name the job they were logged in, and its trace (conveyor.cli.logs).

A real worker runs tasks that log on a logger of their own, from the event loop (async) and
from the thread pool (sync); the lines go through the CLI's formatters and filter.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conveyor import AsyncClient, Tasks, tracing
from conveyor.cli import logs
from conveyor.context import set_current

from helpers import running_worker, wait_until

app_log = logging.getLogger("app.jobs")


def _tasks_that_log(tasks: Tasks) -> tuple[Any, Any]:
    @tasks.task
    async def async_logs(n: int) -> None:
        app_log.info("async task says %d", n)

    @tasks.task
    def sync_logs(n: int) -> None:
        app_log.info("sync task says %d", n)

    return async_logs, sync_logs


class Capture:
    """A handler as ``conveyor worker`` makes it, on the app's logger and Conveyor's."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(logs.JobContextFilter())
        self._loggers = [logging.getLogger("app"), logging.getLogger("conveyor")]
        self._levels = [logger.level for logger in self._loggers]

    def __enter__(self) -> Capture:
        for logger in self._loggers:
            logger.addHandler(self.handler)
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        for logger, level in zip(self._loggers, self._levels, strict=True):
            logger.removeHandler(self.handler)
            logger.setLevel(level)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.delenv(tracing.ENV_VARIABLE, raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(provider)
    yield exporter
    tracing.uninstrument()
    provider.shutdown()


async def _job_spans(exporter: InMemorySpanExporter, count: int) -> dict[str, ReadableSpan]:
    """The consumer spans by job id, once ``count`` of them ended."""

    def consumers() -> list[ReadableSpan]:
        return [span for span in exporter.get_finished_spans() if span.kind is SpanKind.CONSUMER]

    await wait_until(lambda: len(consumers()) >= count, timeout=5)
    return {str((span.attributes or {})["messaging.message.id"]): span for span in consumers()}


def _ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


async def _run_both(
    aclient: AsyncClient,
    tasks: Tasks,
    url: str,
    spans: InMemorySpanExporter,
    formatter: logging.Formatter,
    completed: str,
) -> tuple[Capture, Any, Any, dict[str, ReadableSpan]]:
    """Run one async and one sync job that log, capturing the lines in ``formatter``'s form
    until the worker logged both completions (lines holding ``completed``)."""
    async_logs, sync_logs = _tasks_that_log(tasks)
    with Capture(formatter) as capture:
        a = await aclient.enqueue(async_logs, 1)
        s = await aclient.enqueue(sync_logs, 2)
        async with running_worker(tasks, url):
            await a.result(timeout=5)
            await s.result(timeout=5)
            by_job = await _job_spans(spans, 2)
            await wait_until(lambda: sum(completed in line for line in capture.lines()) == 2)
    return capture, a, s, by_job


async def test_json_lines_from_async_and_sync_tasks_carry_the_job_and_trace(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, spans: InMemorySpanExporter
) -> None:
    capture, a, s, by_job = await _run_both(
        aclient, tasks, url, spans, logs.JsonFormatter(), '"event": "completed"'
    )
    records = capture.records()
    for handle, task, message in (
        (a, "async_logs", "async task says 1"),
        (s, "sync_logs", "sync task says 2"),
    ):
        trace_id, span_id = _ids(by_job[handle.id])
        [line] = [r for r in records if r["message"] == message]
        assert line["logger"] == "app.jobs"
        assert (line["job_id"], line["queue"], line["task"], line["attempt"]) == (handle.id, queue, task, 1)
        assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)
        # The worker's own line about the job, logged on the event loop, has them too.
        [done] = [r for r in records if r.get("event") == "completed" and r["job_id"] == handle.id]
        assert (done["trace_id"], done["span_id"]) == (trace_id, span_id)
    outside = [r for r in records if "job_id" not in r]
    assert all("trace_id" not in r for r in outside), "no ids on lines logged outside a job"


async def test_text_lines_name_the_job_and_trace_at_the_end(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, spans: InMemorySpanExporter
) -> None:
    text = logs.TextFormatter()
    capture, a, s, by_job = await _run_both(aclient, tasks, url, spans, text, " completed in ")
    lines = capture.lines()
    for handle, task, message in (
        (a, "async_logs", "async task says 1"),
        (s, "sync_logs", "sync task says 2"),
    ):
        trace_id, _ = _ids(by_job[handle.id])
        [line] = [line for line in lines if message in line]
        assert line.endswith(
            f"app.jobs: {message} [job={queue}/{handle.id} task={task} attempt=1 trace={trace_id}]"
        )
        [done] = [line for line in lines if f"{handle.id} {task} (attempt 1) completed in" in line]
        assert done.endswith(f" ms [trace={trace_id}]"), "the message names the job already"


async def test_without_tracing_lines_still_name_the_job(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(tracing.ENV_VARIABLE, raising=False)
    assert tracing.active is None
    async_logs, sync_logs = _tasks_that_log(tasks)
    json_capture, text_capture = Capture(logs.JsonFormatter()), Capture(logs.TextFormatter())
    with json_capture, text_capture:
        a = await aclient.enqueue(async_logs, 1)
        s = await aclient.enqueue(sync_logs, 2)
        async with running_worker(tasks, url):
            await a.result(timeout=5)
            await s.result(timeout=5)
    records = json_capture.records()
    for handle, message in ((a, "async task says 1"), (s, "sync task says 2")):
        [line] = [r for r in records if r["message"] == message]
        assert line["job_id"] == handle.id and line["attempt"] == 1
        assert "trace_id" not in line and "span_id" not in line
    [text] = [line for line in text_capture.lines() if "sync task says 2" in line]
    assert text.endswith(f"[job={queue}/{s.id} task=sync_logs attempt=1]")


def test_extra_fields_given_by_the_caller_win() -> None:
    def record(**extra: Any) -> logging.LogRecord:
        made = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", (), None)
        made.__dict__.update(extra)  # what extra= does
        logs.JobContextFilter().filter(made)
        return made

    def in_a_job() -> tuple[logging.LogRecord, logging.LogRecord]:
        running = SimpleNamespace(
            queue="q", claimed=SimpleNamespace(id="j1", attempts=2), task=SimpleNamespace(name="t")
        )
        set_current(running)
        return record(), record(job_id="mine", queue="elsewhere")

    plain, given = contextvars.copy_context().run(in_a_job)
    assert (plain.__dict__["job_id"], plain.__dict__["queue"], plain.__dict__["attempt"]) == ("j1", "q", 2)
    assert given.__dict__["job_id"] == "mine" and given.__dict__["queue"] == "elsewhere"
    assert logs.TextFormatter().format(plain).endswith("app: hello [job=q/j1 task=t attempt=2]")
    assert logs.TextFormatter().format(given).endswith("app: hello"), "the caller named the job itself"
    assert logs.TextFormatter().format(record()).endswith("app: hello"), "no job running: no suffix"


@pytest.fixture
def logging_state() -> Iterator[None]:
    """Put the root and Conveyor loggers back as they were: configure() changes both."""
    root, own = logging.getLogger(), logging.getLogger("conveyor")
    saved = (root.handlers[:], root.level, own.handlers[:], own.level, own.propagate)
    yield
    root.handlers[:], root.level, own.handlers[:], own.level, own.propagate = saved


def _fresh_root() -> None:
    """A root logger without handlers, as in a new ``conveyor worker`` process (pytest adds
    its capturing handlers for the test's call, after the fixtures ran)."""
    logging.getLogger().handlers[:] = []


@pytest.mark.usefixtures("logging_state")
def test_configure_sends_the_apps_lines_through_the_same_handler(capsys: pytest.CaptureFixture[str]) -> None:
    _fresh_root()
    logs.configure("info", "json")
    logs.configure("info", "json")  # again: still one handler on each logger
    root = logging.getLogger()
    assert len(root.handlers) == 1 and root.handlers == logging.getLogger("conveyor").handlers
    logging.getLogger("app").info("from the app")
    logging.getLogger("conveyor.worker").info("from the worker")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("app", "from the app"),
        ("conveyor.worker", "from the worker"),
    ]


@pytest.mark.usefixtures("logging_state")
def test_configure_leaves_an_applications_root_handler_alone() -> None:
    _fresh_root()
    mine = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(mine)
    logs.configure("info", "text")
    assert logging.getLogger().handlers == [mine]
    [handler] = logging.getLogger("conveyor").handlers
    assert isinstance(handler.formatter, logs.TextFormatter)
    assert any(isinstance(f, logs.JobContextFilter) for f in handler.filters)
