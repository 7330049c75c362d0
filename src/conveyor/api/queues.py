"""Queue endpoints: counts, pages of jobs, pause, resume, purge; workers; the event stream."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Generator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response

from ..client import AsyncClient
from ..job import JobState
from ..ops.keys import addressable, queues_key
from ..ops.steps import Command, Step
from . import models as m
from .jobs import job_out
from .problems import Problem, log, responses
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


def _registered(prefix: str, queue: str) -> Generator[Step, Any, bool]:
    return bool((yield Command(("SISMEMBER", queues_key(prefix), queue))))


async def queue_exists(client: AsyncClient, queue: str) -> bool:
    """Whether the queue exists, in the one sense every endpoint uses: it is registered (an
    enqueue registers it, and so does a schedule made over the API; ``GET /v1/queues`` lists
    those) or it holds anything -- jobs, schedules or settings. The second half covers
    what is written without registering: the ticks of schedules that workers declare, and
    a pause or limits set by the Python client."""
    if await client.run(_registered(client.settings.prefix, queue)):
        return True
    counts, limits, schedules = await asyncio.gather(
        client.counts(queue), client.settings_of(queue), client.schedules(queue)
    )
    return any(counts.values()) or bool(limits) or bool(schedules)


async def require_queue(client: AsyncClient, queue: str) -> None:
    """Answer 404 unless the queue exists (see :func:`queue_exists`)."""
    if not await queue_exists(client, queue):
        raise Problem(
            404,
            f"no queue {queue!r}: nothing was ever enqueued to it and it holds no jobs, "
            "schedules or settings; check the name",
            code="not-found",
            field="queue",
        )


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
        names = addressable(
            await client.queues(),
            lambda exc: log.warning("GET /v1/queues leaves out a registered queue: %s", exc),
        )
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
        await require_queue(client, queue)
        return json_response(out)

    @router.get(
        "/queues/{queue}/jobs",
        response_model=m.JobPage,
        openapi_extra=scoped("read"),
        responses=responses(404),
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
        if not total:
            await require_queue(client, queue)
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
        responses=responses(404),
        summary="Stop workers claiming from the queue (enqueues go on)",
        tags=["queues"],
    )
    async def pause(queue: QueueName) -> Response:
        await require_queue(client, queue)
        await client.pause(queue)
        return json_response({"queue": queue, "paused": True})

    @router.post(
        "/queues/{queue}/resume",
        response_model=m.PausedOut,
        openapi_extra=scoped("admin"),
        responses=responses(404),
        summary="Let workers claim from the queue again",
        tags=["queues"],
    )
    async def resume(queue: QueueName) -> Response:
        await require_queue(client, queue)
        await client.resume(queue)
        return json_response({"queue": queue, "paused": False})

    @router.post(
        "/queues/{queue}/purge",
        response_model=m.PurgeOut,
        openapi_extra=scoped("admin"),
        responses=responses(404),
        summary="Delete every job in the given states (never running ones)",
        tags=["queues"],
    )
    async def purge(queue: QueueName, body: Annotated[m.PurgeRequest | None, Body()] = None) -> Response:
        await require_queue(client, queue)
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
