"""A small TCP proxy for network faults between Conveyor and Redis, run in a thread of its own.

Faults, each switchable while connections are open:

* ``latency``: every chunk is held this many seconds before it is passed on;
* ``reset()``: every open connection is closed with a TCP RST, both sides at once;
* ``blackhole``: nothing passes, either way; bytes are held (TCP would retransmit them)
  and delivered in order when the blackhole ends, if the connection still exists;
  new connections are accepted, and wait too;
* ``half_open()``: the Redis side of every open connection is closed, the client side is
  left open and silent -- the client sees neither a reply nor a close, like a peer that
  vanished behind a NAT or a crashed host.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any


class NetProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.latency = 0.0
        self._open = threading.Event()  # set: traffic flows; clear: blackhole
        self._open.set()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._half: set[asyncio.StreamWriter] = set()  # client sides left open and silent
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="netproxy")
        self._thread.start()
        self._ready.wait(5)

    # -------------------------------------------------------------- control (any thread)
    @property
    def port(self) -> int:
        return self._port

    def url_for(self, url: str, real_port: int) -> str:
        return url.replace(f":{real_port}/", f":{self.port}/")

    def blackhole(self, on: bool = True) -> None:
        if on:
            self._open.clear()
        else:
            self._open.set()
            self._loop.call_soon_threadsafe(self._wake.set)

    def reset(self) -> int:
        """RST every open connection; returns how many."""
        return self._call(self._reset)

    def half_open(self) -> int:
        """Close the Redis side of every open connection, leave the client side silent."""
        return self._call(self._half_open)

    def connections(self) -> int:
        return len(self._pairs)

    def close(self) -> None:
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, function: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(function(), self._loop).result(10)

    # -------------------------------------------------------------- the proxy (its loop)
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self._port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        pair = (client_w, server_w)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
            )
        finally:
            self._pairs.discard(pair)
            for writer in pair:
                if writer not in self._half:
                    writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if self.latency:
                await asyncio.sleep(self.latency)
            while not self._open.is_set():  # blackhole: hold the bytes
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.1)
            if writer.is_closing() or writer in self._half:
                break
            writer.write(data)
            await writer.drain()
        if not writer.is_closing() and writer not in self._half and writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    @staticmethod
    def _abort(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # linger 0: close sends RST, not FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _reset(self) -> int:
        pairs = list(self._pairs)
        for client_w, server_w in pairs:
            self._abort(client_w)
            self._abort(server_w)
        return len(pairs)

    async def _half_open(self) -> int:
        pairs = list(self._pairs)
        for client_w, server_w in pairs:
            self._half.add(client_w)  # never written to, never closed (until the proxy stops)
            client_w.transport.pause_reading()
            self._abort(server_w)
        return len(pairs)

    async def _shutdown(self) -> None:
        self._server.close()
        await self._reset()
        for writer in list(self._half):
            writer.transport.abort()
        await self._server.wait_closed()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
