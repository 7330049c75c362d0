"""streaq driver (Redis streams, coredis).  Async API; bulk via Worker.enqueue_many."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from streaq import StreaqRetry, Worker


async def noop(i: int, sent: float = 0.0) -> None:
    common.done(i, sent)


async def sleep(i: int, sent: float = 0.0) -> None:
    common.begin()
    await common.async_sleep()
    common.done(i)


async def flaky(i: int, sent: float = 0.0) -> None:
    if common.should_fail(i):
        raise StreaqRetry(delay=0)  # streaq retries only on StreaqRetry; other errors fail the task
    common.done(i)


class StreaqPeer(common.Peer):
    name = "streaq"
    version = common.lib_version("streaq")
    variants = {
        "tuned": "Worker(concurrency=100; 200 for io), tasks silent=True (no per-task log lines)",
        "default": "defaults: Worker(concurrency=16), per-task logging",
    }
    concurrency = 100
    has_async = has_bulk = True

    def __init__(self, args):
        super().__init__(args)
        if self.variant == "default":
            self.concurrency = 16
        self.conc = args.concurrency or (200 if args.kind == "sleep" else self.concurrency)
        self.worker = Worker(redis_url=self.url, queue_name=self.queue, concurrency=self.conc)
        silent = self.variant == "tuned"
        self.tasks = {f.__name__: self.worker.task(silent=silent)(f) for f in (noop, sleep, flaky)}

    async def aopen(self):
        self._ctx = self.worker.__asynccontextmanager__()
        await self._ctx.__aenter__()

    async def aclose(self):
        await self._ctx.__aexit__(None, None, None)

    async def aenqueue(self, kind, i, sent=0.0):
        await self.tasks[kind].enqueue(i, sent)

    async def bulk(self, kind, ids):
        await self.worker.enqueue_many([self.tasks[kind].enqueue(i) for i in ids])

    def work(self, kind, concurrency):
        self.worker.run_sync()


if __name__ == "__main__":
    common.main(StreaqPeer)
