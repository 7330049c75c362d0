"""``conveyor worker --processes N``: one supervisor, N worker processes, dead ones restarted.

Each child is a full ``conveyor worker`` with ``--processes 1``. Signals are forwarded, so
the first SIGTERM/SIGINT starts a graceful shutdown in every child and a second one stops
them at once. Children die with the supervisor (PR_SET_PDEATHSIG): a SIGKILLed supervisor
leaves no orphan workers, and their jobs return through the lease sweep.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

from .children import die_with_parent

log = logging.getLogger("conveyor.supervisor")


def supervise(child_args: list[str], processes: int, *, burst: bool = False) -> int:
    """Run ``python -m conveyor <child_args>`` ``processes`` times; returns the exit code."""
    command = [sys.executable, "-m", "conveyor", *child_args]
    children: dict[int, subprocess.Popen[bytes]] = {}
    signals_seen = 0
    restarts: dict[int, float] = {}

    def spawn(slot: int) -> None:
        children[slot] = subprocess.Popen(command, preexec_fn=die_with_parent)
        log.info("started worker process %d (pid %d)", slot, children[slot].pid)

    def forward(sig: int, _frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        for child in children.values():
            if child.poll() is None:
                child.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in range(processes):
        spawn(slot)
    exit_code = 0
    finished: set[int] = set()
    while len(finished) < processes:
        time.sleep(0.2)
        for slot, child in list(children.items()):
            if slot in finished or child.poll() is None:
                continue
            code = child.returncode
            if signals_seen or (burst and code == 0):
                finished.add(slot)
                exit_code = max(exit_code, code if code > 0 else 0)
                continue
            # A child died on its own: restart it, but not faster than once a second.
            wait = max(0.0, restarts.get(slot, 0.0) + 1.0 - time.monotonic())
            log.error(
                "worker process %d (pid %d) exited with code %d; restarting in %.1f s",
                slot,
                child.pid,
                code,
                wait,
            )
            time.sleep(wait)
            restarts[slot] = time.monotonic()
            if not signals_seen:
                spawn(slot)
    return exit_code
