"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns goes through :class:`Problem`: a status, a short title, and a
``detail`` that says what was wrong and how to fix it. Unexpected exceptions become a bare
500 whose body names no exception, path or connection string; the detail goes to the log.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import Response

log = logging.getLogger("conveyor.api")

PROBLEM_TYPE = "https://conveyor.dev/problems/"
MEDIA_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",
    503: "Service unavailable",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "field": {"type": "string", "description": "The request field that was wrong, when one was."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


class Problem(Exception):
    """Raise from an endpoint to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or TITLES.get(status, "error").lower().replace(" ", "-")
        self.field = field
        self.headers = headers or {}
        self.errors = errors

    def response(self, instance: str | None = None) -> Response:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.code,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.field:
            body["field"] = self.field
        if self.errors:
            body["errors"] = self.errors
        return Response(orjson.dumps(body), self.status, headers=self.headers, media_type=MEDIA_TYPE)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem answers with these statuses."""
    return {
        status: {
            "description": TITLES.get(status, "Error"),
            "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


def field_name(location: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "jobs", 3, "task")`` -> ``"jobs[3].task"``; query and path names bare."""
    parts = [p for p in location if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def from_validation(errors: Any) -> Problem:
    """A FastAPI ``RequestValidationError``'s errors as one problem naming the first field."""
    items = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        loc = error.get("loc") or ()
        items.append({"field": field_name(loc), "message": str(error.get("msg", "invalid"))})
        if error.get("type") == "json_invalid":
            return Problem(
                400,
                f"the request body is not valid JSON: {error.get('ctx', {}).get('error', 'parse error')}",
                code="invalid-json",
                field="body",
            )
    if not items:
        return Problem(422, "the request is invalid", code="invalid-request")
    first = items[0]
    return Problem(
        422,
        f"{first['field']}: {first['message']}",
        code="invalid-request",
        field=first["field"],
        errors=items[:50],
    )
