"""Log setup for the CLI: one line per event, readable text or JSON.

Every line logged while a job runs, by Conveyor or by the task's own code on any logger,
says which job it belongs to: ``job_id``, ``queue``, ``task`` and ``attempt``, and while
tracing is on (:mod:`conveyor.tracing`) ``trace_id`` and ``span_id``, so that a log search
and a trace lead to each other. JSON has them as fields. Text keeps the line readable and
appends ``[job=<queue>/<id> task=<task> attempt=<n> trace=<trace id>]``; the worker's own
lines about a job name it in their message already, and get only ``[trace=...]``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .. import tracing
from ..context import _current

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_FROM_CONTEXT = "_job_from_context"
"""Set on a record whose job fields the filter added (not the caller's ``extra=``)."""

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JobContextFilter(logging.Filter):
    """Adds the running job and the current span to each record it sees.

    Put on a handler, it sees the records of every logger that reaches the handler, in the
    thread or asyncio task that logged them: that is where the job is known. Fields the
    caller passed with ``extra=`` are kept. For applications that set up logging
    themselves: ``handler.addFilter(JobContextFilter())``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        job = _current.get(None)  # the worker's record of the running attempt
        if job is not None and "job_id" not in fields:
            fields["job_id"] = job.claimed.id
            fields.setdefault("queue", job.queue)
            fields.setdefault("task", job.task.name)
            fields.setdefault("attempt", job.claimed.attempts)
            fields[_FROM_CONTEXT] = True
        if "trace_id" not in fields:
            ids = tracing.current_ids()
            if ids is not None:
                fields["trace_id"], fields["span_id"] = ids
        return True


class TextFormatter(logging.Formatter):
    """Time, level, logger and message, then the job and trace the line belongs to."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Here rather than in format(): the suffix belongs to the message line, not after a
        # traceback that format() appends.
        fields = record.__dict__
        parts = []
        if fields.get(_FROM_CONTEXT):
            parts.append(
                f"job={fields['queue']}/{fields['job_id']} task={fields['task']} attempt={fields['attempt']}"
            )
        if "trace_id" in fields:
            parts.append(f"trace={fields['trace_id']}")
        line = super().formatMessage(record)
        return f"{line} [{' '.join(parts)}]" if parts else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs, known apart from an application's own."""


def configure(level: str = "info", fmt: str = "text") -> None:
    """Log Conveyor's lines at ``level`` and up, as ``fmt`` ("text" or "json"), to stderr.

    The same handler takes the lines that tasks log on loggers of their own (through the
    root logger) unless the application configured the root logger itself, so that they
    come out in the same format, with their job named.
    """
    handler = _CliHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobContextFilter())
    own = logging.getLogger("conveyor")
    own.handlers[:] = [handler]
    own.setLevel(level.upper())
    own.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _CliHandler)]
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(level.upper())
