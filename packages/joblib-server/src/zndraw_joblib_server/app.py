"""The reference host app: zndraw-auth login, the job queue, the sweeper, health checks.

``zndraw-joblib-server serve`` runs it; tests and benchmarks build it with
:func:`create_app`. A host that has its own app uses :class:`~zndraw_joblib_server.JobQueue`
as this one does (see docs/hosting.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from zndraw_auth import AuthSettings

from zndraw_joblib_core import ServiceUnavailable
from zndraw_joblib_server.accounts import include_account_routes
from zndraw_joblib_server.body_limit import BodyLimit
from zndraw_joblib_server.dashboard import Dashboard
from zndraw_joblib_server.errors import UnexpectedErrors, problem_response
from zndraw_joblib_server.internal.loading import load_extension
from zndraw_joblib_server.logging_setup import RequestIds
from zndraw_joblib_server.metrics import QueueMetrics
from zndraw_joblib_server.queue import JobQueue
from zndraw_joblib_server.ratelimit import RateLimit
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.startup import StartupRefused, ensure_admin, resolve_secret
from zndraw_joblib_server.storage import get_database
from zndraw_joblib_server.tracing import Tracing, tracer_if_installed

__all__ = ["StartupRefused", "create_app"]

logger = logging.getLogger("zndraw_joblib_server")


def create_app(
    settings: JobLibSettings | None = None,
    auth_settings: AuthSettings | None = None,
    *,
    sweeper: bool = True,
    internal: Sequence[type[Any]] = (),
) -> FastAPI:
    """Build the reference app.

    Args:
        settings: Queue settings (default: from ``ZNDRAW_JOBLIB_*`` variables).
        auth_settings: zndraw-auth settings (default: from ``ZNDRAW_AUTH_*`` variables).
        sweeper: Run the sweeper in the lifespan.
        internal: ``@internal`` extension classes, besides those named by
            ``settings.internal_extensions`` (see :class:`~zndraw_joblib_server.JobQueue`).

    Returns:
        A FastAPI app serving ``/auth/*``, ``/users/*``, ``/v1/joblib/*``, ``/health``,
        the OpenAPI docs at ``/docs`` and, unless turned off in the settings, the dashboard
        at ``/joblib/`` and Prometheus metrics at ``/metrics``.

    Raises:
        StartupRefused: The token secret is missing or too short (see
            :func:`~zndraw_joblib_server.startup.resolve_secret`); the lifespan raises it too
            when an account the configuration did not create has the admin's e-mail.
    """
    settings = settings or JobLibSettings()
    auth_settings = resolve_secret(settings, auth_settings or AuthSettings())
    extensions = [load_extension(path) for path in settings.internal_extensions]
    queue = JobQueue(
        settings, sweeper=sweeper, internal=[*extensions, *internal], start_executor=False
    )
    engine, session_maker = queue.engine, queue.session_maker
    # Before include_in: both add their sinks to the queue's event sink.
    metrics = QueueMetrics.attach(queue) if settings.metrics else None
    dashboard = Dashboard.attach(queue) if settings.dashboard else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with queue.lifespan():
            await ensure_admin(session_maker, auth_settings)
            await queue.start_executor()  # after the admin's read-hash-write transaction
            _log_mode(settings, auth_settings)
            yield

    app = FastAPI(
        redirect_slashes=False,  # a redirect would build its Location from the Host header
        title="zndraw-joblib",
        summary="A job queue with SQL persistence: workers register jobs, users submit tasks.",
        version="0.2.0",
        lifespan=lifespan,
    )
    app.state.auth_settings = auth_settings
    # The queue's routes first: they are the ones matched most.
    # Also the fast lane (unless settings.fast_lane is off); every error of this app is ours.
    queue.include_in(app, exception_handlers=True)
    include_account_routes(app, settings)
    if metrics is not None:
        metrics.include_in(app, token=settings.metrics_token)
        app.state.joblib_metrics = metrics
    if dashboard is not None:
        dashboard.include_in(app, prefix="/joblib", login_url="/auth/jwt/login")
    tracer = tracer_if_installed()
    if tracer is not None:
        app.add_middleware(Tracing, tracer=tracer)
    app.add_middleware(
        RateLimit,
        rates={
            "/auth/jwt/login": settings.login_rate_limit,
            "/auth/register": settings.register_rate_limit,
        },
        storage_uri=settings.rate_limit_storage_uri,
    )
    app.add_middleware(UnexpectedErrors)  # outside the lane: its errors are answered here too
    # Outermost: every body of the app (registration and login too) has a size limit.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.log_format == "json":
        app.add_middleware(RequestIds)  # outermost: every request has its id and log line

    @app.get(
        "/health",
        tags=["health"],
        responses={
            503: {
                "description": "Problem: the database is unreachable, or its "
                "SQLite file was deleted, replaced or made read-only."
            }
        },
    )
    async def health() -> Any:
        """Liveness, database reachability, and how many statements the server has sent.

        Answers 503 ``service-unavailable`` when the database cannot be reached, or when the
        SQLite file was deleted, replaced or made read-only while the server runs (writes
        are refused then too).
        """
        db = get_database(session_maker, settings)
        trouble = db.file_watch.problem() if db.file_watch is not None else None
        if trouble is not None:
            problem = ServiceUnavailable(trouble).to_problem()
            problem.instance = "/health"
            return problem_response(problem, {"Retry-After": "5"})
        async with session_maker() as session:
            await session.execute(text("SELECT 1"))
        return {
            "status": "ok",
            "database": engine.dialect.name,
            "statements": db.statements,
            "statements_shared": db.statements_shared,
        }

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """Liveness only (no database): the trivial endpoint benchmarks compare against."""
        return {"status": "ok"}

    return app


def _log_mode(settings: JobLibSettings, auth_settings: AuthSettings) -> None:
    logger.info("zndraw-joblib serving database %s", _redact(settings.database_url))
    if auth_settings.is_dev_mode:
        logger.warning(
            "DEVELOPMENT MODE: no default admin is configured, so every registered user "
            "becomes a superuser. Set ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL and "
            "ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD to turn it off."
        )
    if settings.allow_registration:
        logger.info(
            "registration is open: anybody who reaches the server may create an account "
            "(ZNDRAW_JOBLIB_ALLOW_REGISTRATION=false closes it)"
        )


def _redact(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _creds = head.partition("://")
    return f"{scheme}://***@{tail}"
