"""Job endpoints: enqueue one or many, read, wait for, cancel, retry, promote, remove."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Header, Query, Request, Response
from pydantic import BaseModel, ValidationError

from ..errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout
from ..job import EnqueueOutcome, Job
from ..task import TaskCall
from . import models as m
from .problems import Problem, from_validation, responses
from .routing import JobId, QueueName, json_response, scoped
from .service import ApiService, build_call, idempotent_job_id

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _enqueued(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "queue": e.queue,
        "outcome": e.outcome.value,
        "created": e.outcome is EnqueueOutcome.CREATED,
        "replaced": e.replaced,
    }


def job_out(job: Job, logs: list[str]) -> dict[str, Any]:
    data = job.to_dict()
    data.pop("token", None)
    data["logs"] = logs
    return data


ENQUEUE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": m.EnqueueRequest.model_json_schema()}},
    }
}
"""The single enqueue's body, documented by hand: the endpoint parses it itself (see parse_body)."""


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate a JSON body with pydantic directly. The single enqueue is the hot path, and
    FastAPI's body dependency costs more than the validation itself."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation(exc.errors()) from None


def add_job_routes(router: APIRouter, service: ApiService) -> None:
    """Add the job endpoints to ``router``."""
    _add_enqueue_routes(router, service)
    _add_read_routes(router, service)
    _add_admin_routes(router, service)


def _add_enqueue_routes(router: APIRouter, service: ApiService) -> None:
    client = service.client

    @router.post(
        "/queues/{queue}/jobs",
        status_code=201,
        response_model=m.Enqueued,
        openapi_extra={**scoped("enqueue"), **ENQUEUE_BODY},
        responses={
            200: {"model": m.Enqueued, "description": "The job already existed (same id or idempotency key)"},
            **responses(409),
        },
        summary="Enqueue one job",
        tags=["jobs"],
    )
    async def enqueue(
        queue: QueueName,
        request: Request,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=255,
                description="A repeated request with the same key returns the first job (200).",
            ),
        ] = None,
    ) -> Response:
        body = parse_body(m.EnqueueRequest, await request.body())
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
            await _check_same_job(service, queue, done.id, call)
        status = 201 if done.outcome is EnqueueOutcome.CREATED else 200
        return json_response(_enqueued(done), status)

    @router.post(
        "/queues/{queue}/jobs/bulk",
        status_code=201,
        response_model=m.BulkEnqueued,
        openapi_extra=scoped("enqueue"),
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
        return json_response({"jobs": [_enqueued(e) for e in done], "created": created}, 201)


async def _check_same_job(service: ApiService, queue: str, job_id: str, call: TaskCall[Any]) -> None:
    """The job an Idempotency-Key names exists: it must be the job this request describes."""
    try:
        existing = await service.client.get_job(queue, job_id)
    except JobNotFound:
        return
    if (existing.task, existing.args, existing.kwargs) != (call.task, list(call.args), call.kwargs):
        raise Problem(
            409,
            "Idempotency-Key: this key was used for a different job (task or arguments differ); "
            "use a new key for a new job",
            code="idempotency-key-reused",
            field="Idempotency-Key",
        )


def _add_read_routes(router: APIRouter, service: ApiService) -> None:
    client = service.client
    settings = service.settings

    @router.get(
        "/queues/{queue}/jobs/{job_id}",
        response_model=m.JobOut,
        openapi_extra=scoped("read"),
        responses=responses(404),
        summary="Get a job: state, arguments, result, error, attempts, progress, logs, timestamps",
        tags=["jobs"],
    )
    async def get_job(queue: QueueName, job_id: JobId) -> Response:
        job = await client.get_job(queue, job_id)
        logs = await client.job_logs(queue, job_id, -LOG_LINES, -1)
        return json_response(job_out(job, logs))

    @router.get(
        "/queues/{queue}/jobs/{job_id}/result",
        response_model=m.WaitOut,
        openapi_extra=scoped("read"),
        responses=responses(404, 429),
        summary="Wait for a job to finish (bounded long poll)",
        tags=["jobs"],
    )
    async def wait_result(
        request: Request,
        queue: QueueName,
        job_id: JobId,
        timeout: Annotated[
            float, Query(ge=0, le=3600, allow_inf_nan=False, description="Seconds to wait at most.")
        ] = 30.0,
    ) -> Response:
        wait = min(timeout, settings.max_wait)
        async with service.stream_slot():
            try:
                result = await _unless_disconnected(request, client.wait_result(queue, job_id, wait))
            except ClientGone:
                return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
            except ResultTimeout:
                job = await client.get_job(queue, job_id)
                if job.state.is_terminal:  # finished between the wait and the read
                    return json_response(_wait_out(job))
                return json_response({"id": job_id, "done": False, "state": job.state.value})
            except (JobFailed, JobCancelled):
                pass
            else:
                return json_response({"id": job_id, "done": True, "state": "completed", "result": result})
        return json_response(_wait_out(await client.get_job(queue, job_id)))


def _wait_out(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "done": job.state.is_terminal,
        "state": job.state.value,
        "result": job.result,
        "error": job.error,
    }


def _add_admin_routes(router: APIRouter, service: ApiService) -> None:
    client = service.client

    @router.post(
        "/queues/{queue}/jobs/{job_id}/cancel",
        response_model=m.StateOut,
        openapi_extra=scoped("admin"),
        responses=responses(404, 409),
        summary="Cancel a waiting or delayed job, or abort a running one",
        tags=["jobs"],
    )
    async def cancel(
        queue: QueueName, job_id: JobId, body: Annotated[m.CancelRequest | None, Body()] = None
    ) -> Response:
        reason = body.reason if body is not None else "cancelled over the API"
        state = await client.cancel(queue, job_id, reason, by="api")
        return json_response({"id": job_id, "state": state})

    @router.post(
        "/queues/{queue}/jobs/{job_id}/retry",
        response_model=m.StateOut,
        openapi_extra=scoped("admin"),
        responses=responses(404, 409),
        summary="Move a failed (dead-lettered) job back to waiting",
        tags=["jobs"],
    )
    async def retry(queue: QueueName, job_id: JobId) -> Response:
        if await client.retry(queue, [job_id]) == 0:
            job = await client.get_job(queue, job_id)
            raise Problem(409, f"job {job_id} is {job.state.value}; only failed jobs can be retried")
        return json_response({"id": job_id, "state": "waiting"})

    @router.post(
        "/queues/{queue}/jobs/{job_id}/promote",
        response_model=m.StateOut,
        openapi_extra=scoped("admin"),
        responses=responses(404, 409),
        summary="Run a delayed job now",
        tags=["jobs"],
    )
    async def promote(queue: QueueName, job_id: JobId) -> Response:
        state = await client.promote(queue, job_id)
        return json_response({"id": job_id, "state": state})

    @router.delete(
        "/queues/{queue}/jobs/{job_id}",
        response_model=m.RemovedOut,
        openapi_extra=scoped("admin"),
        responses=responses(404, 409),
        summary="Remove a job that is not running",
        tags=["jobs"],
    )
    async def remove(queue: QueueName, job_id: JobId) -> Response:
        state = await client.remove(queue, job_id)
        return json_response({"id": job_id, "removed_from": state.value})


LOG_LINES = 100
"""Log lines returned with a job (the newest)."""


DISCONNECT_CHECK_SECONDS = 0.5


class ClientGone(Exception):
    """The HTTP client went away while its request was waiting."""


async def _unless_disconnected(request: Request, waiting: Awaitable[T]) -> T:
    """Await ``waiting``, but give up as soon as the HTTP client disconnects.

    A long poll holds a Redis connection blocked in BLPOP and one of the service's stream
    slots; a client that gave up must not keep both for the rest of its timeout. Cancelling
    the wait drops its Redis connection (the client never reuses one with a reply still
    owed).
    """
    task = asyncio.ensure_future(waiting)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_CHECK_SECONDS)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
