"""Conveyor: a fast, reliable job queue for Python on Redis.

Define tasks on a :class:`Tasks` registry, enqueue them with :class:`Client` (sync) or
:class:`AsyncClient` (asyncio), and run them with :class:`Worker` or ``conveyor worker``.
"""

from .backoff import Custom, Exponential, Fixed
from .client import AsyncClient, AsyncJobHandle, Client, JobHandle
from .config import Settings
from .context import Cancelled, JobContext, current_job
from .errors import (
    ClusterUnavailable,
    ConfigurationError,
    ConveyorError,
    Fail,
    InvalidState,
    JobCancelled,
    JobFailed,
    JobNotFound,
    NotDurable,
    OutOfMemory,
    PayloadTooLarge,
    ResultTimeout,
    Retry,
    RetryAfter,
    SerializationError,
    UnknownTask,
)
from .flows import ChildOutcome, Flow, FlowHandle, chain, chord
from .job import EnqueueOutcome, Job, JobState
from .ops.reads import Event
from .ops.steps import Retention
from .schedules import Schedule, ScheduleState
from .task import Task, TaskCall, Tasks
from .worker import Worker, WorkerSettings

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncJobHandle",
    "Cancelled",
    "ChildOutcome",
    "Client",
    "ClusterUnavailable",
    "ConfigurationError",
    "ConveyorError",
    "Custom",
    "EnqueueOutcome",
    "Event",
    "Exponential",
    "Fail",
    "Fixed",
    "Flow",
    "FlowHandle",
    "InvalidState",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobState",
    "NotDurable",
    "OutOfMemory",
    "PayloadTooLarge",
    "ResultTimeout",
    "Retention",
    "Retry",
    "RetryAfter",
    "Schedule",
    "ScheduleState",
    "SerializationError",
    "Settings",
    "Task",
    "TaskCall",
    "Tasks",
    "UnknownTask",
    "Worker",
    "WorkerSettings",
    "__version__",
    "chain",
    "chord",
    "current_job",
]
