"""A Sentinel-watched group for failover runs: 1 primary, 2 replicas, 3 sentinels (quorum 2).

All from the same server binary, on free loopback ports; ``down-after`` 1 s so a failover
takes seconds, not the 30 s default.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from conveyor.dev.server import RedisServer, free_port

PASSWORD = "failover-secret"
DOWN_AFTER_MS = 1000


class SentinelGroup:
    def __init__(self, directory: Path) -> None:
        fast_sync = ("--repl-diskless-sync-delay", "0", "--masterauth", PASSWORD)
        self.primary = RedisServer(password=PASSWORD, appendonly=False, extra_args=fast_sync).start()
        self.replicas = [
            RedisServer(
                password=PASSWORD,
                appendonly=False,
                extra_args=(*fast_sync, "--replicaof", "127.0.0.1", str(self.primary.port)),
            ).start()
            for _ in range(2)
        ]
        self.sentinels: list[RedisServer] = []
        for index in range(3):
            folder = directory / f"sentinel-{index}"
            folder.mkdir(parents=True, exist_ok=True)
            port = free_port()
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\nrequirepass {PASSWORD}\n"
                f"sentinel monitor mymaster 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel auth-pass mymaster {PASSWORD}\n"
                f"sentinel down-after-milliseconds mymaster {DOWN_AFTER_MS}\n"
                "sentinel failover-timeout mymaster 10000\n"
            )
            sentinel = RedisServer(directory=folder, port=port, password=PASSWORD, appendonly=False)
            sentinel.command = lambda config=config, folder=folder, s=sentinel: [  # type: ignore[method-assign]
                s.binary,
                str(config),
                "--sentinel",
                "--dir",
                str(folder),
                "--logfile",
                str(folder / "server.log"),
            ]
            self.sentinels.append(sentinel.start())
        self._wait_until_watched()

    def _wait_until_watched(self) -> None:
        deadline = time.monotonic() + 20
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, password=PASSWORD, decode_responses=True)
            try:
                while True:
                    info = client.execute_command("SENTINEL", "MASTER", "mymaster")
                    fields = dict(zip(info[::2], info[1::2], strict=True)) if isinstance(info, list) else info
                    replicas = int(fields.get("num-slaves", 0))
                    if replicas >= 2 and int(fields.get("num-other-sentinels", 0)) >= 2:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"sentinels not ready: {fields}")
                    time.sleep(0.1)
            finally:
                client.close()

    @property
    def url(self) -> str:
        return self.url_via(self.sentinels)

    @property
    def far_url(self) -> str:
        """A URL without the sentinel that :meth:`force_failover` asks: its clients hear of
        the failover only from the other two, once they learn of it."""
        return self.url_via(self.sentinels[1:])

    @staticmethod
    def url_via(sentinels: list[RedisServer]) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
        return f"redis+sentinel://:{PASSWORD}@{hosts}/mymaster"

    def current_primary_port(self) -> int:
        client = redis.Redis(port=self.sentinels[0].port, password=PASSWORD, decode_responses=True)
        try:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
            return int(port)
        finally:
            client.close()

    def force_failover(self) -> None:
        client = redis.Redis(port=self.sentinels[0].port, password=PASSWORD, decode_responses=True)
        try:
            client.execute_command("SENTINEL", "FAILOVER", "mymaster")
        finally:
            client.close()

    def stop(self) -> None:
        for server in (*self.sentinels, *self.replicas, self.primary):
            server.stop()
