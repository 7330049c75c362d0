"""Schedule endpoints: list, read, create, replace and delete repeatable jobs."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response

from .. import ops
from ..client import AsyncClient
from ..errors import SerializationError
from ..ops.keys import queues_key
from ..schedules import Schedule, ScheduleState
from . import models as m
from .problems import Problem, responses
from .queues import require_queue
from .routing import QueueName, ScheduleName, json_response, scoped
from .service import ApiService


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


def _make_schedule(queue: str, name: str, body: m.ScheduleIn) -> Schedule:
    """A schedule from a request body; raises ``Problem`` naming the field that is wrong."""
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


async def _listed(client: AsyncClient, queue: str) -> list[ScheduleState]:
    """The queue's schedules; 404 when there are none because there is no such queue."""
    found = await client.schedules(queue)
    if not found:
        await require_queue(client, queue)
    return found


def add_schedule_routes(router: APIRouter, service: ApiService) -> None:
    """Add the schedule endpoints to ``router``."""
    client = service.client

    async def _schedule_state(queue: str, name: str) -> ScheduleState | None:
        return next((s for s in await client.schedules(queue) if s.schedule.name == name), None)

    # ------------------------------------------------------------------ schedules
    @router.get(
        "/queues/{queue}/schedules",
        response_model=m.ScheduleList,
        openapi_extra=scoped("read"),
        responses=responses(404),
        summary="List the queue's repeatable jobs with their next run times",
        tags=["schedules"],
    )
    async def list_schedules(queue: QueueName) -> Response:
        return json_response({"schedules": [_schedule_out(s) for s in await _listed(client, queue)]})

    @router.get(
        "/queues/{queue}/schedules/{name}",
        response_model=m.ScheduleOut,
        openapi_extra=scoped("read"),
        responses=responses(404),
        summary="One repeatable job",
        tags=["schedules"],
    )
    async def get_schedule(queue: QueueName, name: ScheduleName) -> Response:
        state = await _schedule_state(queue, name)
        if state is None:
            raise Problem(404, f"no schedule {name!r} in queue {queue!r}", code="not-found")
        return json_response(_schedule_out(state))

    async def _save(schedule: Schedule) -> ScheduleState:
        try:
            schedule.to_json()
        except SerializationError as exc:
            raise Problem(422, str(exc), code="not-json", field="args") from None
        await client.add_schedule(schedule)
        # Registered, so that the queue is listed before the schedule's first tick.
        await client.run(ops.register_queue(queues_key(client.settings.prefix), schedule.queue))
        state = await _schedule_state(schedule.queue, schedule.name)
        assert state is not None
        return state

    @router.post(
        "/queues/{queue}/schedules",
        status_code=201,
        response_model=m.ScheduleOut,
        openapi_extra=scoped("admin"),
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
        return json_response(_schedule_out(await _save(schedule)), 201)

    @router.put(
        "/queues/{queue}/schedules/{name}",
        response_model=m.ScheduleOut,
        openapi_extra=scoped("admin"),
        responses={201: {"model": m.ScheduleOut, "description": "Created"}},
        summary="Create or replace a repeatable job",
        tags=["schedules"],
    )
    async def put_schedule(queue: QueueName, name: ScheduleName, body: m.ScheduleIn) -> Response:
        schedule = _make_schedule(queue, name, body)
        existed = await _schedule_state(queue, name) is not None
        return json_response(_schedule_out(await _save(schedule)), 200 if existed else 201)

    @router.delete(
        "/queues/{queue}/schedules/{name}",
        status_code=204,
        openapi_extra=scoped("admin"),
        responses=responses(404),
        summary="Delete a repeatable job",
        tags=["schedules"],
    )
    async def delete_schedule(queue: QueueName, name: ScheduleName) -> Response:
        if not await client.remove_schedule(queue, name):
            raise Problem(404, f"no schedule {name!r} in queue {queue!r}", code="not-found")
        return Response(status_code=204)
