"""The standalone application: ``create_app(settings)`` (what ``conveyor api`` serves)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .models import Health
from .problems import Problem, from_validation, responses
from .routes import SECURITY_SCHEME, api_router
from .service import ApiService
from .settings import ApiSettings

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
        yield
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
        response_model=Health,
        tags=["health"],
        responses=responses(503),
        summary="Redis is reachable and the scripts are loaded",
        operation_id="readyz",
    )
    async def readyz() -> Response:
        try:
            await service.client.load_scripts()
        except Exception:
            return Problem(
                503, "Redis is not reachable; the API cannot serve jobs yet", code="not-ready"
            ).response("/readyz")
        return Response(b'{"status":"ready"}', media_type="application/json")

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
