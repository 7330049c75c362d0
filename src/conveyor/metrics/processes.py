"""The figures of ``conveyor worker --processes N``, summed by the supervisor.

Several processes (``--processes N``): each child writes a :data:`Snapshot` of its figures
to a file every second and once more at exit, and the supervisor sums them
(:class:`ProcessesMetrics`). Counters and histograms are summed over every child that ever
ran -- a child that exited is folded into a running total -- so a counter never goes back when
the supervisor replaces a child; gauges over the live children only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .exposition import LabelCap, render
from .http import MetricsServer
from .worker import TASK_LABELS, Snapshot, Totals, WorkerMetrics, families

SNAPSHOT_EVERY = 1.0
"""Seconds between two snapshots of a child of ``--processes N``."""
SNAPSHOT_STALE = 10.0
"""A live child whose snapshot is older than this is unhealthy (it writes one every second,
from a thread of its own, so only a frozen or starved process falls this far behind)."""
CHILD_START_GRACE = 60.0
"""How long a new child may run without a snapshot (it imports the app first) before the
supervisor's /livez counts it as unhealthy."""


def write_snapshot(metrics: WorkerMetrics, path: str) -> None:
    """Replace ``path`` with the figures now, whole: a reader sees the old file or the new."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(metrics.snapshot(), file, separators=(",", ":"))
    os.replace(temporary, path)


def read_snapshot(path: str) -> Snapshot | None:
    """A child's last snapshot; None if it wrote none yet."""
    try:
        with open(path, encoding="utf-8") as file:
            data: Snapshot = json.load(file)
    except (FileNotFoundError, ValueError):
        return None
    return data


class SnapshotWriter:
    """Writes a child's figures to ``path`` every ``SNAPSHOT_EVERY`` seconds, from a thread of
    its own (the event loop does not pay for it), and once more when stopped."""

    def __init__(self, metrics: WorkerMetrics, path: str) -> None:
        self.metrics = metrics
        self.path = path
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-metrics-snapshot", daemon=True)

    def start(self) -> None:
        write_snapshot(self.metrics, self.path)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(SNAPSHOT_EVERY):
            with contextlib.suppress(OSError):  # a full disk costs figures, not the worker
                write_snapshot(self.metrics, self.path)

    def stop(self) -> None:
        """The last snapshot, with every job the worker finished."""
        self._stopping.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            write_snapshot(self.metrics, self.path)


class ProcessesMetrics:
    """The figures of the children of ``conveyor worker --processes N``, summed from the
    snapshots they write into ``directory``.

    The supervisor names each child's file (one per child it starts, never reused) and tells
    this object when a child starts and when it has exited; a scrape runs in the metrics
    server's thread. The two share a dict replaced whole and a deque, both safe to hand over
    between threads without a lock. The file of a child that exited is final: it is folded
    into a running total and deleted, so that a crash-looping child does not leave a file a
    second for every scrape to read.
    """

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self._live: Mapping[str, float] = {}
        """Snapshot path -> ``time.monotonic()`` at the start, of every child running."""
        self._exited: deque[str] = deque()
        self._folded: set[str] = set()
        self._retired = Totals()
        self._cap = LabelCap(TASK_LABELS)
        self._generation = 0

    # ------------------------------------------------------------------ the supervisor's thread
    def next_path(self, slot: int) -> str:
        self._generation += 1
        return str(self.directory / f"process-{slot}-{self._generation}.json")

    def started(self, path: str) -> None:
        self._live = {**self._live, path: time.monotonic()}

    def exited(self, path: str) -> None:
        # Queued before it leaves the live set: a scrape in between counts it as live and
        # skips it when folding, never neither (a counter would go back for one scrape).
        self._exited.append(path)
        self._live = {key: value for key, value in self._live.items() if key != path}

    # ------------------------------------------------------------------ the server's thread
    def _read(self) -> tuple[Totals, list[tuple[str, float, Snapshot | None]]]:
        live = self._live
        while self._exited:
            path = self._exited.popleft()
            snapshot = read_snapshot(path)
            if snapshot is not None:
                self._retired.add(snapshot, self._cap)
            self._folded.add(path)
            with contextlib.suppress(OSError):
                os.unlink(path)
        totals = Totals()
        totals.merge(self._retired)
        children: list[tuple[str, float, Snapshot | None]] = []
        for path, started in live.items():
            if path in self._folded:
                continue
            snapshot = read_snapshot(path)
            if snapshot is not None:
                totals.add(snapshot, self._cap)
            children.append((path, started, snapshot))
        return totals, children

    def text(self) -> str:
        """The Prometheus text of all the children together."""
        totals, children = self._read()
        return render(families(totals, [snapshot for _, _, snapshot in children if snapshot is not None]))

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive when every running child is: its snapshot is recent and says it is healthy
        (see :meth:`WorkerMetrics.health`), or it started moments ago and has written none."""
        _, children = self._read()
        now, wall = time.monotonic(), time.time()
        processes: list[dict[str, Any]] = []
        for _, started, snapshot in children:
            if snapshot is None:
                processes.append(
                    {"healthy": now - started <= CHILD_START_GRACE, "snapshot_age_seconds": None}
                )
                continue
            age = wall - snapshot["at"]
            processes.append(
                {
                    "pid": snapshot["pid"],
                    "healthy": snapshot["healthy"] and age <= SNAPSHOT_STALE,
                    "snapshot_age_seconds": round(age, 3),
                }
            )
        healthy = all(process["healthy"] for process in processes)
        return healthy, {"status": "ok" if healthy else "unhealthy", "processes": processes}


class Export:
    """How one worker process hands out its figures while it runs: served at ``host:port``
    (``/metrics`` and ``/livez``), or, in a child of ``--processes N``, written to the file
    ``snapshot`` for the supervisor to serve their sum. The event-loop probe runs alongside."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int, snapshot: str | None) -> None:
        self.metrics = metrics
        self._exporter: MetricsServer | SnapshotWriter = (
            SnapshotWriter(metrics, snapshot)
            if snapshot is not None
            else MetricsServer(host, port, metrics=metrics.text, health=metrics.health)
        )

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) being served; None for a snapshot, or before the server listens."""
        server = self._exporter
        return (server.host, server.port) if isinstance(server, MetricsServer) and server.port else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.metrics.start_probe(loop)
        try:
            self._exporter.start()
        except BaseException:
            self.metrics.stop_probe()
            raise

    def stop(self) -> None:
        self.metrics.stop_probe()
        self._exporter.stop()  # a snapshot writer writes its last: every job is counted by now
