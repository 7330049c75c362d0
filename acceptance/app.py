"""Tasks for the acceptance script that must be importable by name.

``isolation="process"`` tasks run in a child process started from a fork server, which
imports them by module and name; ``conveyor worker app:tasks`` imports this registry too.
Jobs are sent to per-check queues with ``with_options(queue=...)``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor import Tasks

tasks = Tasks(queue="acc-app")


def _write_pid(pidfile: str) -> int:
    pid = os.getpid()
    Path(pidfile).write_text(str(pid))
    return pid


@tasks.task(isolation="process", timeout=20, retries=0)
def hang(pidfile: str, seconds: float) -> int:
    """Write the child's pid, then sleep: long enough to be aborted."""
    pid = _write_pid(pidfile)
    time.sleep(seconds)
    return pid


@tasks.task(isolation="process", timeout=1, retries=0)
def hang_past_timeout(pidfile: str, seconds: float) -> int:
    """Same, with a 1 s hard timeout."""
    pid = _write_pid(pidfile)
    time.sleep(seconds)
    return pid


@tasks.task(retries=2)
def slow_once(marker: str, seconds: float) -> str:
    """The first run (no marker yet) sleeps long; any later run returns at once."""
    path = Path(marker)
    if path.exists():
        return "recovered"
    path.write_text("first run")
    time.sleep(seconds)
    return "first run finished"
