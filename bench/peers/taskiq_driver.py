"""taskiq + taskiq-redis driver.  Async API only.  `stream`: RedisStreamBroker
(consumer group, acks; the README's first choice); `list`: ListQueueBroker
(BRPOP, no acks)."""

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from taskiq import SimpleRetryMiddleware
from taskiq.api import run_receiver_task
from taskiq_redis import ListQueueBroker, RedisStreamBroker


async def noop(i: int, sent: float = 0.0) -> None:
    common.done(i, sent)


async def sleep(i: int, sent: float = 0.0) -> None:
    common.begin()
    await common.async_sleep()
    common.done(i)


async def flaky(i: int, sent: float = 0.0) -> None:
    if common.should_fail(i):
        raise common.Flake(i)
    common.done(i)


class TaskiqPeer(common.Peer):
    name = "taskiq"
    version = f"{common.lib_version('taskiq')} (taskiq-redis {common.lib_version('taskiq-redis')})"
    variants = {
        "stream": "RedisStreamBroker, max_async_tasks=100 (200 for io), SimpleRetryMiddleware",
        "list": "ListQueueBroker, max_async_tasks=100 (200 for io), SimpleRetryMiddleware",
    }
    concurrency = 100
    has_async = True

    def __init__(self, args):
        super().__init__(args)
        cls = ListQueueBroker if self.variant == "list" else RedisStreamBroker
        self.broker = cls(self.url, queue_name=self.queue).with_middlewares(
            SimpleRetryMiddleware(default_retry_count=2)
        )
        self.tasks = {
            "noop": self.broker.register_task(noop, task_name="noop"),
            "sleep": self.broker.register_task(sleep, task_name="sleep"),
            # taskiq counts the first run: max_retries=2 gives one retry
            "flaky": self.broker.register_task(flaky, task_name="flaky", retry_on_error=True, max_retries=2),
        }

    async def aopen(self):
        await self.broker.startup()

    async def aclose(self):
        await self.broker.shutdown()

    async def aenqueue(self, kind, i, sent=0.0):
        await self.tasks[kind].kiq(i, sent)

    def work(self, kind, concurrency):
        async def run():
            await self.broker.startup()
            task = asyncio.create_task(run_receiver_task(self.broker, max_async_tasks=concurrency))
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(run())


if __name__ == "__main__":
    common.main(TaskiqPeer)
