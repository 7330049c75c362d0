"""Which server is the primary: Sentinel-managed clients that follow a failover promptly.

redis-py's Sentinel clients ask the sentinels for the primary only when they open a new
connection. Pooled connections stay with the old primary until one of them fails, and in a
forced failover (``SENTINEL FAILOVER``, or a failover while the old primary is alive but
unreachable by the sentinels) the old primary goes on accepting writes for seconds: until
the sentinels get round to demoting it (about 8 s after the switch, see Sentinel's
``SENTINEL_PUBLISH_PERIOD * 4``). Everything written there is then wiped when it
resynchronises from the new primary -- with no error at any client.

A :class:`PrimaryWatcher` keeps its own view of the primary, shared by every connection of
one client (sync or async):

* it subscribes to each sentinel's events. The sentinel that runs a failover publishes
  ``+try-failover`` / ``+elected-leader`` / ``+selected-slave`` 100-200 ms *before* it sends
  ``REPLICAOF NO ONE`` to the chosen replica. From then until it names the new primary
  (about a second: it looks at the replica's INFO once a second during a failover),
  connections hold their commands (:data:`PAUSE_LIMIT` at most): whatever the old primary
  accepted after the promotion would be lost, so it gets nothing.
* it asks each sentinel for the primary (``GET-MASTER-ADDR-BY-NAME``, and the configuration
  epoch and flags from ``SENTINEL MASTER``) every :data:`POLL_INTERVAL` and after each
  event, and believes the answer with the highest epoch -- the rule Sentinel itself
  converges by. The sentinel that ran the failover reports the new primary (with the new
  epoch) as soon as it sees the replica in its role; the others only after they hear of
  it. A sentinel that flags the master ``failover_in_progress`` starts the hold as well:
  that is how a client that started, or reconnected, after the first events catches up.

Before each command a :class:`FollowingConnection` compares its server with the watcher's
primary, waits out a hold, and reconnects to the new primary if they differ: about 1 µs,
against some 100 µs for a redis-py round trip. A connection pinned for ``WAIT`` (durable
enqueue) is different: once it has written, it must not move, since ``WAIT`` counts the
writes of the connection it runs on; a pinned connection that lost its server fails
instead (:class:`PinnedConnectionLost`).

What remains (RELIABILITY.md has the figures): a write already sent when the announcement
arrives is lost if the promotion overtakes it (not seen in our runs); and a client that
cannot reach the sentinel running the failover hears of it only when that one names the
new primary, and loses what it wrote in the second before, durable or not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import weakref
from typing import Any

import redis
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger("conveyor.sentinel")

Address = tuple[str, int]

POLL_INTERVAL = 0.5
"""Seconds between two questions to each sentinel (events make them sooner)."""
PAUSE_LIMIT = 5.0
"""Longest a command waits for a failover that began to name its new primary. Sentinel
promotes a replica within about a second (its INFO period during a failover); if it takes
longer, commands go on to whichever server the sentinels name."""
STALE_AFTER = 3.0
"""A sentinel that has not answered for this long no longer counts."""

# Published by the sentinel that runs a failover, before it promotes a replica.
_STARTING = frozenset(
    {
        "+try-failover",
        "+elected-leader",
        "+failover-state-select-slave",
        "+selected-slave",
        "+failover-state-send-slaveof-noone",
        "+failover-state-wait-promotion",
    }
)
# After which the sentinel that sent it may name another primary: ask it now.
_SETTLING = frozenset(
    {"+promoted-slave", "+failover-state-reconf-slaves", "+switch-master", "+config-update-from", "+odown"}
)
_ENDING = frozenset(
    {
        "+failover-end",
        "+failover-end-for-timeout",
        "-failover-abort-not-elected",
        "-failover-abort-no-good-slave",
        "-failover-abort-slave-timeout",
        "-failover-abort-x-sdown",
    }
)
CHANNELS = sorted(_STARTING | _SETTLING | _ENDING)


def parse_event(channel: str, data: str) -> tuple[str, Address] | None:
    """The service (master name) a sentinel event is about, and that master's address as the
    event gives it: ``+switch-master <name> <old ip> <old port> <new ip> <new port>``; others
    describe an instance, ``master <name> <ip> <port>`` or ``<type> <name> <ip> <port> @
    <master name> <master ip> <master port>``."""
    fields = data.split()
    try:
        if channel == "+switch-master":
            return fields[0], (fields[1], int(fields[2]))
        if "@" in fields:
            at = fields.index("@")
            return fields[at + 1], (fields[at + 2], int(fields[at + 3]))
        if fields[0] == "master":
            return fields[1], (fields[2], int(fields[3]))
    except (IndexError, ValueError):
        pass
    return None


def elect(views: dict[int, tuple[int, Address]], current: Address | None) -> Address | None:
    """The primary by the sentinels' views (index -> (config epoch, address)): the address of
    the highest epoch; among several, the one most sentinels name, then the current one."""
    if not views:
        return None
    top = max(epoch for epoch, _ in views.values())
    votes = collections.Counter(address for epoch, address in views.values() if epoch == top)
    best = max(votes.values())
    named = sorted(address for address, count in votes.items() if count == best)
    return current if current in named else named[0]


class PrimaryWatcher:
    """The primary of one Sentinel service, kept current by a thread per sentinel.

    Threads rather than asyncio tasks so that one implementation serves the sync and the
    async clients; they are daemons, and each holds two connections to its sentinel.
    """

    def __init__(
        self,
        sentinels: list[Address],
        service: str,
        auth: dict[str, Any],
        poll_interval: float = POLL_INTERVAL,
        pause_limit: float = PAUSE_LIMIT,
    ) -> None:
        self.service = service
        self.poll_interval = poll_interval
        self.pause_limit = pause_limit
        self._views: dict[int, tuple[int, Address, float]] = {}
        self._primary: Address | None = None
        self._pause_until = 0.0
        self._paused_on: Address | None = None
        self._held: Address | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self.switches = 0
        """How many times the primary changed (for tests and logs)."""
        # The threads hold the watcher only weakly: a client dropped without close() stops
        # them once it is garbage (the finalizer), instead of polling the sentinels forever.
        weakref.finalize(self, self._stop.set)
        self._threads = [
            threading.Thread(
                target=_watch,
                args=(weakref.ref(self), self._stop, index, address, auth, poll_interval),
                name=f"conveyor-sentinel-{index}",
                daemon=True,
            )
            for index, address in enumerate(sentinels)
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ what connections ask
    @property
    def primary(self) -> Address | None:
        """The current primary, None until a sentinel has answered."""
        return self._primary

    def paused(self) -> bool:
        """A failover has begun and has not named its new primary yet."""
        return self._pause_until > time.monotonic() and self._primary == self._paused_on

    def wait(self) -> Address | None:
        """The primary, after waiting out a failover in progress (sync connections)."""
        if self.paused():
            with self._changed:
                # Woken when the primary changes or the failover ends; otherwise the pause
                # runs out by itself, which no thread announces.
                self._changed.wait_for(
                    lambda: not self.paused(), timeout=max(0.0, self._pause_until - time.monotonic())
                )
        return self._primary

    async def await_primary(self) -> Address | None:
        """The primary, after waiting out a failover in progress (asyncio connections).
        Polls: the watcher's threads cannot wake an event loop they do not know."""
        while self.paused():  # noqa: ASYNC110 - no asyncio.Event can be set from the threads
            await asyncio.sleep(0.005)
        return self._primary

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ fed by the threads
    def _poll(self, index: int, client: redis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)  # type: ignore[no-untyped-call]
        pipe.execute_command("SENTINEL", "MASTER", self.service)  # type: ignore[no-untyped-call]
        try:
            address, master = pipe.execute()
        except redis.ResponseError:  # the sentinel does not know this service (yet)
            self._forget(index)
            return
        if not address:
            self._forget(index)
            return
        fields = master if isinstance(master, dict) else dict(zip(master[::2], master[1::2], strict=True))
        named = (str(address[0]), int(address[1]))
        self._update(index, (int(fields.get("config-epoch", 0)), named, time.monotonic()))
        # A watcher that starts (or reconnects) during a failover has missed its first events;
        # the sentinel running it flags the master until it names the promoted replica.
        failing_over = "failover_in_progress" in str(fields.get("flags", "")).split(",")
        if failing_over and (str(fields.get("ip")), int(fields.get("port", 0))) == named:
            self._hold(named, "failover_in_progress")

    def _on_event(self, index: int, client: redis.Redis, channel: str, data: str) -> None:
        event = parse_event(channel, data)
        if event is None or event[0] != self.service:
            return
        if channel in _STARTING:
            self._hold(event[1], channel)
        elif channel in _ENDING:
            with self._changed:
                self._pause_until = 0.0
                self._held = None
                self._changed.notify_all()
        self._poll(index, client)

    def _hold(self, address: Address, why: str) -> None:
        """Hold commands while ``address`` (the current primary) is failed over; once per
        failover, so that one whose promotion fails does not hold them again and again."""
        with self._changed:
            if address != self._primary or address == self._held:
                return
            log.warning("sentinel: failover of %s begins (%s); holding writes", self.service, why)
            self._held = self._paused_on = address
            self._pause_until = time.monotonic() + self.pause_limit

    def _forget(self, index: int) -> None:
        self._update(index, None)

    def _update(self, index: int, view: tuple[int, Address, float] | None) -> None:
        with self._changed:
            if view is None:
                self._views.pop(index, None)
            else:
                self._views[index] = view
            now = time.monotonic()
            fresh = {
                i: (e, address) for i, (e, address, seen) in self._views.items() if now - seen < STALE_AFTER
            }
            primary = elect(fresh, self._primary)
            if primary is None or primary == self._primary:
                return
            if self._primary is not None:
                self.switches += 1
                log.warning(
                    "sentinel: %s moved from %s:%s to %s:%s; connections follow",
                    self.service,
                    *self._primary,
                    *primary,
                )
            self._primary = primary
            self._held = None
            self._changed.notify_all()


def _watch(
    ref: weakref.ref[PrimaryWatcher],
    stop: threading.Event,
    index: int,
    address: Address,
    auth: dict[str, Any],
    interval: float,
) -> None:
    """One sentinel's events and answers, for as long as the watcher lives."""
    client = redis.Redis(
        host=address[0],
        port=address[1],
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),  # the next poll is the retry
        **auth,
    )
    pubsub: Any = None
    next_poll = 0.0
    try:
        while not stop.is_set():
            try:
                if pubsub is None:
                    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
                    pubsub.subscribe(*CHANNELS)
                    next_poll = 0.0
                message = pubsub.get_message(timeout=0.1) if next_poll else None
                watcher = ref()
                if watcher is None:
                    return
                if time.monotonic() >= next_poll:
                    watcher._poll(index, client)
                    next_poll = time.monotonic() + interval
                if message is not None and message.get("type") == "message":
                    watcher._on_event(index, client, str(message["channel"]), str(message["data"]))
                del watcher
            except (RedisError, OSError, ValueError) as exc:
                # A sentinel that does not answer no longer counts; ask again shortly.
                log.debug("sentinel %s:%s: %s", address[0], address[1], exc)
                watcher = ref()
                if watcher is not None:
                    watcher._forget(index)
                    del watcher
                if pubsub is not None:
                    _quietly(pubsub.close)
                    pubsub = None
                stop.wait(interval)
    finally:
        if pubsub is not None:
            _quietly(pubsub.close)
        _quietly(client.close)


def _quietly(close: Any) -> None:
    with contextlib.suppress(Exception):  # closing a connection that may already be broken
        close()


class PinnedConnectionLost(RedisError):
    """The connection a durable enqueue wrote on was lost before ``WAIT`` confirmed the write.

    Not a ``ConnectionError``, which redis-py would retry on a new connection: ``WAIT`` there
    would count that connection's writes (none) and confirm nothing that happened."""

    def __init__(self) -> None:
        super().__init__(
            "the connection that wrote the jobs lost its server before WAIT confirmed them "
            "(a failover?); they may or may not exist"
        )


class _Following:
    """What both faces' connections share: the watcher they follow, and pinning."""

    def __init__(self, **kwargs: Any) -> None:
        self.watcher: PrimaryWatcher = kwargs.pop("watcher")
        self.pinned = False
        self.wrote = False
        super().__init__(**kwargs)

    def pin(self, pinned: bool) -> None:
        """Hold this connection to its server from its first write on (see the module doc)."""
        self.pinned = pinned
        self.wrote = False


class FollowingConnection(_Following, redis.sentinel.SentinelManagedConnection):
    """A Sentinel-managed connection that moves to the watcher's primary before a command."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not (self.pinned and self.wrote):
            primary = self.watcher.wait()
            if primary is not None and self._sock is not None and (self.host, self.port) != primary:
                self.disconnect()
        if self._sock is None:
            # The base class would reconnect to the same host; go through Sentinel instead
            # (a pinned connection that has written refuses, see _connect_retry).
            self.connect()  # type: ignore[no-untyped-call]
        self.wrote = self.pinned
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def _connect_retry(self) -> None:
        if self._sock:
            return
        if self.pinned and self.wrote:
            raise PinnedConnectionLost
        primary = self.watcher.primary
        if primary is None:  # the watcher has not heard from a sentinel yet
            super()._connect_retry()  # type: ignore[no-untyped-call]
            return
        self.connection_pool.master_address = primary  # what the pool checks on release
        self.connect_to(primary)  # type: ignore[no-untyped-call]


class AsyncFollowingConnection(_Following, redis.asyncio.sentinel.SentinelManagedConnection):
    """The asyncio twin of :class:`FollowingConnection`."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not (self.pinned and self.wrote):
            primary = await self.watcher.await_primary()
            if primary is not None and self.is_connected and (self.host, self.port) != primary:
                await self.disconnect()
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        self.wrote = self.pinned
        await super().send_packed_command(command, check_health)

    async def _connect_retry(self) -> None:
        if self._reader:
            return
        if self.pinned and self.wrote:
            raise PinnedConnectionLost
        primary = self.watcher.primary
        if primary is None:
            await super()._connect_retry()  # type: ignore[no-untyped-call]
            return
        self.connection_pool.master_address = primary
        await self.connect_to(primary)  # type: ignore[no-untyped-call]


def sentinel_options(auth: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """What a connection to a sentinel is opened with: the credentials and the timeouts of
    the primary's connections. redis-py gives sentinels the timeouts only when it gets no
    options for them at all, and Conveyor's carry the credentials; without a timeout, one
    half-open sentinel held the discovery of the primary forever."""
    return {**auth, **{k: v for k, v in options.items() if k.startswith("socket_")}}


def sync_primary(
    sentinels: list[Address], service: str, db: int, auth: dict[str, Any], options: dict[str, Any]
) -> tuple[redis.Redis, list[Any]]:
    """A client of the service's primary, and what to close with it (the watcher, the sentinels)."""
    watcher = PrimaryWatcher(sentinels, service, auth)
    sentinel = redis.sentinel.Sentinel(
        sentinels, sentinel_kwargs=sentinel_options(auth, options), **auth, **options
    )  # type: ignore[no-untyped-call, unused-ignore]
    client = sentinel.master_for(service, db=db, connection_class=FollowingConnection, watcher=watcher)  # type: ignore[no-untyped-call, unused-ignore]
    return client, [watcher, *sentinel.sentinels]


def async_primary(
    sentinels: list[Address], service: str, db: int, auth: dict[str, Any], options: dict[str, Any]
) -> tuple[redis.asyncio.Redis, list[Any]]:
    watcher = PrimaryWatcher(sentinels, service, auth)
    sentinel = redis.asyncio.sentinel.Sentinel(
        sentinels, sentinel_kwargs=sentinel_options(auth, options), **auth, **options
    )  # type: ignore[no-untyped-call, unused-ignore]
    client = sentinel.master_for(service, db=db, connection_class=AsyncFollowingConnection, watcher=watcher)
    return client, [watcher, *sentinel.sentinels]
