"""The README's code runs as written, in order, against a private server, so it cannot rot.

Every fenced block tagged ``python``, ``sh``, ``bash`` or ``console`` is taken from
README.md and run the way a reader would, in one directory, with ``CONVEYOR_REDIS_URL``
pointing at a server of the test's own and the ``conveyor`` of this environment on PATH:

* a Python block whose first line is ``# name.py`` is a file the reader saves: it is written
  under that name, then imported, so a module that does not even import fails here;
* any other Python block is a script, run with ``python -c`` in that directory;
* a shell block runs with ``bash -e -u -o pipefail`` (a ``console`` block: its ``$ `` lines);
  port 8000 in it becomes a free port, so that it never meets a server of the machine.

A block that fails (an exception, a non-zero exit, a curl answered with an error) fails the
test, with its line in the README and its output. An HTML comment on the line right before a
block says how to run it otherwise, and why:

* ``<!-- readme-test: skip (reason) -->``: not run: an install, ``make run``, a line the
  test must not follow (say, one pointing at another Redis);
* ``<!-- readme-test: background (reason) -->``: started and left running until the end,
  as the reader leaves it running in a terminal of its own (a worker, the API server); the
  test goes on once a worker has registered or the server answers;
* ``<!-- readme-test: clone (reason) -->``: run in a copy of the clone (``pyproject.toml``,
  ``README.md``, ``LICENSE``, ``src/``), as the reader runs it there; the wheel it builds is
  checked: Lua scripts, ``py.typed`` and the license inside, the file name the README gives,
  and that it installs and loads its scripts into Redis.

A comment with another verb, without a reason, or not followed by a block is an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor import Client
from conveyor.dev.server import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

RUNNABLE = {"python", "sh", "bash", "console"}
MARKER = re.compile(r"<!--\s*readme-test:\s*(?P<verb>[\w-]+)\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
VERBS = {"skip", "background", "clone"}
FILE_LINE = re.compile(r"#\s*(?P<name>[A-Za-z_]\w*)\.py\s*$")


@dataclass
class Block:
    language: str
    code: str
    line: int
    """Where the block's opening fence is in the README (1-based), for messages."""
    verb: str | None = None

    @property
    def file_name(self) -> str | None:
        """``name.py`` for a block that is a file the reader saves."""
        first = self.code.split("\n", 1)[0]
        match = FILE_LINE.fullmatch(first) if self.language == "python" else None
        return f"{match['name']}.py" if match else None

    def shell_script(self) -> str:
        if self.language != "console":
            return self.code
        return "\n".join(line[2:] for line in self.code.splitlines() if line.startswith("$ "))


def parse(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text that the test runs, each with its marker."""
    blocks: list[Block] = []
    lines = text.splitlines()
    pending: tuple[str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if marker := MARKER.search(line):
            verb, reason = marker["verb"], (marker["reason"] or "").strip()
            assert verb in VERBS, f"README line {i + 1}: unknown readme-test verb {verb!r} (one of {VERBS})"
            assert reason, f"README line {i + 1}: readme-test: {verb} needs a (reason)"
            assert i + 1 < len(lines) and lines[i + 1].startswith("```"), (
                f"README line {i + 1}: a readme-test comment must be the line right before its block"
            )
            pending = (verb, i + 1)
            i += 1
            continue
        if line.startswith("```"):
            language = line[3:].strip()
            end = i + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            assert end < len(lines), f"README line {i + 1}: a code block is never closed"
            if language in RUNNABLE:
                code = "\n".join(lines[i + 1 : end])
                blocks.append(Block(language, code, i + 1, pending[0] if pending else None))
            else:
                assert pending is None, f"README line {pending[1]}: readme-test on a block that never runs"
            pending = None
            i = end + 1
            continue
        i += 1
    return blocks


@dataclass
class ReadmeRun:
    """Runs blocks in order in ``directory``, as a reader would, against the server at ``url``."""

    directory: Path
    url: str
    port: int = field(default_factory=free_port)
    background: list[tuple[Block, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    wheels: list[Path] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["CONVEYOR_REDIS_URL"] = self.url
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def run(self, blocks: list[Block]) -> None:
        for block in blocks:
            if block.verb == "skip":
                continue
            if block.verb == "background":
                self.start(block)
            elif block.verb == "clone":
                self.in_clone(block)
            elif block.file_name:
                self.save(block)
            elif block.language == "python":
                self.check(block, [sys.executable, "-c", block.code], self.directory)
            else:
                self.shell(block, self.directory)

    def check(self, block: Block, args: list[str], cwd: Path) -> str:
        done = subprocess.run(args, cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=60)
        output = done.stdout + done.stderr
        assert done.returncode == 0, (
            f"the {block.language} block at README line {block.line} failed "
            f"(exit {done.returncode}):\n{block.code}\n--- its output:\n{output}"
        )
        return done.stdout

    def save(self, block: Block) -> None:
        assert block.file_name is not None
        (self.directory / block.file_name).write_text(block.code + "\n")
        self.check(block, [sys.executable, "-c", f"import {block.file_name[:-3]}"], self.directory)

    def script(self, block: Block) -> str:
        return re.sub(r"\b8000\b", str(self.port), block.shell_script())

    def shell(self, block: Block, cwd: Path) -> None:
        output = self.check(block, ["bash", "-euo", "pipefail", "-c", self.script(block)], cwd)
        if "curl " in block.code:  # curl exits 0 on an HTTP error: the API answers with a problem document
            answer = json.loads(output)
            assert not (isinstance(answer, dict) and answer.get("status", 0) >= 400), (
                f"the curl of README line {block.line} was refused: {answer}"
            )

    def start(self, block: Block) -> None:
        log = self.directory / f"background-{block.line}.log"
        with Client.from_url(self.url) as client:
            workers_before = len(client.workers())
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", self.script(block)],
                cwd=self.directory,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped as a group, like the reader's Ctrl-C
            )
        self.background.append((block, process, log))
        ready = self.worker_registered(workers_before) if "conveyor worker" in block.code else self.port_open
        deadline = time.monotonic() + 20
        while not ready():
            assert process.poll() is None and time.monotonic() < deadline, (
                f"the background block at README line {block.line} did not come up:\n{block.code}\n"
                f"--- its output:\n{log.read_text(errors='replace')}"
            )
            time.sleep(0.1)

    def worker_registered(self, before: int) -> Callable[[], bool]:
        def registered() -> bool:
            with Client.from_url(self.url) as client:
                return len(client.workers()) > before

        return registered

    def port_open(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def in_clone(self, block: Block) -> None:
        clone = self.directory / "clone"
        clone.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy(ROOT / name, clone / name)
        shutil.copytree(
            ROOT / "src", clone / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        self.shell(block, clone)
        self.wheels += sorted((clone / "dist").glob("*.whl"))

    def stop(self) -> None:
        for block, process, log in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                pytest.fail(
                    f"the background block at README line {block.line} ignored SIGTERM:\n{log.read_text()}"
                )


@pytest.fixture
def private_url(server_factory: Any) -> str:
    """A server of this test alone: the README's queues ("default", ...) meet no other test's."""
    return str(server_factory(appendonly=False).url)


@pytest.fixture
def readme_run(tmp_path: Path, private_url: str) -> Iterator[ReadmeRun]:
    run = ReadmeRun(tmp_path / "project", private_url)
    run.directory.mkdir()
    try:
        yield run
    finally:
        run.stop()


def test_every_block_of_the_readme_runs_as_written(readme_run: ReadmeRun) -> None:
    blocks = parse(README.read_text())
    assert sum(b.language == "python" and b.verb is None for b in blocks) >= 10, (
        "the README lost its examples"
    )
    readme_run.run(blocks)

    with Client.from_url(readme_run.url) as client:
        failed = {queue: client.counts(queue)["failed"] for queue in client.queues()}
    assert not any(failed.values()), f"README examples whose jobs failed: {failed}"

    [wheel] = readme_run.wheels
    check_wheel(wheel, readme_run)


def check_wheel(wheel: Path, run: ReadmeRun) -> None:
    """The wheel the README builds holds what an install needs, and installs."""
    assert wheel.name in README.read_text(), f"the README names another wheel than {wheel.name}"
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {
        p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src/conveyor/ops/scripts").rglob("*.lua")
    }
    assert scripts and scripts <= names, f"Lua scripts missing from the wheel: {sorted(scripts - names)}"
    assert "conveyor/py.typed" in names
    [license_file] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert zipfile.ZipFile(wheel).read(license_file) == (ROOT / "LICENSE").read_bytes()

    site = run.directory / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            site,
            wheel,
        ],
        check=True,
        capture_output=True,
    )
    # The installed copy, not this checkout, answers: it loads every script into Redis.
    probe = "import conveyor; print(conveyor.__file__); print(conveyor.Client.from_url().load_scripts())"
    env = {**run.env(), "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=run.directory, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    where, loaded = done.stdout.split()
    assert Path(where).is_relative_to(site), where
    assert int(loaded) >= 0


def test_the_license_matches_the_project_metadata() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License\n"), declared
    assert "Permission is hereby granted, free of charge" in text


# The test of the test: a README whose block fails, or whose markers are wrong, fails it.


def test_a_failing_block_fails_the_run(tmp_path: Path) -> None:
    text = '```python\nprint("fine")\n```\n\n```sh\nconveyor no-such-command\n```\n'
    run = ReadmeRun(tmp_path, "redis://127.0.0.1:1/0")
    with pytest.raises(AssertionError, match="the sh block at README line 5 failed"):
        run.run(parse(text))


def test_markers_are_checked() -> None:
    assert [b.verb for b in parse("<!-- readme-test: skip (why) -->\n```sh\nmake run\n```\n")] == ["skip"]
    assert parse("```python\n# app.py\nx = 1\n```\n")[0].file_name == "app.py"
    for wrong, message in [
        ("<!-- readme-test: skip -->\n```sh\nls\n```\n", "needs a"),
        ("<!-- readme-test: later (why) -->\n```sh\nls\n```\n", "unknown"),
        ("<!-- readme-test: skip (why) -->\nSome text.\n```sh\nls\n```\n", "right before"),
        ("<!-- readme-test: skip (why) -->\n", "right before"),
    ]:
        with pytest.raises(AssertionError, match=message):
            parse(wrong)
