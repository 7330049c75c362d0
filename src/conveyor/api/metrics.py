"""Monitoring endpoints: ``/metrics`` for Prometheus, and each queue's figures as JSON.

Both read what the Lua scripts keep in Redis (:mod:`conveyor.ops.metrics`), so every API
replica answers the same, and the figures cover the whole fleet of workers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from ..metrics import fleet
from ..metrics.buckets import BOUNDS_SECONDS
from ..metrics.exposition import CONTENT_TYPE, render
from ..ops.metrics import Histogram, Period, QueueFigures
from .problems import responses
from .routing import COMMON, QueueName, json_response, make_route_class, scoped
from .service import ApiService


def metrics_router(service: ApiService) -> APIRouter:
    """``GET /metrics``: the fleet's figures in Prometheus' text format (scope ``read``
    when tokens are on: give Prometheus one in ``authorization`` of its scrape config)."""
    route_class = make_route_class(service)
    router = APIRouter(route_class=route_class, responses=responses(401, 403))

    @router.get(
        "/metrics",
        openapi_extra=scoped("read"),
        summary="The fleet's figures for Prometheus",
        tags=["monitoring"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
    )
    async def metrics() -> Response:
        return Response(render(await fleet.collect(service.client)), media_type=CONTENT_TYPE)

    route_class.siblings = router.routes  # for the Allow of a 405
    return router


def add_figures_routes(router: APIRouter, service: ApiService) -> None:
    """``GET /v1/queues/{queue}/figures``: what the fleet did with a queue, minute by minute."""

    @router.get(
        "/queues/{queue}/figures",
        openapi_extra=scoped("read"),
        summary="A queue's rates, wait and run times, minute by minute",
        tags=["queues"],
        responses=responses(*COMMON),
    )
    async def queue_figures(
        queue: QueueName,
        minutes: Annotated[
            int, Query(ge=0, le=1440, description="Whole minutes before the current one")
        ] = 60,
    ) -> Response:
        return json_response(figures_out(await service.client.figures(queue, minutes)))


def _histogram_out(histogram: Histogram) -> dict[str, Any]:
    return {
        "count": histogram.count,
        "sum_seconds": histogram.sum_seconds,
        "p50_seconds": histogram.quantile(0.5),
        "p95_seconds": histogram.quantile(0.95),
        "p99_seconds": histogram.quantile(0.99),
        "buckets": list(histogram.counts),
    }


def _period_out(period: Period) -> dict[str, Any]:
    return {
        "completed": period.completed,
        "failed": period.failed,
        "retried": period.retried,
        "cancelled": period.cancelled,
        "wait": _histogram_out(period.wait),
        "run": _histogram_out(period.run),
    }


def figures_out(figures: QueueFigures) -> dict[str, Any]:
    """The JSON of :class:`QueueFigures`: bucket counts are per bucket, the bounds given once."""
    return {
        "queue": figures.queue,
        "time_ms": figures.now_ms,
        "counts": figures.counts,
        "suspects": figures.suspects,
        "delayed_due": figures.delayed_due,
        "oldest_waiting_seconds": figures.oldest_waiting_s,
        "paused": figures.paused,
        "limits": {
            "concurrency": figures.concurrency,
            "rate_max": figures.rate_max,
            "rate_window_seconds": figures.rate_window_s,
        },
        "bucket_bounds_seconds": list(BOUNDS_SECONDS),
        "totals": _period_out(figures.totals),
        "minutes": [{"minute": minute, **_period_out(period)} for minute, period in figures.minutes],
    }
