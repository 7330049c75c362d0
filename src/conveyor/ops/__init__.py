"""The I/O-free operations: every Redis operation of Conveyor, described once.

Each operation is a generator that yields steps (:mod:`.steps`) and returns its parsed
result; an executor (:mod:`conveyor.redis.executors`) runs it over a transport. By concern:

* :mod:`.encode` -- a task call as the fields of a new job (the one encoder);
* :mod:`.enqueue` -- writing new jobs;
* :mod:`.lifecycle` -- a job on a worker: claim, report, complete, fail, extend, sweep, requeue;
* :mod:`.manage` -- cancel, retry, remove, purge, promote, queue settings and limits;
* :mod:`.reads` -- a job, counts, pages, logs, events and the newest one, waiting for a result;
* :mod:`.flows`, :mod:`.schedules`, :mod:`.workers` -- flows, repeatable jobs, the worker registry;
* :mod:`.keys` spells every key, :mod:`.script_keys` names each script's KEYS, :mod:`.scripts`
  holds the Lua.

The names of the core modules are re-exported here, so callers write ``ops.claim(...)``.
"""

from .enqueue import (
    ENQUEUE,
    ENQUEUE_PLAIN,
    Enqueued,
    NewJob,
    enqueue,
    enqueue_chunks,
    enqueue_outcomes,
    enqueue_script,
    wait_replicas,
)
from .lifecycle import (
    CANCELLED,
    CLAIM,
    COMPLETE,
    EXTEND,
    FAIL,
    PROGRESS,
    REQUEUE,
    RETRY_NEVER,
    SWEEP,
    Claim,
    Claimed,
    claim,
    complete,
    extend,
    fail,
    report,
    requeue,
    suspects_waiting,
    sweep,
)
from .manage import (
    CANCEL,
    PROMOTE,
    PURGE,
    REMOVE,
    RETRY,
    SETTING_NAMES,
    cancel,
    get_settings,
    promote,
    purge,
    remove,
    retry_failed,
    update_settings,
)
from .reads import (
    AWAIT,
    COUNTS,
    LIST,
    TIMEOUT,
    Event,
    counts,
    get_job,
    job_logs,
    last_event_id,
    list_jobs,
    list_queues,
    read_events,
    register_queue,
    wait_result,
)
from .steps import Command, Operation, Pipeline, Retention, Script, Step, as_dict

__all__ = [
    "AWAIT",
    "CANCEL",
    "CANCELLED",
    "CLAIM",
    "COMPLETE",
    "COUNTS",
    "ENQUEUE",
    "ENQUEUE_PLAIN",
    "EXTEND",
    "FAIL",
    "LIST",
    "PROGRESS",
    "PROMOTE",
    "PURGE",
    "REMOVE",
    "REQUEUE",
    "RETRY",
    "RETRY_NEVER",
    "SETTING_NAMES",
    "SWEEP",
    "TIMEOUT",
    "Claim",
    "Claimed",
    "Command",
    "Enqueued",
    "Event",
    "NewJob",
    "Operation",
    "Pipeline",
    "Retention",
    "Script",
    "Step",
    "as_dict",
    "cancel",
    "claim",
    "complete",
    "counts",
    "enqueue",
    "enqueue_chunks",
    "enqueue_outcomes",
    "enqueue_script",
    "extend",
    "fail",
    "get_job",
    "get_settings",
    "job_logs",
    "last_event_id",
    "list_jobs",
    "list_queues",
    "promote",
    "purge",
    "read_events",
    "register_queue",
    "remove",
    "report",
    "requeue",
    "retry_failed",
    "suspects_waiting",
    "sweep",
    "update_settings",
    "wait_replicas",
    "wait_result",
]
