"""``conveyor metrics``: a small Prometheus exporter of the fleet's figures, without the API."""

from __future__ import annotations

import asyncio
import signal

import click

from ..client import AsyncClient
from ..metrics import fleet
from ..metrics.exposition import render
from ..metrics.http import MetricsServer, PortUnavailable
from .options import url_option
from .output import console

SCRAPE_TIMEOUT = fleet.READ_TIMEOUT + 2
"""Seconds a scrape may take: the figures give up on Redis before (``fleet.READ_TIMEOUT``)."""


@click.command("metrics")
@url_option
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
@click.option(
    "--port", default=9808, type=click.IntRange(0, 65535), help="Port to listen on (0: any free one)."
)
@click.option(
    "-Q",
    "--queue",
    "queues",
    multiple=True,
    help="Export only these queues (repeat the option); default: every queue Redis knows.",
)
def metrics(url: str, host: str, port: int, queues: tuple[str, ...]) -> None:
    """Serve the fleet's figures to Prometheus at http://HOST:PORT/metrics.

    The same figures as /metrics of `conveyor api`, for a deployment without the API: per
    queue, jobs by state, the oldest waiting job's age, rates of completed, failed, retried
    and cancelled jobs and wait and run time histograms, counted by the Lua scripts for the
    whole fleet; live workers; Redis's memory, clients and settings. Each scrape reads
    Redis once; one exporter is enough for any number of workers. /livez answers 200 while
    the exporter runs.

    \b
    Example scrape config:
      scrape_configs:
        - job_name: conveyor
          static_configs: [{targets: ["127.0.0.1:9808"]}]
    """
    try:
        asyncio.run(_serve(url, host, port, list(queues) or None))
    except PortUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


async def _serve(url: str, host: str, port: int, queues: list[str] | None) -> None:
    client = AsyncClient.from_url(url)
    loop = asyncio.get_running_loop()

    def scrape() -> str:  # in the server's thread: the figures are read on this loop
        figures = asyncio.run_coroutine_threadsafe(fleet.collect(client, queues), loop)
        try:
            return render(figures.result(SCRAPE_TIMEOUT))
        finally:
            figures.cancel()  # when it timed out: no reads left running behind the answer

    server = MetricsServer(host, port, metrics=scrape, health=lambda: (True, {"status": "ok"}))
    server.start()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    console.print(f"Serving the fleet's figures at http://{host}:{server.port}/metrics (Ctrl-C to stop)")
    try:
        await stopping.wait()
    finally:
        server.stop()
        await client.close()
