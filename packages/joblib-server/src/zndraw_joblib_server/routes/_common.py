"""Pieces shared by the route modules: body limits, Prefer parsing, paging, docs."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Header, Query, Request, Response
from fastapi.routing import APIRoute

from zndraw_joblib_core import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    PROBLEM_TYPES,
    ProblemDetail,
)
from zndraw_joblib_server.dependencies import settings_of
from zndraw_joblib_server.errors import route_error_response
from zndraw_joblib_server.limits import check_declared_length, read_body, require_token

__all__ = [
    "JobLibRoute",
    "Limit",
    "Offset",
    "PreferHeader",
    "prefers_minimal",
    "problems",
    "wait_seconds",
]

_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,9}(?:\.\d{1,6})?)(?:$|[,;\s])")


class JobLibRoute(APIRoute):
    """An API route that limits request bodies and reads them only from known callers.

    A body larger than ``max_body_bytes`` is refused with 413; a caller without a valid
    bearer token gets 401 before any of its body is read. Whatever the route raises is
    answered here as problem+json (:func:`~zndraw_joblib_server.errors.route_error_response`),
    so a host's own exception handlers neither see nor reformat the queue's errors.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap the handler so the body is read with a size limit first."""
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            try:
                limit = settings_of(request).max_body_bytes
                if request.method in {"POST", "PUT", "PATCH"}:
                    require_token(request)
                    request._body = await read_body(request, limit)
                else:
                    check_declared_length(request, limit)
                return await handler(request)
            except Exception as exc:
                return await route_error_response(request, exc)

        return limited


def wait_seconds(prefer: str | None, cap: float) -> float | None:
    """The ``wait=N`` preference of a ``Prefer`` header, capped; None when absent or 0."""
    match = _WAIT.search(prefer.strip()) if prefer else None
    if match is None:
        return None
    value = min(float(match.group(1)), cap)
    return value if value > 0 else None


def prefers_minimal(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header asks for ``return=minimal`` (RFC 7240)."""
    parts = (prefer or "").replace(";", ",").split(",")
    return "return=minimal" in (part.strip().lower().replace(" ", "") for part in parts)


PreferHeader = Annotated[
    str | None,
    Header(
        description="`wait=N`: hold the request up to N seconds (capped by the server's "
        "`long_poll_max_wait_seconds`) until there is something to answer.",
    ),
]
"""The ``Prefer`` request header."""

Limit = Annotated[
    int,
    Query(ge=0, le=MAX_PAGE_LIMIT, description="Page size; 0 only counts."),
]
"""Page size query parameter (default 50)."""

Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="Entries to skip.")]
"""Page offset query parameter."""

DEFAULT_LIMIT = DEFAULT_PAGE_LIMIT


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem+json answers for ``statuses``."""
    docs: dict[int | str, dict[str, Any]] = {}
    for status in sorted({401, 422, *statuses}):
        kinds = sorted(cls.slug for cls in PROBLEM_TYPES.values() if cls.status == status)
        docs[status] = {
            "model": ProblemDetail,
            "content": {"application/problem+json": {}},
            "description": "Problem: " + (", ".join(kinds) or "error"),
        }
    return docs
