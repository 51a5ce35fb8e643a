"""RFC 9457 responses: core problem types, validation errors and HTTP errors as problem+json."""

from __future__ import annotations

import contextlib
import logging
import traceback
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zndraw_joblib_core import (
    API_PREFIX,
    PROBLEM_TYPES,
    ProblemDetail,
    ProblemError,
    RequestValidationFailed,
    ServiceUnavailable,
    Unauthorized,
)
from zndraw_joblib_server.auth import auth_of, token_user_gone

__all__ = [
    "PROBLEM_JSON",
    "UnexpectedErrors",
    "database_errors",
    "install_exception_handlers",
    "log_unexpected",
    "problem_exception_handler",
    "problem_response",
    "route_error_response",
]

logger = logging.getLogger("zndraw_joblib_server")

PROBLEM_JSON = "application/problem+json"
"""The media type of problem responses."""

# The generic problem type of each status (the first one defined: bad-request, not-found...).
_BY_STATUS = {
    cls.status: cls
    for cls in reversed(PROBLEM_TYPES.values())
    if cls.status in {400, 401, 403, 404, 405, 413, 415, 503}
}


def problem_response(
    problem: ProblemDetail, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Render a problem body as an ``application/problem+json`` response."""
    return JSONResponse(
        jsonable_encoder(problem.model_dump(exclude_none=True)),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


async def problem_exception_handler(request: Request, exc: Exception) -> Response:
    """Answer a :class:`~zndraw_joblib_core.ProblemError` with its problem+json body.

    The one handler a host may want app-wide, for problems raised by its own code (e.g. a
    room access hook); it handles nothing else::

        app.add_exception_handler(ProblemError, problem_exception_handler)

    The queue's routes answer their own errors without it (see
    :func:`route_error_response`).
    """
    assert isinstance(exc, ProblemError)
    return _answer(request, exc)


def _answer(request: Request, exc: ProblemError) -> Response:
    problem = exc.to_problem()
    problem.instance = problem.instance or request.url.path
    return problem_response(problem, exc.headers)


async def _on_request_error(request: Request, exc: Exception) -> Response:
    """Validation and HTTP errors: problem+json under the queue's prefix, FastAPI's elsewhere."""
    if request.url.path.startswith(API_PREFIX):
        return await route_error_response(request, exc)
    if isinstance(exc, RequestValidationError):
        return await request_validation_exception_handler(request, exc)
    assert isinstance(exc, StarletteHTTPException)
    return await http_exception_handler(request, exc)


def _validation_problem(request: Request, exc: RequestValidationError) -> Response:
    errors: list[dict[str, Any]] = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return _answer(request, RequestValidationFailed(f"{where}: {first['msg']}", errors=errors))


def _http_problem(request: Request, exc: StarletteHTTPException) -> Response:
    cls = _BY_STATUS.get(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers or {})
    if cls is not None:
        return _answer(request, cls(detail, headers=headers))
    return _status_problem(request, exc.status_code, detail, headers)


def _status_problem(
    request: Request, status: int, detail: str | None, headers: dict[str, str] | None = None
) -> Response:
    """A problem of no core type: titled with the status's phrase."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    problem = ProblemDetail(title=title, status=status, detail=detail, instance=request.url.path)
    return problem_response(problem, headers)


_BUSY_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})
"""PostgreSQL refusing for now: too many connections, shutting down, starting up."""


def _refused_by_postgres(exc: BaseException | None) -> bool:
    """Whether a driver error (asyncpg's carry ``sqlstate``) is a refusal to retry later."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and (state.startswith("08") or state in _BUSY_SQLSTATES)


_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
"""PostgreSQL ending a transaction for a concurrent one: serialisation failure, deadlock."""


def _conflicted(exc: Exception) -> bool:
    """Whether PostgreSQL rolled the transaction back for a concurrent one (retry it)."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    return getattr(orig, "sqlstate", None) in _CONFLICT_SQLSTATES


def _unavailable(exc: Exception) -> bool:
    """Whether a database error means "not reachable now" rather than a bug."""
    if isinstance(exc, sa_exc.TimeoutError | ConnectionError) or _refused_by_postgres(exc):
        return True  # no pooled connection free in time; a new one refused or reset
    return isinstance(exc, sa_exc.DBAPIError) and (
        exc.connection_invalidated
        or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
        or _refused_by_postgres(exc.orig)
    )


async def _user_deleted(request: Request, exc: Exception) -> bool:
    """Whether a failed write referenced the caller's user, deleted since its token was checked.

    The token's user is cached for ``user_cache_seconds`` (and other processes may delete
    it): an insert naming it then breaks a foreign key. That is the caller's credentials
    gone, a 401, not a server error.
    """
    if not isinstance(exc, sa_exc.IntegrityError):
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    state = request.app.state
    if scheme.lower() != "bearer" or not hasattr(state, "auth_settings"):
        return False
    try:
        return await token_user_gone(token.strip(), auth_of(state))
    except Exception:  # the original error is the one to report
        logger.debug("could not check the token's user", exc_info=True)
        return False


async def _on_database(request: Request, exc: Exception) -> Response:
    # Observers (the metrics' error counter) hear of every database error the queue answers.
    for observe in getattr(request.app.state, "joblib_database_error_observers", ()):
        observe(exc)
    if await _user_deleted(request, exc):
        return _answer(request, Unauthorized("The token's user does not exist or is inactive."))
    if _conflicted(exc):  # rolled back whole: the request may be sent again as it was
        logger.warning("transaction conflict on %s %s: %s", request.method, request.url.path, exc)
        detail = "A concurrent request held what this one needed; retry."
        return _answer(request, ServiceUnavailable(detail, headers={"Retry-After": "1"}))
    if not _unavailable(exc):
        return await _on_unexpected(request, exc)
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    detail = "The database is unavailable; retry later."
    return _answer(request, ServiceUnavailable(detail, headers={"Retry-After": "1"}))


_MAX_TRACEBACK_CHARS = 4_000
_MAX_ERROR_CHARS = 500


def log_unexpected(method: str, path: str, exc: BaseException) -> None:
    """Log an unexpected error once, as one record of a few thousand characters at most.

    The record holds the error's (shortened) message and its innermost traceback frames.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__, limit=-8))
    if len(frames) > _MAX_TRACEBACK_CHARS:
        frames = "[...]" + frames[-_MAX_TRACEBACK_CHARS:]
    message = "".join(traceback.format_exception_only(exc)).strip()
    if len(message) > _MAX_ERROR_CHARS:
        message = message[:_MAX_ERROR_CHARS] + "[...]"
    logger.error("unhandled error on %s %s: %s\n%s", method, path, message, frames.rstrip())


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log_unexpected(request.method, request.url.path, exc)
    return _status_problem(request, 500, "An unexpected error occurred; it has been logged.")


def database_errors() -> tuple[type[Exception], ...]:
    """The errors of a database that cannot be reached or answered (asyncpg's if installed)."""
    kinds: list[type[Exception]] = [sa_exc.SQLAlchemyError, ConnectionError]
    with contextlib.suppress(ImportError):  # opening a connection raises asyncpg's own errors
        from asyncpg import PostgresError

        kinds.append(PostgresError)
    return tuple(kinds)


async def route_error_response(request: Request, exc: Exception) -> Response:
    """The problem+json answer to an error raised inside one of the queue's routes.

    The queue's route class calls it for everything its routes (and their dependencies)
    raise, so the queue's errors are problem+json whatever handlers the host installs, and
    the host's handlers stay in charge of the host's own routes: core problems as their
    body, validation errors as 422 ``validation-error``, HTTP errors as the matching
    problem, an unreachable database as 503, anything else as a logged 500.
    """
    if isinstance(exc, ProblemError):
        return await problem_exception_handler(request, exc)
    if isinstance(exc, RequestValidationError):
        return _validation_problem(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return _http_problem(request, exc)
    if isinstance(exc, database_errors()):
        return await _on_database(request, exc)
    return await _on_unexpected(request, exc)


def install_exception_handlers(app: FastAPI) -> None:
    """Answer every error under ``/v1/joblib`` with ``application/problem+json``, app-wide.

    Opt-in, for apps that belong to the queue (the reference app): it replaces the app's
    handlers for validation errors, HTTP errors, database errors and unexpected errors
    (500). The queue's routes answer their own errors without it; what it adds is the
    problem format for requests under ``/v1/joblib`` that match no route (404, 405) and
    for errors raised outside the routes. A host app with handlers of its own should not
    call it (register :func:`problem_exception_handler` alone, if at all).

    Core problem types become their problem body; request validation errors become a 422
    ``validation-error`` problem listing each failing field; HTTP errors (e.g. 401 from
    zndraw-auth) become the matching problem. A database that cannot be reached (a lost
    connection, a refused or reset one, PostgreSQL out of connections or starting up or
    shutting down, no pooled connection free in time) answers 503
    ``service-unavailable`` with ``Retry-After``; the transaction was rolled back (or, if
    the connection died during the commit, may have committed: retries of submits should
    carry an ``Idempotency-Key``). Errors of the host's other paths keep FastAPI's default
    format.
    """
    app.add_exception_handler(ProblemError, problem_exception_handler)
    app.add_exception_handler(RequestValidationError, _on_request_error)
    app.add_exception_handler(StarletteHTTPException, _on_request_error)
    for kind in database_errors():
        app.add_exception_handler(kind, _on_database)
    app.add_exception_handler(Exception, _on_unexpected)


class UnexpectedErrors:
    """ASGI middleware answering an unhandled exception with a 500 problem, logged once.

    Starlette's outermost error middleware re-raises every exception after answering, so the
    server logs its full traceback a second time; this one, installed outside the fast lane,
    answers and logs (truncated) without re-raising.

    Args:
        app: The wrapped ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request; answer 500 if it fails before its answer started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:  # too late to answer: the server closes the connection
                log_unexpected(scope["method"], scope["path"], exc)
                return
            response = await _on_unexpected(Request(scope), exc)
            await response(scope, receive, send)
