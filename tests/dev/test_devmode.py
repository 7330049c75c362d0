"""`conveyor dev` (what `make run` starts): runs the demo to completion; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): processes, Ctrl-C, deadlines


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


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(
    args: list[str], cwd: Path, until: str, meanwhile: Callable[[str], None], timeout: float = 40
) -> tuple[str, str]:
    """Run ``args`` in a pseudo-terminal, as a reader's shell would (a process group of its
    own, in the terminal's foreground). Once ``until`` shows, call ``meanwhile`` with the
    screen so far, then type Ctrl-C. Returns the raw screen before and after the Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_REDIS_URL"}
    env["COLUMNS"] = "250"  # no line of the screen wraps
    pid, fd = pty.fork()
    if pid == 0:  # the child: never returns
        os.chdir(cwd)
        os.execve(args[0], args, env)
    before, after = b"", b""
    deadline = time.monotonic() + timeout
    finished = False
    try:
        while until.encode() not in before and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                before += os.read(fd, 65536)
        assert until.encode() in before, before.decode(errors="replace")
        meanwhile(before.decode(errors="replace"))
        os.write(fd, b"\x03")  # the terminal turns it into SIGINT for its foreground group
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the child's side is closed
                    break
                if not data:
                    break
                after += data
        finished = True
    finally:
        if not finished or time.monotonic() >= deadline:  # its server and worker die with it
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, (before + after).decode(errors="replace")
    return before.decode(errors="replace"), after.decode(errors="replace")


def shown_lines(screen: str) -> list[str]:
    """The lines a terminal shows: a line's text after its last carriage return."""
    return [ANSI.sub("", line).rstrip("\r").rsplit("\r", 1)[-1] for line in screen.split("\n")]


def test_the_dev_screen_in_a_terminal(tmp_path: Path) -> None:
    """What ``make run`` shows in a terminal: worker log lines above the progress display, not
    through it; the demo's failures labelled as deliberate; commands that work as pasted into
    another terminal; and one Ctrl-C reported once."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("make run runs conveyor from a virtual environment; these tests run outside one")
    home = Path(sys.prefix).parent  # make run runs in the directory that holds .venv
    pasted: list[subprocess.CompletedProcess[str]] = []

    def paste_into_another_terminal(screen: str) -> None:
        text = ANSI.sub("", screen).replace("\r", "")
        block = text.split("Try it from another terminal:\n", 1)[1].split("\n(")[0]
        commands = [line.removeprefix("  ") for line in block.splitlines()]
        assert commands[0] == f"cd {home}", commands
        assert commands[1].startswith("export CONVEYOR_REDIS_URL=redis://:"), commands
        assert commands[2].startswith("export CONVEYOR_HISTORY_URL=sqlite:///"), commands
        assert commands[3].startswith(".venv/bin/conveyor enqueue"), commands
        assert any(c.startswith(".venv/bin/conveyor history search") for c in commands), commands
        another_terminal = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no venv, no URL
        pasted.append(
            subprocess.run(
                ["bash", "-e", "-c", "\n".join(commands)],
                cwd=tmp_path,
                env=another_terminal,
                capture_output=True,
                text=True,
                timeout=30,
            )
        )

    screen, after = run_in_terminal(
        [str(Path(sys.prefix) / "bin" / "conveyor"), "dev", "--jobs", "600", "--state-dir", str(tmp_path)],
        cwd=home,
        until="Ctrl-C here stops everything",
        meanwhile=paste_into_another_terminal,
    )
    [run] = pasted
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"image_id": 7' in run.stdout and "demo" in run.stdout, run.stdout

    # 30 flaky_call jobs failing 3 attempts in 10: none failing at all is a 1 in 40,000 chance.
    retried = [line for line in shown_lines(screen) if "failed, retrying" in line]
    assert retried, screen
    for line in retried:  # a log line written into the progress display continued its line
        assert "━" not in line, f"a log line cut through the progress display: {line!r}"
        assert line.endswith("(deliberate failure of the demo)"), line

    stopping = "\n".join(shown_lines(after))
    assert stopping.count("stopping") == 1 and stopping.count("stopped") == 1, stopping
    assert "again" not in stopping.replace("Ctrl-C again: at once", ""), stopping
    assert "Interrupt" not in stopping and "Traceback" not in stopping, stopping


def test_make_run_installs_what_running_needs_and_says_so(tmp_path: Path) -> None:
    """``make run``'s first run installs Conveyor without the dev tools, saying so before the
    wait; then it runs ``conveyor dev`` as one plain command, which make runs without a shell
    (a shell would die of the Ctrl-C, and make report it once more)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    root = Path(__file__).resolve().parents[2]
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(root / name, tmp_path / name)

    def planned() -> list[str]:
        # Run from make test, make's own variables would make this a sub-make that prints
        # "Entering directory" lines: the plan is read as a user's shell would get it.
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        dry = subprocess.run(
            [make, "--no-print-directory", "-n", "run"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return dry.stdout.splitlines()

    first = planned()
    assert first[0].startswith("echo") and "first run only" in first[0], first
    [install] = [line for line in first if "pip install" in line]
    assert "-c constraints.txt" in install and "[dev]" not in install, install
    assert first[-1] == ".venv/bin/conveyor dev", first

    (tmp_path / ".venv").mkdir()
    stamp = tmp_path / ".venv" / ".installed-run"
    stamp.touch()
    os.utime(stamp, (time.time() + 10, time.time() + 10))  # newer than the copies, whatever the clock
    assert planned() == [".venv/bin/conveyor dev"], "installed once, the next runs start at once"
