"""What the endpoints share: one AsyncClient, the settings, the count of open streams, and
the history store when one is configured.

A host application makes one :class:`ApiService`, passes it to :func:`~conveyor.api.api_router`
and closes it when it stops; nothing here is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from ..client import AsyncClient
from ..config import Settings
from ..history import HistoryStore, open_store
from ..history.archiver import archive_until_closed
from ..httpcall import HTTP_TASK, parse_request
from ..ops.keys import QueueKeys
from ..task import DEFAULT_OPTIONS, Task, TaskCall, TaskDefaults
from .models import EnqueueRequest
from .problems import Problem
from .settings import ApiSettings


async def _never_called(*args: Any, **kwargs: Any) -> None:
    """Stands in for a task function the API never imports: it only enqueues by name."""


class ApiService:
    """The API's dependencies: a Redis client, the settings and the history store, injected
    into the router."""

    def __init__(self, settings: ApiSettings, client: AsyncClient | None = None) -> None:
        self.settings = settings
        self.client = client or AsyncClient.from_settings(
            Settings(
                redis_url=settings.redis_url,
                prefix=settings.prefix,
                max_payload_bytes=settings.max_payload_bytes,
                cluster_wait_ms=settings.cluster_wait_ms,
            )
        )
        self.open_streams = 0
        self._history: HistoryStore | None = None
        self._history_lock = asyncio.Lock()
        self._archiving_closed = asyncio.Event()

    def start_archiving(self) -> asyncio.Task[None] | None:
        """With a history URL (and ``archive`` on), archive every queue beside serving."""
        url = self.settings.history_url
        if not url or not self.settings.archive:
            return None
        client = self.client

        async def every_queue() -> dict[str, QueueKeys]:
            return {queue: client.keys(queue) for queue in await client.queues()}

        self._archiving_closed = asyncio.Event()
        return asyncio.create_task(
            archive_until_closed(client, {}, url, self._archiving_closed, discover=every_queue),
            name="conveyor-archive",
        )

    async def stop_archiving(self, task: asyncio.Task[None] | None) -> None:
        if task is None:
            return
        self._archiving_closed.set()
        with contextlib.suppress(TimeoutError):  # a batch the database did not take stays in Redis
            await asyncio.wait_for(task, 10)

    async def history(self) -> HistoryStore:
        """The history store, opened (and migrated) by the first request that needs it, once:
        requests arriving meanwhile wait for that opening rather than open stores of their
        own. One that fails to open is tried again by the next request.

        Raises ``Problem`` 404 ``history-disabled`` when ``settings.history_url`` is not set:
        this server has no history, as it has no endpoint at an unknown path. Not 503: that
        says "retry later", and clients, proxies and alerts treat it as a failing server,
        while no retry helps until the server is configured. The problem's type tells it
        apart from the 404 ``not-found`` of a job the history does not hold.
        """
        if self._history is not None:
            return self._history
        url = self.settings.history_url
        if url is None:
            raise Problem(
                404,
                "the job history is not enabled on this server: set CONVEYOR_HISTORY_URL "
                "(sqlite:///path/history.db or postgresql://user@host/db) and restart the API",
                code="history-disabled",
            )
        async with self._history_lock:
            if self._history is None:
                self._history = await open_store(url)
            return self._history

    async def aclose(self) -> None:
        history, self._history = self._history, None
        try:
            if history is not None:
                await history.close()
        finally:
            await self.client.close()

    def check_capacity(self) -> None:
        """Answer 429 when ``max_streams`` long polls and event streams are already open."""
        if self.open_streams >= self.settings.max_streams:
            raise Problem(
                429,
                f"this API process already serves {self.settings.max_streams} long polls and event "
                "streams; retry shortly or raise CONVEYOR_API_MAX_STREAMS",
                code="too-many-streams",
                headers={"Retry-After": "1"},
            )

    @contextlib.asynccontextmanager
    async def stream_slot(self) -> AsyncIterator[None]:
        """Hold one of ``max_streams`` slots for a long poll or an event stream, or answer 429."""
        self.check_capacity()
        self.open_streams += 1
        try:
            yield
        finally:
            self.open_streams -= 1


def idempotent_job_id(queue: str, key: str) -> str:
    """The job id an ``Idempotency-Key`` stands for: the same key on the same queue always
    names the same job, so a repeated request finds the first job instead of making one."""
    return "idem-" + hashlib.sha256(f"{queue}\0{key}".encode()).hexdigest()[:40]


def build_call(queue: str, body: EnqueueRequest, job_id: str | None = None) -> TaskCall[Any]:
    """A TaskCall from a task name and JSON arguments; raises ``Problem`` naming the field."""
    if body.task == HTTP_TASK:
        try:
            parse_request(body.kwargs)
        except ValueError as exc:
            raise Problem(422, f"kwargs.{exc}", code="invalid-http-call", field="kwargs") from None
        if body.args:
            raise Problem(422, "args: HTTP calls take keyword arguments only", field="args")
    job_id = job_id or body.job_id
    plain = (
        job_id is None
        and body.priority is None
        and body.delay is None
        and body.run_at is None
        and body.retries is None
        and body.timeout is None
        and body.ttl is None
        and body.dedup is None
        and body.dedup_window is None
        and not body.debounce
    )
    if plain:  # the common case, without building a Task (bulk enqueues stay cheap)
        return TaskCall(body.task, tuple(body.args), body.kwargs, queue, 0, DEFAULT_OPTIONS)
    task: Task[..., Any] = Task(_never_called, body.task, TaskDefaults(queue=queue))
    try:
        configured = task.with_options(
            job_id=job_id,
            priority=body.priority,
            delay=body.delay,
            run_at=body.run_at,
            retries=body.retries,
            timeout=body.timeout,
            ttl=body.ttl,
            dedup=body.dedup,
            dedup_window=body.dedup_window,
            debounce=body.debounce or None,
        )
    except ValueError as exc:
        message = str(exc)
        field = next(
            (
                name
                for name in ("run_at", "delay", "debounce", "dedup_window", "dedup", "job_id", "priority")
                if name in message
            ),
            None,
        )
        raise Problem(422, message, code="invalid-options", field=field) from None
    return configured.call(*body.args, **body.kwargs)
