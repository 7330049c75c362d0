"""Bearer tokens and scopes: every non-public endpoint answers 401 without a token and 403
with a token lacking its scope; tokens are kept as hashes; `conveyor api` refuses to serve
beyond loopback without tokens."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from conveyor.api import ApiSettings, TokenStore, create_app
from conveyor.api.auth import MIN_TOKEN_LENGTH, SCOPES
from conveyor.cli import main
from conveyor.dev.server import RedisServer
from conveyor.errors import ConfigurationError

from api_helpers import TOKENS, ThreadedUvicorn, auth, start_api, wait_until_healthy

PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"}


def _routes() -> list[tuple[str, str, str]]:
    """(method, path, scope) of every operation of the app, read from its OpenAPI document."""
    spec = create_app(ApiSettings()).openapi()
    out = []
    for path, operations in spec["paths"].items():
        if path in PUBLIC:
            continue
        for method, operation in operations.items():
            scope = operation.get("x-scope")
            assert scope in ("read", "enqueue", "admin"), f"{method} {path} declares no scope"
            out.append((method.upper(), path, scope))
    return out


ROUTES = _routes()
LACKING = {"read": "enqueue", "enqueue": "read", "admin": "read_enqueue"}


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ThreadedUvicorn]:
    server = start_api(server_url)
    yield server
    server.stop()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_is_listed() -> None:
    assert len(ROUTES) >= 20
    assert {scope for *_, scope in ROUTES} == {"read", "enqueue", "admin"}


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_401_without_token_403_without_scope(
    api: ThreadedUvicorn, method: str, path: str, scope: str
) -> None:
    with httpx.Client(base_url=api.base_url, timeout=30) as http:
        url = _concrete(path)
        missing = http.request(method, url)
        assert missing.status_code == 401, missing.text
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = http.request(method, url, headers={"Authorization": "Bearer not-a-token"})
        assert wrong.status_code == 401
        basic = http.request(method, url, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401
        lacking = http.request(method, url, headers=auth(LACKING[scope]))
        assert lacking.status_code == 403, lacking.text
        assert scope in lacking.json()["detail"]


def test_scopes_grant_what_they_name(api: ThreadedUvicorn, queue: str) -> None:
    with httpx.Client(base_url=api.base_url, timeout=30) as http:
        made = http.post(f"/v1/queues/{queue}/jobs", json={"task": "t"}, headers=auth("enqueue"))
        assert made.status_code == 201
        job = made.json()["id"]
        assert http.get(f"/v1/queues/{queue}/jobs/{job}", headers=auth("read")).status_code == 200
        assert (
            http.post(f"/v1/queues/{queue}/jobs/{job}/cancel", headers=auth("read_enqueue")).status_code
            == 403
        )
        assert http.post(f"/v1/queues/{queue}/jobs/{job}/cancel", headers=auth("admin")).status_code == 200
        assert http.get("/healthz").status_code == 200  # public


def test_token_store_keeps_hashes_only() -> None:
    digest = hashlib.sha256(b"s3cret").hexdigest()
    store = TokenStore.parse(
        [f"sha256:{digest} read  # ops dashboard", "plain-token-0123456 enqueue admin", ""]
    )
    assert store.scopes_of("s3cret") == {"read"}
    assert store.scopes_of("plain-token-0123456") == {"enqueue", "admin"}
    assert store.scopes_of("other") is None
    assert "plain-token" not in repr(store) and "s3cret" not in repr(store)
    for bad in (["token-0123456789ab"], ["token-0123456789ab write"], ["sha256:abc read"]):
        with pytest.raises(ConfigurationError):
            TokenStore.parse(bad)


def test_tokens_from_env_and_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "tokens"
    path.write_text("# tokens\nfile-token-0123456 admin\n")
    settings = ApiSettings.from_env(
        {
            "CONVEYOR_API_TOKENS": "token-a-0123456789 read; token-b-0123456789 enqueue",
            "CONVEYOR_API_TOKENS_FILE": str(path),
        }
    )
    tokens = settings.tokens
    assert tokens.scopes_of("token-a-0123456789") == {"read"}
    assert tokens.scopes_of("token-b-0123456789") == {"enqueue"}
    assert tokens.scopes_of("file-token-0123456") == {"admin"}
    with pytest.raises(ConfigurationError):
        ApiSettings.from_env({"CONVEYOR_API_TOKENS_FILE": str(path) + ".missing"})


def test_cli_refuses_public_bind_without_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_API_TOKENS", raising=False)
    monkeypatch.delenv("CONVEYOR_API_TOKENS_FILE", raising=False)
    result = CliRunner().invoke(main, ["api", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code != 0
    assert "refusing to serve on 0.0.0.0 without API tokens" in result.output


def test_cors_off_by_default_and_configurable(server_url: str) -> None:
    plain = start_api(server_url)
    cors = start_api(server_url, cors_origins=("https://ui.example",))
    try:
        preflight = {
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        with httpx.Client(timeout=30) as http:
            off = http.options(f"{plain.base_url}/v1/queues", headers=preflight)
            assert "access-control-allow-origin" not in off.headers
            on = http.options(f"{cors.base_url}/v1/queues", headers=preflight)
            assert on.headers["access-control-allow-origin"] == "https://ui.example"
            simple = http.get(f"{cors.base_url}/healthz", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in simple.headers
    finally:
        plain.stop()
        cors.stop()


def test_tokens_constant() -> None:
    assert set(TOKENS) == {"admin", "read", "enqueue", "read_enqueue"}


@pytest.mark.parametrize("processes", [1, 2])
def test_cli_without_tokens_serves_loopback_and_says_so(redis_server: RedisServer, processes: int) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from api_helpers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_API_TOKENS")}
    conveyor = Path(sys.executable).parent / "conveyor"
    process = subprocess.Popen(
        [str(conveyor), "api", "--url", redis_server.url, "--port", str(port), "--processes", str(processes)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_healthy(port, process)
        open_access = httpx.get(f"http://127.0.0.1:{port}/v1/queues", timeout=5)
        assert open_access.status_code == 200  # no tokens: no authentication, loopback only
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert "no API tokens configured: serving on loopback only" in " ".join(err.split())
    assert redis_server.password is None or redis_server.password not in err


def test_router_mounted_in_a_host_app(server_url: str, queue: str) -> None:
    import contextlib
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from conveyor.api import ApiService, api_router, install_security_scheme

    from api_helpers import api_settings

    first = ApiService(api_settings(server_url))
    second = ApiService(api_settings(server_url, max_payload_bytes=100))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await first.aclose()
        await second.aclose()

    host = FastAPI(lifespan=lifespan)

    @host.get("/own")
    async def own() -> dict[str, str]:
        return {"mine": "yes"}

    host.include_router(api_router(first), prefix="/jobs")
    host.include_router(api_router(second, operation_prefix="small_"), prefix="/small")
    install_security_scheme(host)
    server = ThreadedUvicorn(host).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            assert http.get("/own").json() == {"mine": "yes"}
            made = http.post(
                f"/jobs/v1/queues/{queue}/jobs", json={"task": "t", "args": ["x" * 200]}, headers=auth()
            )
            assert made.status_code == 201
            small = http.post(
                f"/small/v1/queues/{queue}/jobs", json={"task": "t", "args": ["x" * 200]}, headers=auth()
            )
            assert small.status_code == 413  # the second router's own settings
            assert http.get(f"/small/v1/queues/{queue}", headers=auth()).json()["counts"]["waiting"] == 1
            denied = http.get("/jobs/v1/queues")
            assert denied.status_code == 401 and denied.headers["content-type"] == "application/problem+json"
            bad = http.post(f"/jobs/v1/queues/{queue}/jobs", json={"nope": 1}, headers=auth())
            assert bad.status_code == 422 and bad.json()["field"] == "task"
            spec = http.get("/openapi.json").json()
            assert "/jobs/v1/queues/{queue}/jobs" in spec["paths"]
            assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
            ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
            assert {"enqueue", "small_enqueue", "wait_result", "small_list_jobs"} <= ids
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (" read enqueue admin", "a scope name"),  # the README's line with $MY_TOKEN unset
        ("enqueue read", "a scope name"),
        ("admin admin", "a scope name"),
        ("hunter2 admin", "7 characters"),
        ("0123456789abcde read", "15 characters"),
    ],
)
def test_a_token_that_is_a_scope_name_or_short_is_refused(
    monkeypatch: pytest.MonkeyPatch, line: str, says: str
) -> None:
    """``CONVEYOR_API_TOKENS="$MY_TOKEN read enqueue admin"`` with the variable unset reads
    as the token ``read`` with scopes enqueue and admin: anyone sending ``Bearer read`` was
    an admin. Such lines, and short tokens, stop the server from starting."""
    with pytest.raises(ConfigurationError, match=says) as refused:
        ApiSettings.from_env({"CONVEYOR_API_TOKENS": line})
    assert "--generate-token" in str(refused.value)
    secret = line.split()[0]
    assert secret in SCOPES or secret not in str(refused.value), "a token is never echoed"
    monkeypatch.setenv("CONVEYOR_API_TOKENS", line)
    monkeypatch.delenv("CONVEYOR_API_TOKENS_FILE", raising=False)
    started = CliRunner().invoke(main, ["api", "--port", "1"])
    assert started.exit_code == 1 and says in " ".join(started.output.split())
    assert MIN_TOKEN_LENGTH >= 16 and TokenStore.parse(["sixteen-chars-ok read"]).enabled


def test_generate_token_prints_a_token_and_its_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_API_TOKENS", "read admin")  # not even read: it only prints
    made = CliRunner().invoke(main, ["api", "--generate-token"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert len(token) >= 32 and "\n" not in token
    line = re.search(r'CONVEYOR_API_TOKENS="([^"]+)"', made.stderr)
    assert line is not None and token not in made.stderr
    assert TokenStore.parse([line.group(1)]).scopes_of(token) == frozenset(SCOPES)
    again = CliRunner().invoke(main, ["api", "--generate-token"])
    assert again.stdout.strip() != token
