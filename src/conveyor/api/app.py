"""The standalone application: ``create_app(settings)`` (what ``conveyor api`` serves)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..client import AsyncClient
from ..metrics import redis_health
from .metrics import metrics_router
from .models import Health, Readiness
from .problems import Problem, from_validation, responses
from .routes import SECURITY_SCHEME, api_router
from .service import ApiService
from .settings import ApiSettings

log = logging.getLogger("conveyor.api")

DESCRIPTION = """\
Enqueue and manage Conveyor jobs from any language.

Authenticate with `Authorization: Bearer <token>`; tokens carry the scopes `read`,
`enqueue` and `admin`. Errors are RFC 9457 problem documents (`application/problem+json`).
"""


def create_app(settings: ApiSettings | None = None, service: ApiService | None = None) -> FastAPI:
    """The API as a FastAPI application: ``/v1`` endpoints, ``/healthz``, ``/readyz``, docs."""
    settings = settings or (service.settings if service else ApiSettings.from_env())
    service = service or ApiService(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        archiving = service.start_archiving()
        # In the background: a Redis that is down must not hold up the start (readiness says so).
        checking = asyncio.create_task(
            redis_health.warn_if_evicting(service.client.transport, log), name="conveyor-redis-check"
        )
        yield
        checking.cancel()  # still waiting on a Redis that does not answer
        await asyncio.wait([checking])
        await service.stop_archiving(archiving)
        await service.aclose()

    app = FastAPI(
        title="Conveyor API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.docs else None,
        docs_url=None,  # served below from assets shipped with the package, not a CDN
        redoc_url=None,
    )
    app.state.conveyor = service
    if settings.docs:
        _serve_docs(app)
    app.include_router(api_router(service))
    app.include_router(metrics_router(service))
    install_security_scheme(app)

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["health"],
        summary="The process is alive",
        operation_id="healthz",
    )
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        responses=responses(503),
        summary="Redis is reachable and the scripts are loaded; how Redis is set up",
        operation_id="readyz",
    )
    async def readyz() -> Response:
        """200 when Redis answers (the scripts are loaded then), with the checks of
        ``conveyor health`` in the body; 503 when it does not.

        A failed check (an eviction policy that can lose jobs, memory nearly full) does not
        make the API unready: every replica shares the same Redis, so a 503 would take all of
        them out of the load balancer at once, turning a risk into an outage while enqueues
        still succeed, and no restart of the API fixes a Redis setting. It shows in the body
        (``health``: ``fail``), in ``conveyor health``'s exit code and in the exported
        ``conveyor_redis_*`` figures, where alerts belong."""
        try:
            await service.client.load_scripts()
        except Exception:
            return Problem(
                503, "Redis is not reachable; the API cannot serve jobs yet", code="not-ready"
            ).response("/readyz")
        return Response(orjson.dumps(await readiness(service.client)), media_type="application/json")

    # Errors outside the router (unknown paths, wrong methods) are problems too.
    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = f"no endpoint at {request.url.path}; see /docs for the endpoints"
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and "Allow" in headers:
            detail = f"{request.method} is not allowed here; this path takes {headers['Allow']}"
        return Problem(exc.status_code, detail, headers=headers).response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> Response:
        return from_validation(exc.errors()).response(request.url.path)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        )
    return app


async def readiness(client: AsyncClient) -> dict[str, Any]:
    """``/readyz``'s body once Redis answered."""
    try:
        found = await redis_health.aread(client)
    except Exception as exc:  # INFO denied to this user, say: Redis answered, so still ready
        log.debug("could not read Redis's health: %r", exc)
        verdicts = [redis_health.Check("redis", "warn", "Redis answers, but its INFO could not be read")]
    else:
        verdicts = redis_health.checks(found)
    return {
        "status": "ready",
        "health": redis_health.overall(verdicts),
        "checks": [check.as_dict() for check in verdicts],
    }


def install_security_scheme(app: FastAPI) -> None:
    """Declare the bearer scheme the router's operations refer to in ``app``'s OpenAPI
    document; a host application that mounts ``api_router`` calls this once."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[SECURITY_SCHEME] = {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from CONVEYOR_API_TOKENS; scopes read, enqueue, admin.",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_json(settings: ApiSettings | None = None) -> bytes:
    """The OpenAPI document, without starting a server (for client generators)."""
    app: Any = create_app(settings or ApiSettings(), ApiService(settings or ApiSettings()))
    return orjson.dumps(app.openapi(), option=orjson.OPT_INDENT_2)


def _serve_docs(app: FastAPI) -> None:
    """Interactive docs whose script and styles come from this server (the swagger-ui-bundle
    package), so they work on a machine without internet access."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Conveyor API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
