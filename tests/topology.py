"""Servers in the shapes production uses: a 3-primary Cluster and a Sentinel-watched primary.

All started by the tests from the same server binary, on free loopback ports.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import redis

from conveyor.dev.server import RedisServer, free_port

PASSWORD = "topology-secret"


class Cluster:
    def __init__(self, size: int = 3) -> None:
        args = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--masterauth",
            PASSWORD,
            "--cluster-node-timeout",
            "2000",
        )
        self.nodes = [
            RedisServer(password=PASSWORD, appendonly=False, extra_args=args).start() for _ in range(size)
        ]
        clients = [redis.Redis(port=n.port, password=PASSWORD, decode_responses=True) for n in self.nodes]
        step = 16384 // size
        for i, client in enumerate(clients):
            last = 16383 if i == size - 1 else (i + 1) * step - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + 20
        while not all("cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("cluster did not become ready")
            time.sleep(0.05)
        for client in clients:
            client.close()

    @property
    def url(self) -> str:
        return f"redis+cluster://:{PASSWORD}@127.0.0.1:{self.nodes[0].port}"

    def clients(self) -> list[redis.Redis]:
        """A plain client per node (close them), in the order of ``nodes``."""
        return [redis.Redis(port=n.port, password=PASSWORD, decode_responses=True) for n in self.nodes]

    def owner(self, slot: int) -> int:
        """The index in ``nodes`` of the node serving ``slot``, from the cluster's own map."""
        with redis.Redis(port=self.nodes[0].port, password=PASSWORD) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        port = next(int(r[2][1]) for r in ranges if int(r[0]) <= slot <= int(r[1]))
        return next(i for i, n in enumerate(self.nodes) if n.port == port)

    def begin_migration(self, slot: int, keys: Sequence[str] = ()) -> tuple[int, int]:
        """Mark ``slot`` MIGRATING from its owner to the next node (IMPORTING there) and move
        ``keys`` across, as ``valkey-cli --cluster reshard`` does; returns (source, target)."""
        source = self.owner(slot)
        target = (source + 1) % len(self.nodes)
        clients = self.clients()
        try:
            ids = [c.execute_command("CLUSTER", "MYID") for c in clients]
            clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
            clients[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
            if keys:
                self._migrate(clients[source], target, keys)
        finally:
            for client in clients:
                client.close()
        return source, target

    def finish_migration(self, slot: int, source: int, target: int) -> None:
        """Move the rest of ``slot``'s keys and give the slot to ``target`` on every node."""
        clients = self.clients()
        try:
            while keys := clients[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                self._migrate(clients[source], target, keys)
            target_id = clients[target].execute_command("CLUSTER", "MYID")
            for client in (clients[target], clients[source], *clients):
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            for client in clients:
                client.close()

    def _migrate(self, source: redis.Redis, target: int, keys: Sequence[str]) -> None:
        port = self.nodes[target].port
        source.execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "AUTH", PASSWORD, "KEYS", *keys)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelSetup:
    """One primary, one replica, one sentinel (enough to discover the primary)."""

    def __init__(self, directory: Path) -> None:
        self.primary = RedisServer(password=PASSWORD, appendonly=False).start()
        self.replica = RedisServer(
            password=PASSWORD,
            appendonly=False,
            extra_args=("--replicaof", "127.0.0.1", str(self.primary.port), "--masterauth", PASSWORD),
        ).start()
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\nrequirepass {PASSWORD}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel auth-pass mymaster {PASSWORD}\n"
            "sentinel down-after-milliseconds mymaster 2000\n"
        )
        self.sentinel = RedisServer(
            directory=directory,
            port=port,
            password=PASSWORD,
            appendonly=False,
            extra_args=(str(config), "--sentinel"),
        )
        # The config file must come first on a sentinel's command line.
        self.sentinel.command = lambda: [  # type: ignore[method-assign]
            self.sentinel.binary,
            str(config),
            "--sentinel",
            "--dir",
            str(directory),
            "--logfile",
            str(directory / "server.log"),
        ]
        self.sentinel.start()
        self.port = port

    @property
    def url(self) -> str:
        return f"redis+sentinel://:{PASSWORD}@127.0.0.1:{self.port}/mymaster"

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.primary):
            server.stop()
