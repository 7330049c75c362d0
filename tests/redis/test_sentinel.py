"""conveyor.redis.sentinel: reading the sentinels' events and views, and connections pinned for WAIT.

Failing over under load is tested in tests/chaos/test_chaos_failover.py.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import weakref
from typing import Any

import pytest
import redis
from redis.exceptions import RedisError

from conveyor.redis.connect import async_transport, sync_transport
from conveyor.redis.sentinel import PinnedConnectionLost, PrimaryWatcher, elect, parse_event

from helpers import wait_until

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): failover holds timed


def test_parse_event() -> None:
    assert parse_event("+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 6380") == (
        "mymaster",
        ("10.0.0.1", 6379),
    )
    assert parse_event("+elected-leader", "master mymaster 10.0.0.1 6379") == ("mymaster", ("10.0.0.1", 6379))
    assert parse_event("+selected-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379") == (
        "mymaster",
        ("10.0.0.1", 6379),
    )
    assert parse_event("+new-epoch", "7") is None
    assert parse_event("+selected-slave", "slave x @ mymaster") is None


def test_elect_believes_the_highest_epoch() -> None:
    old, new = ("10.0.0.1", 6379), ("10.0.0.2", 6380)
    # The sentinel that ran the failover names the new primary before the others hear of it.
    assert elect({0: (1, new), 1: (0, old), 2: (0, old)}, old) == new
    assert elect({0: (3, old), 1: (3, old), 2: (3, new)}, new) == old  # most sentinels
    assert elect({0: (3, old), 1: (3, new)}, new) == new  # a tie keeps the current one
    assert elect({}, old) is None


async def test_watcher_names_the_primary(sentinel: Any) -> None:
    watcher = PrimaryWatcher(
        [("127.0.0.1", sentinel.port)], "mymaster", {"password": sentinel.primary.password}
    )
    try:
        await wait_until(lambda: watcher.primary is not None, timeout=5)
        assert watcher.primary == ("127.0.0.1", sentinel.primary.port)
        assert not watcher.paused() and watcher.switches == 0
    finally:
        await watcher.aclose()


async def test_a_watcher_dropped_without_close_stops_its_threads(sentinel: Any) -> None:
    watcher = PrimaryWatcher(
        [("127.0.0.1", sentinel.port)], "mymaster", {"password": sentinel.primary.password}
    )
    threads, ref = list(watcher._threads), weakref.ref(watcher)
    del watcher

    def gone() -> bool:
        gc.collect()
        return ref() is None and not any(t.is_alive() for t in threads)

    await wait_until(gone, timeout=5)


def _drop_clients(sentinel: Any) -> None:
    """Close every client connection of the primary (not its replica's link)."""
    admin = redis.Redis(port=sentinel.primary.port, password=sentinel.primary.password)
    try:
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    finally:
        admin.close()


def test_a_pinned_connection_never_moves_after_its_write(sentinel: Any) -> None:
    """WAIT counts the writes of its own connection: on a new one it would confirm nothing."""
    transport = sync_transport(sentinel.url)
    key = f"pinned-{uuid.uuid4().hex}"
    try:
        with transport.pinned() as pinned:
            pinned.call("SET", key, "1")
            _drop_clients(sentinel)
            with pytest.raises(RedisError):  # found out on the next command
                pinned.call("WAIT", 1, 1000)
            with pytest.raises(PinnedConnectionLost):  # and not reopened, here or elsewhere
                pinned.call("WAIT", 1, 1000)
        # Unpinned, the pool's connections reconnect as usual.
        assert transport.call("GET", key) == "1"
        with transport.pinned() as pinned:
            pinned.call("SET", key, "2")
            assert int(pinned.call("WAIT", 0, 0)) >= 0
    finally:
        transport.call("DEL", key)
        transport.close()


async def test_a_pinned_connection_never_moves_after_its_write_async(sentinel: Any) -> None:
    transport = async_transport(sentinel.url)
    key = f"pinned-{uuid.uuid4().hex}"
    try:
        async with transport.pinned() as pinned:
            await pinned.call("SET", key, "1")
            _drop_clients(sentinel)
            with pytest.raises(RedisError):
                await pinned.call("WAIT", 1, 1000)
            with pytest.raises(PinnedConnectionLost):
                await pinned.call("WAIT", 1, 1000)
        assert await transport.call("GET", key) == "1"
        async with transport.pinned() as pinned:
            await pinned.call("SET", key, "2")
            assert int(await pinned.call("WAIT", 0, 0)) >= 0
    finally:
        await transport.call("DEL", key)
        await transport.aclose()


OLD, NEW = ("10.0.0.1", 6379), ("10.0.0.2", 6380)


def _watcher_on(primary: tuple[str, int], pause_limit: float = 5.0) -> PrimaryWatcher:
    """A watcher of no sentinel, fed by hand the way its threads feed it."""
    watcher = PrimaryWatcher([], "mymaster", {}, pause_limit=pause_limit)
    watcher._update(0, (0, primary, time.monotonic()))
    return watcher


def test_a_hold_lasts_until_the_new_primary_is_named() -> None:
    watcher = _watcher_on(OLD)
    watcher._hold(OLD, "+elected-leader")
    assert watcher.paused()
    named = threading.Timer(0.2, watcher._update, (1, (1, NEW, time.monotonic())))
    named.start()
    started = time.monotonic()
    assert watcher.wait() == NEW
    assert 0.15 < time.monotonic() - started < 2
    assert not watcher.paused() and watcher.switches == 1


async def test_a_hold_lasts_until_the_new_primary_is_named_async() -> None:
    watcher = _watcher_on(OLD)
    watcher._hold(OLD, "+elected-leader")
    asyncio.get_running_loop().call_later(0.2, watcher._update, 1, (1, NEW, time.monotonic()))
    assert await watcher.await_primary() == NEW


def test_a_hold_runs_out_once_and_is_not_taken_again() -> None:
    watcher = _watcher_on(OLD, pause_limit=0.3)
    watcher._hold(OLD, "+elected-leader")
    started = time.monotonic()
    assert watcher.wait() == OLD  # the sentinels never named another: go on with this one
    assert 0.25 < time.monotonic() - started < 1.5
    watcher._hold(OLD, "failover_in_progress")  # the same failover, seen again by a poll
    assert not watcher.paused()


def test_a_late_event_about_an_old_primary_does_not_hold() -> None:
    watcher = _watcher_on(NEW)
    watcher._hold(OLD, "+failover-state-wait-promotion")
    assert not watcher.paused()
