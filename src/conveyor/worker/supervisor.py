"""``conveyor worker --processes N``: one supervisor, N worker processes, dead ones restarted.

Each child is a full ``conveyor worker`` with ``--processes 1``. Only the supervisor takes
SIGTERM/SIGINT: the first starts a graceful shutdown in every child, a second stops them at
once. The children ignore both signals and take their orders from the supervisor alone,
through a pipe each (``--supervisor-fd``). A stop signal often reaches them too -- the
terminal's Ctrl-C goes to the whole foreground process group, systemd's stop to the whole
cgroup, ``kill -- -PGID`` to the group -- and a child that obeyed it as well as the order the
supervisor passed on counted two signals, and stopped at once instead of gracefully.

Children die with the supervisor (PR_SET_PDEATHSIG): a SIGKILLed supervisor leaves no orphan
workers, and their jobs return through the lease sweep. A child whose pipe closes (the
supervisor is gone, however) stops at once.

With ``--metrics-port`` the supervisor serves ``/metrics`` and ``/livez`` for all its children:
each writes its figures to a file of its own, named by the supervisor (``--metrics-snapshot``),
and a scrape sums them (:class:`conveyor.metrics.worker.ProcessesMetrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType
from typing import TYPE_CHECKING

from .children import supervised_child

if TYPE_CHECKING:
    from ..metrics.processes import ProcessesMetrics
    from .engine import Worker

log = logging.getLogger("conveyor.supervisor")

GRACEFUL = b"g"
"""The supervisor's order to stop gracefully, as the first signal does."""
AT_ONCE = b"n"
"""The supervisor's order to stop at once, as a second signal does."""


def supervise(
    child_args: list[str], processes: int, *, burst: bool = False, metrics: tuple[str, int] | None = None
) -> int:
    """Run ``python -m conveyor <child_args>`` ``processes`` times; returns the exit code.
    ``metrics``: (host, port) to serve the children's summed figures on."""
    command = [sys.executable, "-m", "conveyor", *child_args]
    if metrics is None:
        return _Supervisor(command, burst).run(processes)
    from ..metrics.http import MetricsServer
    from ..metrics.processes import ProcessesMetrics

    directory = tempfile.mkdtemp(prefix="conveyor-metrics-")
    try:
        figures = ProcessesMetrics(directory)
        # Listening before any child starts: a port taken already fails the command at once.
        server = MetricsServer(*metrics, metrics=figures.text, health=figures.health)
        server.start()
        try:
            return _Supervisor(command, burst, figures).run(processes)
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _Supervisor:
    def __init__(self, command: list[str], burst: bool, metrics: ProcessesMetrics | None = None) -> None:
        self.command = command
        self.burst = burst
        self.metrics = metrics
        self.snapshots: dict[int, str] = {}
        """The snapshot file of each slot's current child, with metrics on."""
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.orders: dict[int, int] = {}
        """The write end of each child's pipe of orders."""
        self.signals_seen = 0
        self.restarts: dict[int, float] = {}

    def run(self, processes: int) -> int:
        signal.signal(signal.SIGTERM, self.forward)
        signal.signal(signal.SIGINT, self.forward)
        for slot in range(processes):
            if self.signals_seen:
                break  # stopped while starting them; those started have their order
            self.spawn(slot)
        exit_code = 0
        finished: set[int] = set()
        told = 0
        while len(finished) < len(self.children):
            if self.signals_seen > told:  # logged here, not in the handler
                told = self.signals_seen
                log.info(
                    "received a stop signal: asking the worker processes to stop %s",
                    "gracefully (send again to stop them at once)" if told == 1 else "at once",
                )
            time.sleep(0.2)
            for slot, child in list(self.children.items()):
                if slot in finished or child.poll() is None:
                    continue
                code = child.returncode
                snapshot = self.snapshots.pop(slot, None)  # once per child, however often polled
                if self.metrics is not None and snapshot is not None:
                    self.metrics.exited(snapshot)
                if self.signals_seen or (self.burst and code == 0):
                    finished.add(slot)
                    exit_code = max(exit_code, code if code > 0 else 0)
                    continue
                self.restart(slot, code)
        for write in self.orders.values():
            os.close(write)
        return exit_code

    def spawn(self, slot: int) -> None:
        read, write = os.pipe()
        os.set_blocking(write, False)  # written from the signal handler, which must not block
        with contextlib.suppress(KeyError):
            os.close(self.orders.pop(slot))  # the pipe of the child this one replaces
        self.orders[slot] = write  # before the start: an order given meanwhile waits in the pipe
        metrics: list[str] = []
        if self.metrics is not None:
            self.snapshots[slot] = snapshot = self.metrics.next_path(slot)
            metrics = ["--metrics-snapshot", snapshot]
        try:
            self.children[slot] = subprocess.Popen(
                [*self.command, *metrics, "--supervisor-fd", str(read)],
                pass_fds=(read,),
                preexec_fn=supervised_child,
            )
        finally:
            os.close(read)
        if self.metrics is not None:
            self.metrics.started(self.snapshots[slot])
        log.info("started worker process %d (pid %d)", slot, self.children[slot].pid)

    def restart(self, slot: int, code: int) -> None:
        """A child died on its own: restart it, but not faster than once a second."""
        wait = max(0.0, self.restarts.get(slot, 0.0) + 1.0 - time.monotonic())
        log.error(
            "worker process %d (pid %d) exited with code %d; restarting in %.1f s",
            slot,
            self.children[slot].pid,
            code,
            wait,
        )
        time.sleep(wait)
        self.restarts[slot] = time.monotonic()
        if not self.signals_seen:
            self.spawn(slot)

    def forward(self, sig: int, _frame: FrameType | None) -> None:
        self.signals_seen += 1
        order = GRACEFUL if self.signals_seen == 1 else AT_ONCE
        for write in list(self.orders.values()):
            with contextlib.suppress(OSError):  # that child has exited
                os.write(write, order)


def serve_as_child(worker: Worker, orders: int, metrics_snapshot: str | None = None) -> None:
    """Run ``worker`` as a child of :func:`supervise`: stopped by the orders that come through
    the pipe ``orders``, never by a signal (see the module's docstring); its figures written
    to the file ``metrics_snapshot`` for the supervisor, if given."""
    from .engine import event_loop_factory

    if metrics_snapshot is not None:
        worker.snapshot_metrics_to(metrics_snapshot)

    # The supervisor set these before the exec already (no signal slips in while importing);
    # again here, for a reader who wonders why Ctrl-C does nothing to a child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def take_orders() -> None:
        try:
            received = os.read(orders, 16)
        except BlockingIOError:
            return
        if not received:
            asyncio.get_running_loop().remove_reader(orders)
            log.warning("the supervisor is gone: stopping at once, handing running jobs back")
            worker.stop(at_once=True)
        for order in received:
            if order == AT_ONCE[0]:
                log.warning("the supervisor asks to stop at once: handing running jobs back")
                worker.stop(at_once=True)
            else:
                log.info(
                    "the supervisor asks to stop: finishing running jobs (grace %.0f s)",
                    worker.config.shutdown_grace,
                )
                worker.stop()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        os.set_blocking(orders, False)
        loop.add_reader(orders, take_orders)
        try:
            await worker.serve()
        finally:
            loop.remove_reader(orders)
            os.close(orders)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve())
