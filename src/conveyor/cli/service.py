"""Commands that start long-running services: the HTTP API, and ``conveyor dev`` (everything locally)."""

from __future__ import annotations

import os
import sys

import click

from ..redis.connect import redact
from .options import url_option
from .output import console, err_console


@click.command()
@url_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Allow browser calls from this origin (repeatable; CORS is off without one).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@click.option(
    "--processes",
    type=click.IntRange(1),
    default=1,
    help="Server processes sharing the port (each its own event loop and Redis connections).",
)
@click.option(
    "--generate-token",
    is_flag=True,
    help="Print a new random token and the CONVEYOR_API_TOKENS line that grants it, then exit.",
)
def api(
    url: str,
    host: str,
    port: int,
    cors_origins: tuple[str, ...],
    log_level: str,
    processes: int,
    generate_token: bool,
) -> None:
    """Serve the HTTP API (needs the api extra: pip install 'conveyor[api]').

    Tokens come from CONVEYOR_API_TOKENS or the file named by CONVEYOR_API_TOKENS_FILE
    (see docs/api.md); each is at least 16 characters (--generate-token makes one). Without
    any token the API binds to loopback only.
    """
    if generate_token:
        _print_new_token()
        return
    try:
        import uvicorn

        from ..api import ApiSettings, create_app
        from ..api.server import uvicorn_options
    except ImportError as exc:
        raise click.ClickException(f"the API needs its extra: pip install 'conveyor[api]' ({exc})") from None
    settings = ApiSettings.from_env(redis_url=url, cors_origins=cors_origins or None)
    if not settings.tokens.enabled:
        _refuse_open_exposure(host)
    err_console.print(f"Conveyor API on http://{host}:{port} (docs at /docs), Redis {redact(url)}")
    # The same HTTP options in every process: the cap on request heads among them.
    options = uvicorn_options()
    if processes == 1:
        uvicorn.run(
            create_app(settings), host=host, port=port, log_level=log_level, access_log=False, **options
        )
        return
    # Several processes import the app themselves: hand them the settings through the
    # environment, which ApiSettings.from_env reads in each of them.
    os.environ["CONVEYOR_REDIS_URL"] = url
    if cors_origins:
        os.environ["CONVEYOR_API_CORS_ORIGINS"] = ",".join(cors_origins)
    uvicorn.run(
        "conveyor.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        log_level=log_level,
        access_log=False,
        **options,
    )


def _print_new_token() -> None:
    """The token on stdout alone (``TOKEN=$(conveyor api --generate-token)``); how to
    configure it on stderr, with its hash, which is what the server should be given."""
    from ..api.auth import hash_token, new_token

    token = new_token()
    click.echo(token)
    err_console.print(
        "Give the server its hash (it keeps nothing else), with the scopes it grants:\n"
        f'  CONVEYOR_API_TOKENS="sha256:{hash_token(token)} read enqueue admin"\n'
        "and the token itself to the clients: Authorization: Bearer <token>",
        highlight=False,
        soft_wrap=True,
    )


def _refuse_open_exposure(host: str) -> None:
    """Without tokens, serve on loopback only, and say so."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise click.ClickException(
            f"refusing to serve on {host} without API tokens: anyone who can reach it could "
            "enqueue and delete jobs. Set CONVEYOR_API_TOKENS (or CONVEYOR_API_TOKENS_FILE), "
            "or bind to 127.0.0.1."
        )
    err_console.print(
        f"[yellow]no API tokens configured: serving on loopback only ({host}), without "
        "authentication[/yellow]"
    )


@click.command()
@click.option(
    "--jobs",
    "job_count",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Demo jobs to enqueue.",
)
@click.option("--exit", "exit_after", is_flag=True, help="Exit when the demo workload is done.")
@click.option(
    "--state-dir",
    default=".conveyor",
    show_default=True,
    envvar="CONVEYOR_STATE_DIR",
    show_envvar=True,
    help="Where the embedded Redis keeps its data.",
)
def dev(job_count: int, exit_after: bool, state_dir: str) -> None:
    """Run everything locally: Redis (embedded unless CONVEYOR_REDIS_URL is set), a worker, a demo.

    Ctrl-C stops everything and leaves no process behind.
    """
    from ..dev.mode import run_dev

    sys.exit(run_dev(job_count=job_count, exit_after=exit_after, state_dir=state_dir, console=console))
