"""Celery driver, Redis broker, no result backend.  Sync API (no async, no bulk:
group/chunks still publish one message per task)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from celery import Celery

app = Celery("bench")


@app.task(name="noop")
def noop(i, sent=0.0):
    common.done(i, sent)


@app.task(name="sleep")
def sleep(i, sent=0.0):
    common.begin()
    common.sync_sleep()
    common.done(i)


@app.task(
    name="flaky", autoretry_for=(common.Flake,), max_retries=1, default_retry_delay=0, retry_backoff=False
)
def flaky(i, sent=0.0):
    if common.should_fail(i):
        raise common.Flake(i)
    common.done(i)


TASKS = {"noop": noop, "sleep": sleep, "flaky": flaky}


class CeleryPeer(common.Peer):
    name = "celery"
    version = common.lib_version("celery")
    variants = {
        "solo": "solo pool (1 process), worker_prefetch_multiplier=64, without gossip/mingle/heartbeat, "
        "ignore results; io: threads pool -c 200",
        "prefork": "defaults: prefork pool, concurrency=CPU count, prefetch multiplier 4; "
        "io: threads pool -c 200",
    }
    has_sync = True

    def __init__(self, args):
        super().__init__(args)
        app.conf.update(
            broker_url=self.url,
            task_default_queue=self.queue,
            task_ignore_result=True,
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
        )
        if self.variant == "solo":
            app.conf.worker_prefetch_multiplier = 64
        else:
            self.concurrency = os.cpu_count() or 1  # prefork's default pool size (for the report)

    def enqueue(self, kind, i, sent=0.0):
        TASKS[kind].apply_async((i, sent))

    def close(self):
        app.close()

    def work(self, kind, concurrency):
        argv = ["worker", "--loglevel=WARNING", "-Q", self.queue]
        if kind == "sleep":
            argv += ["--pool=threads", f"--concurrency={concurrency}"]
        elif self.variant == "solo":
            argv += ["--pool=solo"]
        if self.variant == "solo":
            argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        app.worker_main(argv)


if __name__ == "__main__":
    common.main(CeleryPeer)
