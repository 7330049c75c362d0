"""Two ``conveyor dev`` runs at once never share the embedded server's data directory.

They did: both servers wrote ``.conveyor/redis``, and each loaded the other's append-only
file at its next start, so one run's workers were listed as live in the other.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

LOCK_FILE = "conveyor-dev.lock"


def test_a_second_claim_gets_a_directory_of_its_own_and_is_told_why(tmp_path: Path) -> None:
    from conveyor.dev import mode
    from conveyor.dev.mode import claim_data_directory

    assert mode.LOCK_FILE == LOCK_FILE
    first = claim_data_directory(tmp_path)
    second = claim_data_directory(tmp_path)
    try:
        assert first.path == tmp_path / "redis" and first.busy == []
        assert second.path == tmp_path / "redis-2"
        [(path, holder)] = second.busy
        assert path == tmp_path / "redis" and f"pid {os.getpid()}" in holder
    finally:
        second.release()
        first.release()
    again = claim_data_directory(tmp_path)  # released: the usual directory is free again
    try:
        assert again.path == tmp_path / "redis" and again.busy == []
    finally:
        again.release()


def test_a_second_conveyor_dev_uses_its_own_data_and_names_the_first(tmp_path: Path) -> None:
    """The lock is held here the way a running ``conveyor dev`` holds it, by another process."""
    data = tmp_path / ".conveyor" / "redis"
    data.mkdir(parents=True)
    with (data / LOCK_FILE).open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("conveyor dev, pid 4242, Redis on 127.0.0.1:6399")
        lock.flush()
        env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_REDIS_URL"}
        env["COLUMNS"] = "200"
        run = subprocess.run(
            [sys.executable, "-m", "conveyor", "dev", "--jobs", "20", "--exit"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert re.search(r"\.conveyor/redis is in use by another conveyor dev, pid 4242", out), out
    assert "data in .conveyor/redis-2" in out, out
    assert "demo finished: " in out, out
    assert not (data / "appendonlydir").exists(), "the first run's directory was left alone"
    assert (tmp_path / ".conveyor" / "redis-2" / LOCK_FILE).exists()
