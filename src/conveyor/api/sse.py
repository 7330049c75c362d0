"""Server-sent events: a queue's lifecycle events as a ``text/event-stream``.

Each event carries the stream position as its ``id``, so a client that reconnects with
``Last-Event-ID`` continues where it left off (for as long as the capped stream still holds
that position). A comment line every 15 s keeps idle connections open through proxies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from .service import ApiService

KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 1.0
"""How long one blocking read waits in Redis before the stream checks whether the client left."""


async def event_stream(
    service: ApiService, request: Request, queue: str, after: str, limit: int | None
) -> Response:
    client = service.client
    client.keys(queue)  # validates the name before the response starts
    service.check_capacity()  # now, so that a refusal is a 429 rather than a cut stream

    async def body() -> AsyncIterator[bytes]:
        async with service.stream_slot():
            position = after
            if position == "$":  # pin "now" so events between reads are not skipped
                position = await client.last_event_id(queue)
            yield b": connected\n\n"
            sent = 0
            idle = 0.0
            while not await request.is_disconnected():
                batch, position = await client.read_events(queue, position, count=500, block=POLL_SECONDS)
                if not batch:
                    idle += POLL_SECONDS
                    if idle >= KEEPALIVE_SECONDS:
                        idle = 0.0
                        yield b": keepalive\n\n"
                    continue
                idle = 0.0
                chunks = []
                for event in batch:
                    data = {"kind": event.kind, "job_id": event.job_id, "queue": queue, **event.fields}
                    chunks.append(
                        b"id: %s\nevent: %s\ndata: %s\n\n"
                        % (event.stream_id.encode(), event.kind.encode(), orjson.dumps(data))
                    )
                    sent += 1
                    if limit is not None and sent >= limit:
                        yield b"".join(chunks)
                        return
                yield b"".join(chunks)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
