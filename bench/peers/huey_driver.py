"""Huey driver, RedisHuey (blocking BRPOP reads).  Sync API; no bulk (task.map
enqueues one by one)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from huey import RedisHuey
from redis import ConnectionPool


def noop(i, sent=0.0):
    common.done(i, sent)


def sleep(i, sent=0.0):
    common.begin()
    common.sync_sleep()
    common.done(i)


def flaky(i, sent=0.0):
    if common.should_fail(i):
        raise common.Flake(i)
    common.done(i)


class HueyPeer(common.Peer):
    name = "huey"
    version = common.lib_version("huey")
    variants = {
        "threads": "RedisHuey, consumer with 8 worker threads (200 for io), periodic tasks off",
        "default": "defaults: RedisHuey, consumer with 1 worker thread (200 for io)",
    }
    concurrency = 8
    has_sync = True

    def __init__(self, args):
        super().__init__(args)
        if self.variant == "default":
            self.concurrency = 1
        # each worker thread holds a connection; redis-py 8's pool stops at 100 by default
        pool = ConnectionPool.from_url(self.url, max_connections=max(100, (args.concurrency or 0) + 10))
        self.huey = RedisHuey(self.queue, connection_pool=pool)
        self.tasks = {
            "noop": self.huey.task(name="noop")(noop),
            "sleep": self.huey.task(name="sleep")(sleep),
            "flaky": self.huey.task(name="flaky", retries=1, retry_delay=0)(flaky),
        }

    def enqueue(self, kind, i, sent=0.0):
        self.tasks[kind](i, sent)

    def work(self, kind, concurrency):
        opts = {"periodic": False} if self.variant == "threads" else {}
        self.huey.create_consumer(workers=concurrency, worker_type="thread", **opts).run()


if __name__ == "__main__":
    common.main(HueyPeer)
