"""How ``conveyor api`` runs uvicorn: with a cap on the request head.

Neither httptools (what uvicorn picks when it is installed, as the api extra installs it)
nor uvicorn limits the size of a request's head: one 64 MiB header line was read whole,
copied chunk by chunk, before the API could answer 401. :mod:`.protocol` caps it; with h11
instead, h11's own limit on an incomplete event does (it answers 400 rather than 431).
"""

from __future__ import annotations

from typing import Any

MAX_HEAD_BYTES = 32 * 1024
"""Largest request line plus header fields of one request; larger ones get 431."""
MAX_HEADERS = 100
"""Most header fields in one request; more get 431."""


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that cap request heads."""
    try:
        from .protocol import CappedHttpToolsProtocol
    except ImportError:  # no httptools: h11 buffers at most this much of an unfinished head
        return {"http": "h11", "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
    return {"http": CappedHttpToolsProtocol}
