"""Queue endpoints: counts, pages of jobs, pause, resume, purge; workers; the event stream."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response

from ..job import JobState
from . import models as m
from .jobs import job_out
from .problems import Problem, responses
from .routing import QueueName, json_response, scoped
from .service import ApiService
from .sse import event_stream


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


def add_queue_routes(router: APIRouter, service: ApiService) -> None:
    """Add the queue, worker and event endpoints to ``router``."""
    client = service.client

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
        openapi_extra=scoped("read"),
        summary="List queues with their counts",
        tags=["queues"],
    )
    async def list_queues() -> Response:
        names = await client.queues()
        return json_response({"queues": list(await asyncio.gather(*(_queue_out(q) for q in names)))})

    @router.get(
        "/queues/{queue}",
        response_model=m.QueueOut,
        openapi_extra=scoped("read"),
        responses=responses(404),
        summary="One queue: counts, paused, limits, schedules",
        tags=["queues"],
    )
    async def get_queue(queue: QueueName) -> Response:
        out = await _queue_out(queue, with_schedules=True)
        if queue not in await client.queues() and not any(out["counts"].values()) and not out["schedules"]:
            raise Problem(404, f"no queue {queue!r}: nothing was ever enqueued to it", code="not-found")
        return json_response(out)

    @router.get(
        "/queues/{queue}/jobs",
        response_model=m.JobPage,
        openapi_extra=scoped("read"),
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
        return json_response(
            {
                "jobs": [job_out(job, []) for job in jobs],
                "total": total,
                "next_cursor": _encode_cursor(following) if following < total else None,
            }
        )

    @router.post(
        "/queues/{queue}/pause",
        response_model=m.PausedOut,
        openapi_extra=scoped("admin"),
        summary="Stop workers claiming from the queue (enqueues go on)",
        tags=["queues"],
    )
    async def pause(queue: QueueName) -> Response:
        await client.pause(queue)
        return json_response({"queue": queue, "paused": True})

    @router.post(
        "/queues/{queue}/resume",
        response_model=m.PausedOut,
        openapi_extra=scoped("admin"),
        summary="Let workers claim from the queue again",
        tags=["queues"],
    )
    async def resume(queue: QueueName) -> Response:
        await client.resume(queue)
        return json_response({"queue": queue, "paused": False})

    @router.post(
        "/queues/{queue}/purge",
        response_model=m.PurgeOut,
        openapi_extra=scoped("admin"),
        summary="Delete every job in the given states (never running ones)",
        tags=["queues"],
    )
    async def purge(queue: QueueName, body: Annotated[m.PurgeRequest | None, Body()] = None) -> Response:
        states = body.states if body is not None else ["waiting", "delayed"]
        deleted = await client.purge(queue, [JobState(s) for s in states])
        return json_response({"queue": queue, "deleted": deleted})

    # ------------------------------------------------------------------ workers, events
    @router.get(
        "/workers",
        response_model=m.WorkerList,
        openapi_extra=scoped("read"),
        summary="Live workers",
        tags=["workers"],
    )
    async def list_workers() -> Response:
        return json_response({"workers": await client.workers()})

    @router.get(
        "/queues/{queue}/events",
        openapi_extra=scoped("read"),
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
