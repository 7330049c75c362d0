"""uvicorn's httptools protocol with a cap on the request head (see :mod:`.server`).

httptools hands a header to uvicorn only once the whole field has arrived, so the cap
cannot be applied field by field: it counts the bytes of the chunks that a head has filled
so far, and refuses once they pass ``max_head_bytes``. A chunk in which a message ended and
the next one began is not counted, since where its head starts is unknown: a head may hold
one read (at most 256 KiB) more than the cap before the connection is closed, never more.
A head that arrived within one chunk is measured exactly when it is complete.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .problems import MEDIA_TYPE, PROBLEM_TYPE, TITLES
from .server import MAX_HEAD_BYTES, MAX_HEADERS


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops and uvicorn answers (see send_400_response)."""


class CappedHttpToolsProtocol(HttpToolsProtocol):
    """Answers 431 (and closes the connection) to a request head over ``max_head_bytes`` or
    with more than ``max_headers`` fields, without reading the rest of it."""

    max_head_bytes = MAX_HEAD_BYTES
    max_headers = MAX_HEADERS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True  # the next bytes start or continue a request head
        self._head_bytes = 0  # bytes of chunks the current head filled entirely
        self._message_ended = False  # in this chunk: the next head starts somewhere inside it
        self._refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        chunk_in_head = self._in_head
        self._message_ended = False
        super().data_received(data)
        if self._in_head and chunk_in_head and not self._message_ended:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._refuse(f"the request head is over {self.max_head_bytes:,} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(self.headers) > self.max_headers:
            self._refusal = f"the request has more than {self.max_headers} header fields"
            raise _HeadTooLarge()

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head_bytes:
            self._refusal = f"the request head is over {self.max_head_bytes:,} bytes"
            raise _HeadTooLarge()
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._message_ended = True

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error with 400; a callback above raised this one.
        if self._refusal is not None:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse(self, detail: str) -> None:
        body = orjson.dumps(
            {
                "type": PROBLEM_TYPE + "header-too-large",
                "title": TITLES[431],
                "status": 431,
                "detail": f"{detail}; send fewer or shorter header fields",
            }
        )
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: " + MEDIA_TYPE.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
