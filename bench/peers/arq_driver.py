"""arq driver.  Async API only.  `tuned`: max_jobs = concurrency (100) and a
10 ms poll; `default`: arq's own max_jobs=10 and 0.5 s poll_delay."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from arq import Retry, Worker, create_pool
from arq.connections import RedisSettings


async def noop(ctx, i, sent=0.0):
    common.done(i, sent)


async def sleep(ctx, i, sent=0.0):
    common.begin()
    await common.async_sleep()
    common.done(i)


async def flaky(ctx, i, sent=0.0):
    if common.should_fail(i):
        raise Retry(defer=0)  # arq retries only on Retry (or timeouts), not on any exception
    common.done(i)


class ArqPeer(common.Peer):
    name = "arq"
    version = common.lib_version("arq")
    variants = {
        "tuned": "max_jobs=concurrency (100; 200 for io), poll_delay=0.01 s",
        "default": "defaults: max_jobs=10, poll_delay=0.5 s",
    }
    concurrency = 100
    has_async = True

    def __init__(self, args):
        super().__init__(args)
        self.settings = RedisSettings.from_dsn(self.url)
        if self.variant == "default":
            self.concurrency = 10  # arq's default max_jobs (io still gets its 200 slots)

    async def aopen(self):
        self.pool = await create_pool(self.settings, default_queue_name=self.queue)

    async def aclose(self):
        await self.pool.aclose()

    async def aenqueue(self, kind, i, sent=0.0):
        await self.pool.enqueue_job(kind, i, sent)

    def work(self, kind, concurrency):
        opts = {"max_jobs": concurrency}
        if self.variant == "tuned":
            opts["poll_delay"] = 0.01
        Worker(
            functions=[noop, sleep, flaky], redis_settings=self.settings, queue_name=self.queue, **opts
        ).run()


if __name__ == "__main__":
    common.main(ArqPeer)
