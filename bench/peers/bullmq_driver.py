"""BullMQ for Python (the `bullmq` PyPI port).  Async API; bulk via Queue.addBulk."""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from bullmq import Queue, Worker


async def process(job, token):
    i, sent = job.data["i"], job.data.get("sent", 0.0)
    if job.name == "sleep":
        common.begin()
        await common.async_sleep()
    elif job.name == "flaky" and common.should_fail(i):
        raise common.Flake(i)
    common.done(i, sent)


class BullMQPyPeer(common.Peer):
    name = "bullmq-py"
    version = common.lib_version("bullmq")
    variants = {"default": "Worker(concurrency=100; 200 for io), default job options (completed jobs kept)"}
    concurrency = 100
    has_async = has_bulk = True

    def _opts(self, kind):
        return {"attempts": 2} if kind == "flaky" else {}  # no backoff: retried at once

    async def aopen(self):
        self.q = Queue(self.queue, {"connection": self.url})

    async def aclose(self):
        await self.q.close()

    async def aenqueue(self, kind, i, sent=0.0):
        await self.q.add(kind, {"i": i, "sent": sent}, self._opts(kind))

    async def bulk(self, kind, ids):
        await self.q.addBulk([{"name": kind, "data": {"i": i}, "opts": self._opts(kind)} for i in ids])

    def work(self, kind, concurrency):
        async def run():
            Worker(self.queue, process, {"connection": self.url, "concurrency": concurrency})
            await asyncio.Event().wait()  # until killed

        asyncio.run(run())


if __name__ == "__main__":
    common.main(BullMQPyPeer)
