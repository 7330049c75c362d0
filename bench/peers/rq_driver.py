"""RQ driver: `rq` (forking Worker: a fresh work-horse process per job) and
`rq-simple` (SimpleWorker: jobs run in the worker process).  Sync API only."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from redis import Redis
from rq import Queue, Retry, SimpleWorker, Worker

MOD = "rq_driver"


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


class RQPeer(common.Peer):
    name = "rq"
    version = common.lib_version("rq")
    variants = {
        "fork": "Worker (work-horse process per job), logging WARNING, defaults otherwise",
        "simple": "SimpleWorker (no fork), logging WARNING, defaults otherwise",
    }
    io_concurrency = None  # one job at a time per worker process
    has_sync = has_bulk = True

    def __init__(self, args):
        super().__init__(args)
        self.redis = Redis.from_url(self.url)
        self.q = Queue(self.queue, connection=self.redis)

    def _opts(self, kind):
        return {"retry": Retry(max=1, interval=0)} if kind == "flaky" else {}

    def enqueue(self, kind, i, sent=0.0):
        self.q.enqueue(f"{MOD}.{kind}", i, sent, **self._opts(kind))

    def bulk(self, kind, ids):
        self.q.enqueue_many([Queue.prepare_data(f"{MOD}.{kind}", (i,), **self._opts(kind)) for i in ids])

    def close(self):
        self.redis.close()

    def work(self, kind, concurrency):
        cls = SimpleWorker if self.variant == "simple" else Worker
        cls([self.q], connection=self.redis).work(logging_level="WARNING")


if __name__ == "__main__":
    common.main(RQPeer)
