"""How every route of the API behaves: scopes, body cap, errors as problem documents.

:class:`ProblemRoute` (made per service by :func:`make_route_class`) checks the bearer token's
scope, caps the body size, checks names in the path and turns every error into a problem
document, so the router behaves the same mounted in a host app as in ``create_app``.
"""

from __future__ import annotations

import email.message
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, ClassVar

import orjson
from fastapi import Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from ..errors import ConveyorError, InvalidState, JobNotFound, PayloadTooLarge, SerializationError
from ..ops.ids import validate_job_id
from ..ops.keys import validate_queue_name
from . import models as m
from .auth import TokenStore
from .problems import Problem, from_validation, responses
from .service import ApiService

log = logging.getLogger("conveyor.api")

QueueName = Annotated[
    str, Path(pattern=m.NAME_PATTERN, description=f"Queue name: 1 to 200 characters, {m.SEGMENT_RULE}.")
]
JobId = Annotated[
    str, Path(pattern=m.ID_PATTERN, description=f"Job id: 1 to 256 characters, {m.SEGMENT_RULE}.")
]
ScheduleName = Annotated[
    str,
    Path(
        pattern=m.SCHEDULE_NAME_PATTERN,
        description=f"Schedule name: 1 to 200 characters, {m.SEGMENT_RULE}, without '@'.",
    ),
]

COMMON = (400, 401, 403, 404, 413, 422, 503)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status, media_type="application/json")


def _problem_for(exc: Exception) -> Problem | None:
    """Known exceptions as problems; None for anything unexpected."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        return from_validation(exc.errors())
    if isinstance(exc, StarletteHTTPException):  # FastAPI's own: a body it cannot parse
        detail = exc.detail if isinstance(exc.detail, str) else "the request could not be read"
        return Problem(exc.status_code, detail, field="body" if exc.status_code == 400 else None)
    if isinstance(exc, JobNotFound):
        return Problem(
            404, f"{exc}; check the queue name and the id (finished jobs expire)", code="not-found"
        )
    if isinstance(exc, InvalidState):
        return Problem(409, str(exc), code="invalid-state")
    if isinstance(exc, PayloadTooLarge):
        return Problem(413, str(exc), code="payload-too-large", field="args")
    if isinstance(exc, SerializationError):
        return Problem(422, str(exc), code="not-json", field="args")
    if isinstance(exc, UnicodeError):
        return Problem(422, "a text field is not valid UTF-8 (lone surrogates?)", code="invalid-text")
    if isinstance(exc, RedisError | OSError):
        log.error("Redis error: %s", type(exc).__name__)
        return Problem(503, "Redis is unreachable or answered with an error; retry shortly", code="redis")
    if isinstance(exc, ConveyorError):
        return Problem(409, str(exc), code=exc.code.lower().replace("_", "-"))
    return None


class ApiRoute(APIRoute):
    """What every route does apart from the service: 415 documented where a body is read,
    and a 405 that names every method of the path."""

    siblings: ClassVar[Sequence[BaseRoute]] = ()
    """The routes of the router this class serves (set by ``api_router`` once they are added)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.takes_body:
            self.responses = {**self.responses, **responses(415)}

    @property
    def takes_body(self) -> bool:
        """The route reads a JSON body: a FastAPI body parameter, or one it parses itself and
        documents by hand (the single enqueue)."""
        return self.body_field is not None or "requestBody" in (self.openapi_extra or {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette answers a wrong method with the Allow of the first route whose path
        # matched, while the path's other routes (GET and POST of /jobs) have their own.
        if self.methods and scope["method"] not in self.methods:
            allowed = self.allowed_methods(scope["path"])
            problem = Problem(
                405,
                f"{scope['method']} is not allowed here; this path takes {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
            await problem.response(scope["path"])(scope, receive, send)
            return
        await super().handle(scope, receive, send)

    def allowed_methods(self, path: str) -> list[str]:
        """The methods of every sibling route whose path matches ``path`` (this route's does).

        Where the router is mounted is not known here (a host app may include it under a
        prefix, and FastAPI versions keep prefixed copies or the routes themselves), so the
        matching starts at the first "/" from which this route's own sibling matches."""
        routes = [r for r in self.siblings if isinstance(r, APIRoute)]
        for start, char in enumerate(path):
            if char != "/":
                continue
            rest = path[start:]
            if any(r.endpoint is self.endpoint and r.path_regex.match(rest) for r in routes):
                return sorted({m for r in routes if r.path_regex.match(rest) for m in r.methods or ()})
        return sorted(self.methods or ())


def make_route_class(service: ApiService) -> type[ApiRoute]:
    """A route class bound to ``service``: auth by scope, body cap, errors as problems."""
    settings = service.settings
    tokens = settings.tokens

    class ProblemRoute(ApiRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            scope = (self.openapi_extra or {}).get("x-scope")
            takes_body = self.takes_body

            async def guarded(request: Request) -> Response:
                try:
                    if scope and tokens.enabled:
                        _authorize(tokens, request, scope)
                    _check_path(request.path_params)
                    if request.method in ("POST", "PUT", "PATCH"):
                        await _read_capped_body(request, settings.max_body_bytes)
                        if takes_body:
                            _check_json(request)
                    return await handler(request)
                except Exception as exc:
                    problem = _problem_for(exc)
                    if problem is None:
                        log.exception("unexpected error in %s %s", request.method, self.path)
                        problem = Problem(500, "the server failed unexpectedly; the error was logged")
                    return problem.response(request.url.path)

            return guarded

    return ProblemRoute


def _authorize(tokens: TokenStore, request: Request, scope: str) -> None:
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="conveyor"'},
        )
    scopes = tokens.scopes_of(token.strip())
    if scopes is None:
        raise Problem(
            401,
            "the bearer token is not known to this server",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="conveyor", error="invalid_token"'},
        )
    if scope not in scopes and "admin" not in scopes:
        raise Problem(
            403,
            f"the token lacks the {scope!r} scope this endpoint needs (it has: {', '.join(sorted(scopes))})",
            code="forbidden",
        )


def _check_path(params: dict[str, Any]) -> None:
    """Names in the path are checked as the core checks them (the OpenAPI patterns cannot
    say "printable"), so a bad one is a 422 naming it, never a 500."""
    for name, check in (("queue", validate_queue_name), ("job_id", validate_job_id)):
        value = params.get(name)
        if value is not None:
            try:
                check(value)
            except ValueError as exc:
                raise Problem(422, f"{name}: {exc}", code="invalid-request", field=name) from None


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters aside."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _check_json(request: Request) -> None:
    """A body must say it is JSON, on every endpoint that takes one (the single enqueue
    parses its body itself and would otherwise take any Content-Type)."""
    if request._body and not is_json(request.headers.get("content-type")):
        raise Problem(
            415,
            "send the body as JSON with 'Content-Type: application/json'",
            code="unsupported-media-type",
            field="Content-Type",
        )


async def _read_capped_body(request: Request, limit: int) -> None:
    """Read the body, stopping as soon as it passes ``limit`` bytes (a chunked upload has no
    Content-Length to refuse it by), and keep it where Starlette caches it."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    request._body = b"".join(chunks)  # Request.body() returns this from now on


def _too_large(limit: int) -> Problem:
    return Problem(
        413,
        f"the request body is over {limit:,} bytes; send fewer jobs per request",
        code="body-too-large",
    )


SECURITY_SCHEME = "bearerAuth"


def scoped(scope: str) -> dict[str, Any]:
    """The scope a route needs, read by ProblemRoute, and its security in the OpenAPI
    document (documented this way rather than with a Security dependency, which costs a
    dependency resolution on every request of the hot enqueue path)."""
    return {"x-scope": scope, "security": [{SECURITY_SCHEME: []}]}
