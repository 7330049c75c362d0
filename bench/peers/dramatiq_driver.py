"""Dramatiq driver, RedisBroker.  Sync API; actors run on worker threads
(8 by default; 200 for the io scenario)."""

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
import dramatiq
from dramatiq.brokers.redis import RedisBroker


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


class DramatiqPeer(common.Peer):
    name = "dramatiq"
    version = common.lib_version("dramatiq")
    variants = {"default": "RedisBroker, Worker(worker_threads=8; 200 for io), default middleware"}
    concurrency = 8
    has_sync = True

    def __init__(self, args):
        super().__init__(args)
        self.broker = RedisBroker(url=self.url)
        dramatiq.set_broker(self.broker)
        opts = {"broker": self.broker, "queue_name": self.queue}
        self.actors = {
            "noop": dramatiq.actor(noop, **opts),
            "sleep": dramatiq.actor(sleep, **opts),
            # one retry, no backoff (min_backoff is in ms)
            "flaky": dramatiq.actor(flaky, max_retries=1, min_backoff=0, max_backoff=1, **opts),
        }

    def enqueue(self, kind, i, sent=0.0):
        self.actors[kind].send(i, sent)

    def close(self):
        self.broker.close()

    def work(self, kind, concurrency):
        worker = dramatiq.Worker(self.broker, worker_threads=concurrency)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        worker.start()
        stop.wait()
        worker.stop(timeout=1000)


if __name__ == "__main__":
    common.main(DramatiqPeer)
