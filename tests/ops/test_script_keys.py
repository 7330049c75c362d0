"""Every key a script touches was handed to it in KEYS, or is built from a KEYS prefix.

The static checks (``test_scripts.py``) compare each script's declared KEYS with what its
wrapper passes and look for literal key names; they cannot follow a key built from ARGV or
a helper's argument. This test watches the server instead: ``MONITOR`` shows each
``EVALSHA`` with its KEYS and then every command the script ran, and ``COMMAND GETKEYS``
says which of a command's arguments are keys. A workload that runs every script once or
more must show no key outside its script's KEYS (equal to one, or under one that is a
prefix ending in ``:``) -- the rule that keeps a script on its queue's slot in a cluster.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor import AsyncClient, Client, Flow, JobState, RetryAfter, Schedule, Tasks, chord, current_job
from conveyor.dev.server import RedisServer
from conveyor.ops.scripts import load, names

from helpers import running_worker, wait_until

_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b'"': b'"', b"\\": b"\\"}


def _unquote(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\":
            nxt = raw[i + 1 : i + 2]
            if nxt == b"x":
                out.append(int(raw[i + 2 : i + 4], 16))
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out.append(raw[i])
        i += 1
    return bytes(out)


class Monitor(threading.Thread):
    """The server's MONITOR feed, as (source, args) pairs; source is ``lua`` or a client."""

    def __init__(self, server: RedisServer) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", server.port))
        if server.password:
            self.sock.sendall(f"AUTH {server.password}\r\n".encode())
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[tuple[str, list[bytes]]] = []

    def run(self) -> None:
        buffer = b""
        while chunk := self._receive():
            buffer += chunk
            *complete, buffer = buffer.split(b"\r\n")
            for line in complete:
                if not line.startswith(b"+") or b"[" not in line:
                    continue
                source = line[line.index(b"[") + 1 : line.index(b"]")].split(b" ", 1)[-1].decode()
                self.lines.append((source, [_unquote(m) for m in _QUOTED.findall(line, line.index(b"]"))]))

    def _receive(self) -> bytes:
        try:
            return self.sock.recv(1 << 16)
        except OSError:  # stop() shut the socket
            return b""

    def catch_up(self, client: Any) -> None:
        """Wait until the feed has shown everything sent before this call."""
        token = b"monitor-mark-" + str(id(self)).encode() + str(len(self.lines)).encode()
        client.transport.call("ECHO", token.decode())
        for _ in range(500):
            if any(args[-1:] == [token] for _, args in list(self.lines)):
                return
            threading.Event().wait(0.01)
        raise AssertionError("the MONITOR feed fell behind by more than 5 s")

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.join(5)
        self.sock.close()


def undeclared_keys(lines: list[tuple[str, list[bytes]]], raw: Any) -> tuple[set[str], list[str]]:
    """(names of the scripts seen, one message per key a script touched without declaring it)."""
    by_sha = {load(name).sha: name for name in names()}
    seen: set[str] = set()
    problems: list[str] = []
    script: str | None = None
    declared: list[bytes] = []
    for source, args in lines:
        if source != "lua":
            script = None
            if args and args[0].upper() == b"EVALSHA" and args[1].decode() in by_sha:
                script = by_sha[args[1].decode()]
                seen.add(script)
                declared = args[3 : 3 + int(args[2])]
            continue
        if script is None or not args:
            continue
        try:
            keys = raw.call("COMMAND", "GETKEYS", *args)
        except redis.ResponseError:  # no key arguments (TIME, ...)
            continue
        for key in (k.encode("utf-8", "surrogateescape") for k in keys):
            if key in declared or any(d.endswith(b":") and key.startswith(d) for d in declared):
                continue
            problems.append(f"{script}.lua: {args[0].decode()} on {key!r}, not in KEYS {declared}")
    return seen, problems


@pytest.mark.single_node("watches one server's MONITOR feed")
async def test_every_key_a_script_touches_was_declared(
    redis_server: RedisServer, queue: str, tmp_path: Path
) -> None:
    other = queue + "-other"
    tasks = Tasks(queue=queue)

    @tasks.task(retries=1)
    async def flaky(n: int) -> int:
        job = current_job()
        job.progress({"n": n})
        job.log(f"attempt {job.attempt}")
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return n

    asked_later: list[str] = []

    @tasks.task
    async def later() -> None:
        if not asked_later:
            asked_later.append(current_job().id)
            raise RetryAfter(0.05)

    @tasks.task(retries=0)
    async def broken() -> None:
        raise RuntimeError("for good")

    @tasks.task
    async def slow() -> None:
        await asyncio.sleep(30)

    @tasks.task
    async def total(results: list[int]) -> int:
        return sum(results)

    @tasks.task
    async def parent() -> int:
        return len(current_job().children)

    monitor = Monitor(redis_server)
    monitor.start()
    try:
        async with AsyncClient.from_url(redis_server.url) as client:
            await client.set_limits(queue, group_concurrency=1, rate=(1000, 1))
            await client.add_schedule(Schedule("tick", "flaky", queue=queue, every=1, args=(0,)))
            grouped = [flaky.with_options(group=f"g{i % 2}", priority=i % 3).call(i) for i in range(4)]
            handles = await client.enqueue_many(grouped)
            await client.enqueue(flaky.with_options(dedup="d", dedup_window=5, debounce=True), 1)
            await client.enqueue(flaky.with_options(dedup="d", dedup_window=5, debounce=True), 2)
            delayed = await client.enqueue(flaky.with_options(delay=60), 3)
            await client.promote(queue, delayed.id)
            doomed = await client.enqueue(broken)
            removable = await client.enqueue(flaky.with_options(delay=60), 4)
            await client.remove(queue, removable.id)
            await client.enqueue(later.with_options(retries=1))
            flow = await client.enqueue_flow(
                chord([flaky.with_options(queue=other).call(5), flaky.call(6)], total.call())
            )
            await client.enqueue_flow(Flow(parent.call(), [flaky.call(7)]))
            running = await client.enqueue(slow)
            handed_back = await client.enqueue(slow)  # still running at shutdown: requeued
            async with running_worker(
                tasks,
                redis_server.url,
                queues=[queue, other],
                lease=1.0,
                shutdown_grace=0.1,
                history_url=f"sqlite:///{tmp_path / 'history.db'}",  # every job ends handed off
            ):
                for handle in handles:
                    await handle.result(timeout=15)
                assert await flow.job.result(timeout=15) == 11
                await wait_until(lambda: _state_is(client, queue, running.id, JobState.ACTIVE), timeout=10)
                await client.cancel(queue, running.id)
                await wait_until(lambda: _state_is(client, queue, doomed.id, JobState.FAILED), timeout=10)
                await client.retry(queue)
                await client.job_logs(queue, handles[0].id)
                await asyncio.sleep(1.2)  # a schedule tick, a sweep, a heartbeat
            assert await _state_is(client, queue, handed_back.id, JobState.WAITING)
            await client.counts(queue)
            await client.figures(queue, minutes=2)
            await client.list_jobs(queue, "completed")
            await client.enqueue(flaky.with_options(delay=60), 8)
            await client.purge(queue)
        with Client.from_url(redis_server.url) as raw:
            monitor.catch_up(raw)
            seen, problems = undeclared_keys(list(monitor.lines), raw.transport)
    finally:
        monitor.stop()
    assert problems == [], "\n".join(problems[:20])
    assert seen == set(names()), f"scripts the workload never ran: {sorted(set(names()) - seen)}"


async def _state_is(client: AsyncClient, queue: str, job_id: str, state: JobState) -> bool:
    return (await client.get_job(queue, job_id)).state is state


def test_the_monitor_parser_sees_a_stray_key(redis_server: RedisServer) -> None:
    """The check can fail: a script writing a key it was not given is reported."""
    with Client.from_url(redis_server.url) as raw:
        lines = [
            (
                "127.0.0.1:1",
                [b"EVALSHA", load("extend").sha.encode(), b"2", b"cv:{q}:active", b"cv:{q}:job:"],
            ),
            ("lua", [b"HMGET", b"cv:{q}:job:1", b"tk"]),
            ("lua", [b"ZADD", b"cv:{q}:active", b"1", b"x"]),
            ("lua", [b"SET", b"cv:{other}:stray", b"1"]),
            ("lua", [b"TIME"]),
        ]
        seen, problems = undeclared_keys(lines, raw.transport)
    assert seen == {"extend"}
    assert len(problems) == 1 and "cv:{other}:stray" in problems[0]
