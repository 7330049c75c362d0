"""The versioned endpoints (``/v1/...``) as a router a host FastAPI application can mount.

``api_router(service)`` closes over an :class:`~conveyor.api.service.ApiService`: the Redis
client and settings are injected, never looked up in a module global. Every route of the
router runs through :class:`ProblemRoute`, which checks the bearer token's scope, caps the
body size, and turns every error into a problem document, so the router behaves the same
mounted in a host app as in ``create_app``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from redis.exceptions import RedisError

from ..errors import (
    ConveyorError,
    InvalidState,
    JobCancelled,
    JobFailed,
    JobNotFound,
    PayloadTooLarge,
    ResultTimeout,
    SerializationError,
)
from ..ids import validate_job_id
from ..job import EnqueueOutcome, Job, JobState
from ..keys import validate_queue_name
from ..schedules import Schedule, ScheduleState
from . import models as m
from .problems import Problem, from_validation, responses
from .service import ApiService, build_call, idempotent_job_id
from .sse import event_stream

log = logging.getLogger("conveyor.api")

QueueName = Annotated[str, Path(pattern=m.NAME_PATTERN, description="Queue name.")]
JobId = Annotated[str, Path(pattern=m.ID_PATTERN, description="Job id.")]
ScheduleName = Annotated[str, Path(pattern=r"^[^{}@\s]{1,200}$", description="Schedule name.")]
LOG_LINES = 100
"""Log lines returned with a job (the newest)."""

COMMON = (400, 401, 403, 404, 413, 422, 503)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status, media_type="application/json")


def _problem_for(exc: Exception) -> Problem | None:
    """Known exceptions as problems; None for anything unexpected."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        return from_validation(exc.errors())
    if isinstance(exc, JobNotFound):
        return Problem(
            404, f"{exc}; check the queue name and the id (finished jobs expire)", code="not-found"
        )
    if isinstance(exc, InvalidState):
        return Problem(409, str(exc), code="invalid-state")
    if isinstance(exc, PayloadTooLarge):
        return Problem(413, str(exc), code="payload-too-large", field="args")
    if isinstance(exc, SerializationError):
        return Problem(422, str(exc), code="not-json", field="args")
    if isinstance(exc, UnicodeError):
        return Problem(422, "a text field is not valid UTF-8 (lone surrogates?)", code="invalid-text")
    if isinstance(exc, RedisError | OSError):
        log.error("Redis error: %s", type(exc).__name__)
        return Problem(503, "Redis is unreachable or answered with an error; retry shortly", code="redis")
    if isinstance(exc, ConveyorError):
        return Problem(409, str(exc), code=exc.code.lower().replace("_", "-"))
    return None


def make_route_class(service: ApiService) -> type[APIRoute]:
    """A route class bound to ``service``: auth by scope, body cap, errors as problems."""
    settings = service.settings
    tokens = settings.tokens

    class ProblemRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            scope = (self.openapi_extra or {}).get("x-scope")

            async def guarded(request: Request) -> Response:
                try:
                    if scope and tokens.enabled:
                        _authorize(request, scope)
                    _check_path(request.path_params)
                    if request.method in ("POST", "PUT", "PATCH"):
                        length = request.headers.get("content-length")
                        if length and length.isdigit() and int(length) > settings.max_body_bytes:
                            raise _too_large()
                        if len(await request.body()) > settings.max_body_bytes:
                            raise _too_large()
                    return await handler(request)
                except Exception as exc:
                    problem = _problem_for(exc)
                    if problem is None:
                        log.exception("unexpected error in %s %s", request.method, self.path)
                        problem = Problem(500, "the server failed unexpectedly; the error was logged")
                    return problem.response(request.url.path)

            return guarded

    def _authorize(request: Request, scope: str) -> None:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'",
                code="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="conveyor"'},
            )
        scopes = tokens.scopes_of(token.strip())
        if scopes is None:
            raise Problem(
                401,
                "the bearer token is not known to this server",
                code="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="conveyor", error="invalid_token"'},
            )
        if scope not in scopes and "admin" not in scopes:
            raise Problem(
                403,
                f"the token lacks the {scope!r} scope this endpoint needs "
                f"(it has: {', '.join(sorted(scopes))})",
                code="forbidden",
            )

    def _check_path(params: dict[str, Any]) -> None:
        """Names in the path are checked as the core checks them (the OpenAPI patterns cannot
        say "printable"), so a bad one is a 422 naming it, never a 500."""
        for name, check in (("queue", validate_queue_name), ("job_id", validate_job_id)):
            value = params.get(name)
            if value is not None:
                try:
                    check(value)
                except ValueError as exc:
                    raise Problem(422, f"{name}: {exc}", code="invalid-request", field=name) from None

    def _too_large() -> Problem:
        return Problem(
            413,
            f"the request body is over {settings.max_body_bytes:,} bytes; send fewer jobs per request",
            code="body-too-large",
        )

    return ProblemRoute


SECURITY_SCHEME = "bearerAuth"


def _scoped(scope: str) -> dict[str, Any]:
    """The scope a route needs, read by ProblemRoute, and its security in the OpenAPI
    document (documented this way rather than with a Security dependency, which costs a
    dependency resolution on every request of the hot enqueue path)."""
    return {"x-scope": scope, "security": [{SECURITY_SCHEME: []}]}


def _enqueued(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "queue": e.queue,
        "outcome": e.outcome.value,
        "created": e.outcome is EnqueueOutcome.CREATED,
        "replaced": e.replaced,
    }


def _job_out(job: Job, logs: list[str]) -> dict[str, Any]:
    data = job.to_dict()
    data.pop("token", None)
    data["logs"] = logs
    return data


def _schedule_out(state: ScheduleState) -> dict[str, Any]:
    s = state.schedule
    return {
        "name": s.name,
        "queue": s.queue,
        "task": s.task,
        "cron": s.cron,
        "every": s.every,
        "timezone": s.timezone,
        "args": list(s.args),
        "kwargs": s.kwargs,
        "missed": s.missed,
        "priority": s.priority,
        "next_run": state.next_run.isoformat() if state.next_run else None,
    }


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        offset = int(value)
        if kind != "o" or offset < 0:
            raise ValueError
        return offset
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(
            400, "cursor: not a cursor this API gave out; pass next_cursor as it came", field="cursor"
        ) from None


def api_router(service: ApiService) -> APIRouter:
    """The ``/v1`` endpoints, bound to ``service``. Mount it with ``app.include_router(...)``."""
    client = service.client
    settings = service.settings
    router = APIRouter(
        prefix="/v1",
        route_class=make_route_class(service),
        responses=responses(*COMMON),
    )

    async def _schedule_state(queue: str, name: str) -> ScheduleState | None:
        return next((s for s in await client.schedules(queue) if s.schedule.name == name), None)

    # ------------------------------------------------------------------ enqueue
    @router.post(
        "/queues/{queue}/jobs",
        status_code=201,
        response_model=m.Enqueued,
        openapi_extra=_scoped("enqueue"),
        responses={
            200: {"model": m.Enqueued, "description": "The job already existed (same id or idempotency key)"},
            **responses(409),
        },
        summary="Enqueue one job",
        tags=["jobs"],
    )
    async def enqueue(
        queue: QueueName,
        body: m.EnqueueRequest,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=255,
                description="A repeated request with the same key returns the first job (200).",
            ),
        ] = None,
    ) -> Response:
        job_id = None
        if idempotency_key is not None:
            if body.job_id is not None:
                raise Problem(
                    400, "job_id: give either job_id or an Idempotency-Key header, not both", field="job_id"
                )
            job_id = idempotent_job_id(queue, idempotency_key)
        call = build_call(queue, body, job_id)
        [done] = await client.enqueue_many([call])
        if done.outcome is EnqueueOutcome.EXISTED and idempotency_key is not None:
            try:
                existing = await client.get_job(queue, done.id)
            except JobNotFound:
                existing = None
            if existing is not None and (existing.task, existing.args, existing.kwargs) != (
                call.task,
                list(call.args),
                call.kwargs,
            ):
                raise Problem(
                    409,
                    "Idempotency-Key: this key was used for a different job (task or arguments differ); "
                    "use a new key for a new job",
                    code="idempotency-key-reused",
                    field="Idempotency-Key",
                )
        status = 201 if done.outcome is EnqueueOutcome.CREATED else 200
        return _json(_enqueued(done), status)

    @router.post(
        "/queues/{queue}/jobs/bulk",
        status_code=201,
        response_model=m.BulkEnqueued,
        openapi_extra=_scoped("enqueue"),
        summary="Enqueue many jobs in one request (one round trip to Redis per 10,000 jobs)",
        tags=["jobs"],
    )
    async def enqueue_bulk(queue: QueueName, body: m.BulkRequest) -> Response:
        calls = []
        for index, item in enumerate(body.jobs):
            try:
                calls.append(build_call(queue, item))
            except Problem as exc:
                exc.detail = f"jobs[{index}].{exc.detail}"
                exc.field = f"jobs[{index}].{exc.field or 'body'}"
                raise
        done = await client.enqueue_many(calls)
        created = sum(1 for e in done if e.outcome is EnqueueOutcome.CREATED)
        return _json({"jobs": [_enqueued(e) for e in done], "created": created}, 201)

    # ------------------------------------------------------------------ one job
    @router.get(
        "/queues/{queue}/jobs/{job_id}",
        response_model=m.JobOut,
        openapi_extra=_scoped("read"),
        responses=responses(404),
        summary="Get a job: state, arguments, result, error, attempts, progress, logs, timestamps",
        tags=["jobs"],
    )
    async def get_job(queue: QueueName, job_id: JobId) -> Response:
        job = await client.get_job(queue, job_id)
        logs = await client.run(_logs_op(client, queue, job_id))
        return _json(_job_out(job, logs))

    @router.get(
        "/queues/{queue}/jobs/{job_id}/result",
        response_model=m.WaitOut,
        openapi_extra=_scoped("read"),
        responses=responses(404, 429),
        summary="Wait for a job to finish (bounded long poll)",
        tags=["jobs"],
    )
    async def wait_result(
        queue: QueueName,
        job_id: JobId,
        timeout: Annotated[
            float, Query(ge=0, le=3600, allow_inf_nan=False, description="Seconds to wait at most.")
        ] = 30.0,
    ) -> Response:
        wait = min(timeout, settings.max_wait)
        async with service.stream_slot():
            try:
                result = await client.wait_result(queue, job_id, wait)
            except ResultTimeout:
                job = await client.get_job(queue, job_id)
                if job.state.is_terminal:  # finished between the wait and the read
                    return _json(_wait_out(job))
                return _json({"id": job_id, "done": False, "state": job.state.value})
            except (JobFailed, JobCancelled):
                pass
            else:
                return _json({"id": job_id, "done": True, "state": "completed", "result": result})
        return _json(_wait_out(await client.get_job(queue, job_id)))

    def _wait_out(job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "done": job.state.is_terminal,
            "state": job.state.value,
            "result": job.result,
            "error": job.error,
        }

    @router.post(
        "/queues/{queue}/jobs/{job_id}/cancel",
        response_model=m.StateOut,
        openapi_extra=_scoped("admin"),
        responses=responses(404, 409),
        summary="Cancel a waiting or delayed job, or abort a running one",
        tags=["jobs"],
    )
    async def cancel(
        queue: QueueName, job_id: JobId, body: Annotated[m.CancelRequest | None, Body()] = None
    ) -> Response:
        reason = body.reason if body is not None else "cancelled over the API"
        state = await client.cancel(queue, job_id, reason, by="api")
        return _json({"id": job_id, "state": state})

    @router.post(
        "/queues/{queue}/jobs/{job_id}/retry",
        response_model=m.StateOut,
        openapi_extra=_scoped("admin"),
        responses=responses(404, 409),
        summary="Move a failed (dead-lettered) job back to waiting",
        tags=["jobs"],
    )
    async def retry(queue: QueueName, job_id: JobId) -> Response:
        if await client.retry(queue, [job_id]) == 0:
            job = await client.get_job(queue, job_id)
            raise Problem(409, f"job {job_id} is {job.state.value}; only failed jobs can be retried")
        return _json({"id": job_id, "state": "waiting"})

    @router.post(
        "/queues/{queue}/jobs/{job_id}/promote",
        response_model=m.StateOut,
        openapi_extra=_scoped("admin"),
        responses=responses(404, 409),
        summary="Run a delayed job now",
        tags=["jobs"],
    )
    async def promote(queue: QueueName, job_id: JobId) -> Response:
        state = await client.promote(queue, job_id)
        return _json({"id": job_id, "state": state})

    @router.delete(
        "/queues/{queue}/jobs/{job_id}",
        response_model=m.RemovedOut,
        openapi_extra=_scoped("admin"),
        responses=responses(404, 409),
        summary="Remove a job that is not running",
        tags=["jobs"],
    )
    async def remove(queue: QueueName, job_id: JobId) -> Response:
        state = await client.remove(queue, job_id)
        return _json({"id": job_id, "removed_from": state.value})

    # ------------------------------------------------------------------ queues
    async def _queue_out(queue: str, with_schedules: bool = False) -> dict[str, Any]:
        counts, limits = await asyncio.gather(client.counts(queue), client.settings_of(queue))
        out: dict[str, Any] = {
            "name": queue,
            "counts": counts,
            "paused": bool(limits.get("paused")),
            "limits": {k: limits.get(k) for k in ("concurrency", "rate_max", "rate_ms")},
        }
        if with_schedules:
            out["schedules"] = len(await client.schedules(queue))
        return out

    @router.get(
        "/queues",
        response_model=m.QueueList,
        openapi_extra=_scoped("read"),
        summary="List queues with their counts",
        tags=["queues"],
    )
    async def list_queues() -> Response:
        names = await client.queues()
        return _json({"queues": list(await asyncio.gather(*(_queue_out(q) for q in names)))})

    @router.get(
        "/queues/{queue}",
        response_model=m.QueueOut,
        openapi_extra=_scoped("read"),
        responses=responses(404),
        summary="One queue: counts, paused, limits, schedules",
        tags=["queues"],
    )
    async def get_queue(queue: QueueName) -> Response:
        out = await _queue_out(queue, with_schedules=True)
        if queue not in await client.queues() and not any(out["counts"].values()) and not out["schedules"]:
            raise Problem(404, f"no queue {queue!r}: nothing was ever enqueued to it", code="not-found")
        return _json(out)

    @router.get(
        "/queues/{queue}/jobs",
        response_model=m.JobPage,
        openapi_extra=_scoped("read"),
        summary="List a queue's jobs in one state, a page at a time",
        tags=["queues"],
    )
    async def list_jobs(
        queue: QueueName,
        state: Annotated[JobState, Query(description="Which jobs.")] = JobState.WAITING,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[
            str | None, Query(max_length=100, description="next_cursor of the last page.")
        ] = None,
    ) -> Response:
        offset = _decode_cursor(cursor) if cursor else 0
        jobs, total = await client.list_jobs(queue, JobState(state), offset, limit)
        following = offset + limit
        return _json(
            {
                "jobs": [_job_out(job, []) for job in jobs],
                "total": total,
                "next_cursor": _encode_cursor(following) if following < total else None,
            }
        )

    @router.post(
        "/queues/{queue}/pause",
        response_model=m.PausedOut,
        openapi_extra=_scoped("admin"),
        summary="Stop workers claiming from the queue (enqueues go on)",
        tags=["queues"],
    )
    async def pause(queue: QueueName) -> Response:
        await client.pause(queue)
        return _json({"queue": queue, "paused": True})

    @router.post(
        "/queues/{queue}/resume",
        response_model=m.PausedOut,
        openapi_extra=_scoped("admin"),
        summary="Let workers claim from the queue again",
        tags=["queues"],
    )
    async def resume(queue: QueueName) -> Response:
        await client.resume(queue)
        return _json({"queue": queue, "paused": False})

    @router.post(
        "/queues/{queue}/purge",
        response_model=m.PurgeOut,
        openapi_extra=_scoped("admin"),
        summary="Delete every job in the given states (never running ones)",
        tags=["queues"],
    )
    async def purge(queue: QueueName, body: Annotated[m.PurgeRequest | None, Body()] = None) -> Response:
        states = body.states if body is not None else ["waiting", "delayed"]
        deleted = await client.purge(queue, [JobState(s) for s in states])
        return _json({"queue": queue, "deleted": deleted})

    # ------------------------------------------------------------------ schedules
    @router.get(
        "/queues/{queue}/schedules",
        response_model=m.ScheduleList,
        openapi_extra=_scoped("read"),
        summary="List the queue's repeatable jobs with their next run times",
        tags=["schedules"],
    )
    async def list_schedules(queue: QueueName) -> Response:
        return _json({"schedules": [_schedule_out(s) for s in await client.schedules(queue)]})

    @router.get(
        "/queues/{queue}/schedules/{name}",
        response_model=m.ScheduleOut,
        openapi_extra=_scoped("read"),
        responses=responses(404),
        summary="One repeatable job",
        tags=["schedules"],
    )
    async def get_schedule(queue: QueueName, name: ScheduleName) -> Response:
        state = await _schedule_state(queue, name)
        if state is None:
            raise Problem(404, f"no schedule {name!r} in queue {queue!r}", code="not-found")
        return _json(_schedule_out(state))

    def _make_schedule(queue: str, name: str, body: m.ScheduleIn) -> Schedule:
        if body.task == "conveyor.http":
            from ..httpcall import parse_request

            try:
                parse_request(body.kwargs)
            except ValueError as exc:
                raise Problem(422, f"kwargs.{exc}", code="invalid-http-call", field="kwargs") from None
        try:
            schedule = Schedule(
                name=name,
                task=body.task,
                queue=queue,
                cron=body.cron,
                every=body.every,
                timezone=body.timezone,
                args=tuple(body.args),
                kwargs=body.kwargs,
                missed=body.missed,
                priority=body.priority,
            )
            schedule.next_after(int(time.time() * 1000))  # a cron that never fires raises here
            return schedule
        except ValueError as exc:
            message = str(exc)
            hints = (("cron", "cron"), ("every", "every"), ("time zone", "timezone"), ("missed", "missed"))
            field = next((name for word, name in hints if word in message), None)
            raise Problem(422, message, code="invalid-schedule", field=field) from None

    async def _save(schedule: Schedule) -> ScheduleState:
        try:
            schedule.to_json()
        except SerializationError as exc:
            raise Problem(422, str(exc), code="not-json", field="args") from None
        await client.add_schedule(schedule)
        state = await _schedule_state(schedule.queue, schedule.name)
        assert state is not None
        return state

    @router.post(
        "/queues/{queue}/schedules",
        status_code=201,
        response_model=m.ScheduleOut,
        openapi_extra=_scoped("admin"),
        responses=responses(409),
        summary="Create a repeatable job (cron or interval), including HTTP calls",
        tags=["schedules"],
    )
    async def create_schedule(queue: QueueName, body: m.ScheduleCreate) -> Response:
        schedule = _make_schedule(queue, body.name, body)
        if await _schedule_state(queue, body.name) is not None:
            raise Problem(
                409, f"schedule {body.name!r} exists; PUT it to replace it", code="exists", field="name"
            )
        return _json(_schedule_out(await _save(schedule)), 201)

    @router.put(
        "/queues/{queue}/schedules/{name}",
        response_model=m.ScheduleOut,
        openapi_extra=_scoped("admin"),
        responses={201: {"model": m.ScheduleOut, "description": "Created"}},
        summary="Create or replace a repeatable job",
        tags=["schedules"],
    )
    async def put_schedule(queue: QueueName, name: ScheduleName, body: m.ScheduleIn) -> Response:
        schedule = _make_schedule(queue, name, body)
        existed = await _schedule_state(queue, name) is not None
        return _json(_schedule_out(await _save(schedule)), 200 if existed else 201)

    @router.delete(
        "/queues/{queue}/schedules/{name}",
        status_code=204,
        openapi_extra=_scoped("admin"),
        responses=responses(404),
        summary="Delete a repeatable job",
        tags=["schedules"],
    )
    async def delete_schedule(queue: QueueName, name: ScheduleName) -> Response:
        if not await client.remove_schedule(queue, name):
            raise Problem(404, f"no schedule {name!r} in queue {queue!r}", code="not-found")
        return Response(status_code=204)

    # ------------------------------------------------------------------ workers, events
    @router.get(
        "/workers",
        response_model=m.WorkerList,
        openapi_extra=_scoped("read"),
        summary="Live workers",
        tags=["workers"],
    )
    async def list_workers() -> Response:
        return _json({"workers": await client.workers()})

    @router.get(
        "/queues/{queue}/events",
        openapi_extra=_scoped("read"),
        responses={
            200: {
                "description": "Server-sent events: one per job lifecycle event",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **responses(429),
        },
        response_class=Response,
        summary="Follow the queue's lifecycle events (server-sent events)",
        tags=["queues"],
    )
    async def events(
        request: Request,
        queue: QueueName,
        after: Annotated[
            str | None,
            Query(
                pattern=r"^(\$|[0-9]+-[0-9]+)$", description="Stream position to start after (default: now)."
            ),
        ] = None,
        last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]+-[0-9]+$")] = None,
        limit: Annotated[
            int | None, Query(ge=1, le=100_000, description="Close the stream after this many events.")
        ] = None,
    ) -> Response:
        return await event_stream(service, request, queue, last_event_id or after or "$", limit)

    return router


def _logs_op(client: Any, queue: str, job_id: str) -> Any:
    from .. import operations as ops

    return ops.job_logs(client.keys(queue), job_id, -LOG_LINES, -1)
