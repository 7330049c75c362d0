"""Conveyor driver (run with the project's own venv).  Sync, async and bulk enqueue.

`default`: Worker(...).run(), which picks uvloop when it is installed (it is in the
project's dev venv); `asyncio`: the same worker on the stock asyncio loop, to compare
like for like with peers that run on plain asyncio."""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common

from conveyor import AsyncClient, Client, Tasks, Worker

QUEUE = next((sys.argv[k + 1] for k, a in enumerate(sys.argv[:-1]) if a == "--queue"), "bench")
tasks = Tasks(queue=QUEUE)


@tasks.task()
async def noop(i: int, sent: float = 0.0) -> None:
    common.done(i, sent)


@tasks.task()
async def sleep(i: int, sent: float = 0.0) -> None:
    common.begin()
    await common.async_sleep()
    common.done(i)


@tasks.task(retries=1, backoff=0)  # one retry, at once
async def flaky(i: int, sent: float = 0.0) -> None:
    if common.should_fail(i):
        raise common.Flake(i)
    common.done(i)


TASKS = {"noop": noop, "sleep": sleep, "flaky": flaky}


def _uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


class ConveyorPeer(common.Peer):
    name = "conveyor"
    version = common.lib_version("conveyor")
    variants = {
        "default": "Worker(concurrency=100; 200 for io), defaults otherwise; event loop: "
        + ("uvloop" if _uvloop() else "asyncio (uvloop not installed)"),
        "asyncio": "Worker(concurrency=100; 200 for io), defaults otherwise; stock asyncio loop",
    }
    concurrency = 100
    has_sync = has_async = has_bulk = True

    def __init__(self, args):
        super().__init__(args)
        self.client = Client.from_url(self.url)

    def enqueue(self, kind, i, sent=0.0):
        self.client.enqueue(TASKS[kind], i, sent)

    def bulk(self, kind, ids):
        task = TASKS[kind]
        self.client.enqueue_many([task.call(i) for i in ids])

    def close(self):
        self.client.close()

    async def aopen(self):
        self.aclient = AsyncClient.from_url(self.url)

    async def aclose(self):
        await self.aclient.close()

    async def aenqueue(self, kind, i, sent=0.0):
        await self.aclient.enqueue(TASKS[kind], i, sent)

    def work(self, kind, concurrency):
        worker = Worker(tasks, url=self.url, queues=[self.queue], concurrency=concurrency)
        if self.variant == "asyncio":
            asyncio.run(worker.serve(install_signal_handlers=True))
        else:
            worker.run()


if __name__ == "__main__":
    common.main(ConveyorPeer)
