"""SAQ driver (Redis queue).  Async API only; no bulk enqueue (Queue.map waits for results)."""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from saq import Queue, Worker


async def noop(ctx, *, i, sent=0.0):
    common.done(i, sent)


async def sleep(ctx, *, i, sent=0.0):
    common.begin()
    await common.async_sleep()
    common.done(i)


async def flaky(ctx, *, i, sent=0.0):
    if common.should_fail(i):
        raise common.Flake(i)
    common.done(i)


class SaqPeer(common.Peer):
    name = "saq"
    version = common.lib_version("saq")
    variants = {
        "tuned": "Worker(concurrency=100; 200 for io), defaults otherwise",
        "default": "defaults: Worker(concurrency=10)",
    }
    concurrency = 100
    has_async = True

    def __init__(self, args):
        super().__init__(args)
        if self.variant == "default":
            self.concurrency = 10

    async def aopen(self):
        self.q = Queue.from_url(self.url, name=self.queue)
        await self.q.connect()

    async def aclose(self):
        await self.q.disconnect()

    async def aenqueue(self, kind, i, sent=0.0):
        if kind == "flaky":
            await self.q.enqueue(kind, i=i, sent=sent, retries=2, retry_delay=0.0)
        else:
            await self.q.enqueue(kind, i=i, sent=sent)

    def work(self, kind, concurrency):
        async def run():
            q = Queue.from_url(self.url, name=self.queue)
            await q.connect()
            await Worker(q, functions=[noop, sleep, flaky], concurrency=concurrency).start()

        asyncio.run(run())


if __name__ == "__main__":
    common.main(SaqPeer)
