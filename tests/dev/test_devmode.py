"""`conveyor dev` (what `make run` starts): runs the demo to completion; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_dev_runs_the_demo_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_REDIS_URL"}
    env["COLUMNS"] = "120"
    dev = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "dev", "--jobs", "300"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert dev.stdout is not None
    output = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = dev.stdout.readline()
        output.append(line)
        if "keeps running" in line or not line:
            break
    text = "".join(output)
    assert "started embedded Redis" in text and "enqueued 300 demo jobs" in text, text
    finished = re.search(r"demo finished: (\d+) completed, (\d+) failed", text)
    assert finished and int(finished[1]) + int(finished[2]) == 300, text
    assert int(finished[1]) >= 280, "only the deliberately flaky task may end failed"
    helpers = children_of(dev.pid)
    assert len(helpers) == 2, f"expected a server and a worker under conveyor dev, found {helpers}"
    os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    rest, _ = dev.communicate(timeout=30)
    assert dev.returncode == 0, text + rest
    assert "stopped" in rest
    time.sleep(0.2)
    assert not any(alive(pid) for pid in helpers), "no process is left behind"
    assert (tmp_path / ".conveyor" / "redis").is_dir(), "the embedded server keeps its data in the state dir"
