"""The ledger: what happened to every job, recorded outside Redis, and the checker that reads it.

Producers append ``A`` (accepted: the enqueue call returned) records; the tasks of
``tests/apps/ledger_app.py`` append ``S`` (execution started) and ``F`` (execution
finished) records with the worker's pid and the attempt's fencing token. Each process
appends to a file of its own with ``O_APPEND`` and one ``write`` per record, so a SIGKILL
loses nothing the process had written and lines never interleave. Times are
``time.monotonic()``, one clock for every process on the machine.

The checker compares the ledger with the final state of each job in Redis:

* **lost**: accepted, and Redis no longer knows the job (no hash) and no execution of it
  finished -- the job vanished;
* **reverted**: an execution finished and its result was acknowledged, yet Redis does
  not say the job is finished (a Redis crash lost the acknowledgement, or the job);
* **stuck**: Redis still holds the job in a non-terminal state at the end of the run;
* **duplicates**: jobs started more than once, and the extra executions;
* **overlaps**: two executions of one job running at the same time, each on a worker that
  was alive then (a killed worker's execution ends at its kill time) -- a false stall.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = frozenset({"completed", "failed", "cancelled"})


class LedgerWriter:
    """Appends records of one process to ``<directory>/<role>-<pid>.log``."""

    def __init__(self, directory: str | os.PathLike[str], role: str = "worker") -> None:
        self.pid = os.getpid()
        path = Path(directory) / f"{role}-{self.pid}.log"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _write(self, text: str) -> None:
        data = text.encode()
        while data:  # a regular file takes the whole write; the loop is for the record
            written = os.write(self.fd, data)
            data = data[written:]

    def accepted(self, job_ids: Iterable[str]) -> None:
        now = time.monotonic()
        self._write("".join(f"A {job_id} {now:.6f}\n" for job_id in job_ids))

    def started(self, job_id: str, token: str) -> None:
        self._write(f"S {job_id} {self.pid} {token} {time.monotonic():.6f}\n")

    def finished(self, job_id: str, token: str, outcome: str = "ok") -> None:
        self._write(f"F {job_id} {self.pid} {token} {time.monotonic():.6f} {outcome}\n")

    def anomaly(self, job_id: str, detail: str) -> None:
        """Something that must never happen (a reply meant for another request)."""
        self._write(f"X {job_id} {self.pid} {detail!r}\n")

    def close(self) -> None:
        os.close(self.fd)


@dataclass(slots=True)
class Execution:
    job_id: str
    pid: int
    token: str
    started: float
    finished: float | None = None
    outcome: str | None = None


@dataclass(slots=True)
class Records:
    accepted: dict[str, float] = field(default_factory=dict)
    executions: dict[str, list[Execution]] = field(default_factory=lambda: defaultdict(list))
    anomalies: list[str] = field(default_factory=list)


def read(directory: str | os.PathLike[str]) -> Records:
    records = Records()
    open_runs: dict[tuple[str, int, str], Execution] = {}
    lines: list[list[str]] = []
    for path in sorted(Path(directory).glob("*.log")):
        text = path.read_text()
        # Read while processes write: a read can see part of a write (a batch of accepted
        # ids, or one record cut short), so only complete lines count. Once the writers
        # are done every line is complete. (A cut "S" record failed a CI run.)
        for line in text[: text.rfind("\n") + 1].splitlines():
            parts = line.split()
            if parts:
                lines.append(parts)
    for parts in lines:  # starts first, so a finish always finds its start
        if parts[0] == "A":
            records.accepted.setdefault(parts[1], float(parts[2]))
        elif parts[0] == "S":
            run = Execution(parts[1], int(parts[2]), parts[3], float(parts[4]))
            records.executions[run.job_id].append(run)
            open_runs[(run.job_id, run.pid, run.token)] = run
        elif parts[0] == "X":
            records.anomalies.append(" ".join(parts[1:]))
    for parts in lines:
        if parts[0] == "F":
            run = open_runs[(parts[1], int(parts[2]), parts[3])]
            run.finished, run.outcome = float(parts[4]), parts[5]
    return records


@dataclass(slots=True)
class Report:
    accepted: int
    executions: int
    lost: list[str]
    reverted: list[str]
    stuck: list[str]
    duplicated_jobs: int
    extra_executions: int
    overlaps: list[tuple[str, Execution, Execution]]
    states: dict[str, int]

    def summary(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "executions": self.executions,
            "lost": len(self.lost),
            "reverted": len(self.reverted),
            "stuck": len(self.stuck),
            "duplicated_jobs": self.duplicated_jobs,
            "extra_executions": self.extra_executions,
            "overlaps": len(self.overlaps),
            **{f"state_{k}": v for k, v in sorted(self.states.items())},
        }


def job_states(transport: Any, job_prefix: str, job_ids: Sequence[str]) -> dict[str, str | None]:
    """The state field of each job's hash (None: no hash), pipelined in chunks."""
    states: dict[str, str | None] = {}
    for start in range(0, len(job_ids), 5000):
        chunk = job_ids[start : start + 5000]
        replies = transport.call_many([("HGET", job_prefix + job_id, "s") for job_id in chunk])
        states.update(zip(chunk, replies, strict=True))
    return states


def check(
    records: Records,
    states: Mapping[str, str | None],
    kills: Mapping[int, float] | None = None,
) -> Report:
    """``states``: each accepted job's final state in Redis; ``kills``: pid -> time it was killed."""
    kills = kills or {}
    lost, reverted, stuck = [], [], []
    counted: dict[str, int] = defaultdict(int)
    for job_id in records.accepted:
        state = states.get(job_id)
        counted[str(state)] += 1
        runs = records.executions.get(job_id, [])
        acked = any(r.outcome == "ok" for r in runs)
        if state is None:
            if not acked:
                lost.append(job_id)
            else:
                reverted.append(job_id)
        elif state not in TERMINAL:
            stuck.append(job_id)
    overlaps = []
    extra = duplicated = 0
    total = 0
    for job_id, runs in records.executions.items():
        total += len(runs)
        if len(runs) > 1:
            duplicated += 1
            extra += len(runs) - 1
        spans = []
        for run in runs:
            end = run.finished if run.finished is not None else kills.get(run.pid)
            if end is None:
                end = float("inf")  # neither finished nor killed: it is still running
            spans.append((run.started, end, run))
        spans.sort(key=lambda s: s[0])
        for (_, end_a, a), (start_b, _, b) in itertools.pairwise(spans):
            if start_b < end_a:
                overlaps.append((job_id, a, b))
    return Report(
        accepted=len(records.accepted),
        executions=total,
        lost=lost,
        reverted=reverted,
        stuck=stuck,
        duplicated_jobs=duplicated,
        extra_executions=extra,
        overlaps=overlaps,
        states=dict(counted),
    )


def redelivery_delays(records: Records, kills: Mapping[int, float]) -> list[float]:
    """For each execution cut short by a kill: seconds from the kill to the job's next start."""
    delays = []
    for runs in records.executions.values():
        ordered = sorted(runs, key=lambda r: r.started)
        for run, after in itertools.pairwise(ordered):
            killed_at = kills.get(run.pid)
            if killed_at is not None and killed_at >= run.started:
                delays.append(after.started - killed_at)
    return delays


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
