"""The versioned endpoints (``/v1/...``) as a router a host FastAPI application can mount.

``api_router(service)`` closes over an :class:`~conveyor.api.service.ApiService`: the Redis
client and settings are injected, never looked up in a module global. The endpoints live in
:mod:`.jobs`, :mod:`.queues`, :mod:`.schedules` and :mod:`.history`; :mod:`.routing` says how
every one of them authenticates, limits and answers errors.
"""

from __future__ import annotations

from fastapi import APIRouter

from .history import add_history_routes
from .jobs import add_job_routes
from .metrics import add_figures_routes
from .problems import responses
from .queues import add_queue_routes
from .routing import COMMON, SECURITY_SCHEME, make_route_class
from .schedules import add_schedule_routes
from .service import ApiService

__all__ = ["SECURITY_SCHEME", "api_router"]


def api_router(service: ApiService, *, operation_prefix: str = "") -> APIRouter:
    """The ``/v1`` endpoints, bound to ``service``. Mount it with ``app.include_router(...)``.

    Operation ids in the OpenAPI document are the endpoint names (``enqueue``, ``get_job``,
    ``wait_result``, ...), which is what client generators name their methods after; give
    ``operation_prefix`` to keep them unique when one app mounts two of these routers.
    """
    route_class = make_route_class(service)
    router = APIRouter(
        prefix="/v1",
        route_class=route_class,
        responses=responses(*COMMON),
        generate_unique_id_function=lambda route: operation_prefix + route.name,
    )
    add_job_routes(router, service)
    add_queue_routes(router, service)
    add_schedule_routes(router, service)
    add_history_routes(router, service)
    add_figures_routes(router, service)
    route_class.siblings = router.routes  # for the Allow of a 405
    return router
