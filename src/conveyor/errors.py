"""Exceptions. Lua scripts fail with stable codes (``CONVEYOR:<CODE> detail``) mapped here."""

from __future__ import annotations

from redis.exceptions import ClusterError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ConveyorError(Exception):
    """Base class of every error Conveyor raises on purpose."""

    code = "ERROR"


class SerializationError(ConveyorError, TypeError):
    """Arguments or a result could not be encoded as JSON; nothing was written."""

    code = "SERIALIZATION"


class PayloadTooLarge(ConveyorError, ValueError):
    """An encoded payload is larger than the configured cap; nothing was written."""

    code = "PAYLOAD_TOO_LARGE"


class UnknownTask(ConveyorError, LookupError):
    """A job names a task the worker does not know."""

    code = "UNKNOWN_TASK"


class JobNotFound(ConveyorError, LookupError):
    """No job with this id exists (it never did, or retention removed it)."""

    code = "NOT_FOUND"


class InvalidState(ConveyorError):
    """The job is not in a state that allows the operation (for example removing an active job)."""

    code = "INVALID_STATE"


class JobFailed(ConveyorError):
    """Raised by ``result()`` when the job ended in the failed (dead-letter) state."""

    code = "JOB_FAILED"

    def __init__(self, job_id: str, error: dict[str, str] | None) -> None:
        self.job_id = job_id
        self.error = error or {}
        kind = self.error.get("type", "Error")
        message = self.error.get("message", "")
        super().__init__(f"job {job_id} failed: {kind}: {message}")


class JobCancelled(ConveyorError):
    """Raised by ``result()`` when the job was cancelled; ``reason`` says who and why."""

    code = "JOB_CANCELLED"

    def __init__(self, job_id: str, reason: dict[str, str] | None) -> None:
        self.job_id = job_id
        self.reason = reason or {}
        by = self.reason.get("by") or "someone"
        why = self.reason.get("message") or "no reason given"
        super().__init__(f"job {job_id} was cancelled by {by}: {why}")


class ResultTimeout(ConveyorError, TimeoutError):
    """``result(timeout=...)`` gave up before the job finished. The job itself goes on."""

    code = "RESULT_TIMEOUT"


class OutOfMemory(ConveyorError, ResponseError):
    """Redis refused a write: it reached ``maxmemory`` and its policy is ``noeviction``.

    Also a redis-py ``ResponseError``, as the error reply it stands for was before it had
    a type of its own, so code that catches Redis errors goes on catching it.

    The refused call wrote nothing (Redis refuses a script at its first write, so no job is
    half-written); calls before it in a multi-call operation -- earlier chunks of a very
    large ``enqueue_many`` -- stand. Free memory (shorter retention of finished jobs, a
    larger ``maxmemory``) and retry.
    """

    code = "OUT_OF_MEMORY"


class NotDurable(ConveyorError):
    """A durable enqueue (``durable_replicas``) reached the primary, but fewer replicas than
    asked acknowledged it in time (``WAIT``): the jobs exist and will run, unless the primary
    fails before replicating them. ``job_ids`` names them; retry with the same ids (no
    duplicates are made) or alert."""

    code = "NOT_DURABLE"

    def __init__(self, message: str, job_ids: list[str], acknowledged: int, wanted: int) -> None:
        super().__init__(message)
        self.job_ids = job_ids
        self.acknowledged = acknowledged
        self.wanted = wanted


class ClusterUnavailable(ConveyorError, ClusterError):
    """Redis Cluster kept refusing a call (``TRYAGAIN``, ``MOVED``/``ASK`` redirections,
    ``CLUSTERDOWN``) for longer than ``cluster_wait_ms``: a slot migration or a failover that
    did not end in time. The refused call did not run, so retrying it is safe; calls before
    it in a multi-call operation -- earlier chunks of a very large ``enqueue_many`` -- stand.

    Also a redis-py ``ClusterError``, which is what such a call raised before Conveyor
    waited refusals out, so code that catches that goes on catching it.
    """

    code = "CLUSTER_UNAVAILABLE"


class ConfigurationError(ConveyorError, ValueError):
    """A setting is missing or invalid."""

    code = "CONFIGURATION"


RETRYABLE_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    OutOfMemory,
    ClusterError,  # redis-py gave up redirecting (a slot mid-migration: "TTL exhausted")
    TryAgainError,
)
"""Errors a worker's loops (and its heartbeat thread) wait out; out of memory too, until an
operator frees some. Anything else ends the loop that met it."""


_BY_CODE: dict[str, type[ConveyorError]] = {cls.code: cls for cls in (JobNotFound, InvalidState)}


def from_script_error(message: str) -> ConveyorError | None:
    """Translate ``CONVEYOR:<CODE> detail`` raised by a Lua script into a typed exception."""
    marker = message.find("CONVEYOR:")
    if marker < 0:
        return None
    code, _, detail = message[marker + len("CONVEYOR:") :].partition(" ")
    cls = _BY_CODE.get(code, ConveyorError)
    return cls(detail.strip() or code)


class Retry(Exception):
    """Raise from a task to retry it after ``delay`` seconds, counting an attempt."""

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        self.delay = delay
        super().__init__(reason or "retry requested by the task")


class RetryAfter(Exception):
    """Raise from a task to come back after ``delay`` seconds without spending an attempt.

    For "rate limited, retry after T" answers from a downstream service (HTTP 429 with
    Retry-After): the job did nothing wrong, so its retry budget is left intact. So that a
    job cannot be deferred forever, its task's ``max_deferrals`` (default 50) caps how often
    it may ask: once more, and it fails for good (reason ``max_deferrals``).
    """

    def __init__(self, delay: float, reason: str = "") -> None:
        if delay < 0:
            raise ValueError("delay must not be negative")
        self.delay = delay
        super().__init__(reason or f"asked to come back after {delay:g} s")


class Fail(Exception):
    """Raise from a task to fail the job at once, without retries, when retrying cannot help
    (an HTTP 404 from the service it calls, input the task can never accept)."""
