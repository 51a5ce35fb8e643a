"""The reference host app: zndraw-auth login, the job queue, the sweeper, health checks.

``zndraw-joblib-server serve`` runs it; tests and benchmarks build it with
:func:`create_app`. A host that has its own app wires the same pieces (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from zndraw_auth import (
    AuthSettings,
    UserCreate,
    UserRead,
    UserUpdate,
    auth_backend,
    ensure_default_admin,
    fastapi_users,
)

from zndraw_joblib_core import ServiceUnavailable
from zndraw_joblib_server.body_limit import BodyLimit
from zndraw_joblib_server.errors import (
    UnexpectedErrors,
    install_exception_handlers,
    problem_response,
)
from zndraw_joblib_server.lane import FastLane
from zndraw_joblib_server.routes import router
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import create_engine, get_database
from zndraw_joblib_server.storage.schema import create_tables
from zndraw_joblib_server.sweeper import run_sweeper

__all__ = ["DEV_SECRET", "create_app"]

logger = logging.getLogger("zndraw_joblib_server")

_UPSTREAM_DEFAULT_SECRET = "CHANGE-ME-IN-PRODUCTION-SECRET!"
DEV_SECRET = "zndraw-joblib-development-secret-change-me-in-production"
"""Replaces zndraw-auth's too-short default secret; every process of a deployment must set
its own ``ZNDRAW_AUTH_SECRET_KEY`` instead."""


def create_app(
    settings: JobLibSettings | None = None,
    auth_settings: AuthSettings | None = None,
    *,
    sweeper: bool = True,
) -> FastAPI:
    """Build the reference app.

    Args:
        settings: Queue settings (default: from ``ZNDRAW_JOBLIB_*`` variables).
        auth_settings: zndraw-auth settings (default: from ``ZNDRAW_AUTH_*`` variables).
        sweeper: Run the sweeper in the lifespan.

    Returns:
        A FastAPI app serving ``/auth/*``, ``/users/*``, ``/v1/joblib/*``, ``/health`` and
        the OpenAPI docs at ``/docs``.
    """
    settings = settings or JobLibSettings()
    auth_settings = auth_settings or AuthSettings()
    if auth_settings.secret_key.get_secret_value() == _UPSTREAM_DEFAULT_SECRET:
        auth_settings = auth_settings.model_copy(update={"secret_key": SecretStr(DEV_SECRET)})
    engine = create_engine(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        sqlite_inline=settings.sqlite_inline,
        ping_idle_seconds=settings.db_ping_idle_seconds,
        sqlite_synchronous=settings.sqlite_synchronous,
    )
    session_maker = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_tables(engine)
        async with session_maker() as session:
            await ensure_default_admin(session, auth_settings)
        _log_mode(settings, auth_settings)
        db = get_database(session_maker, settings)
        await db.start()
        sweep = asyncio.create_task(run_sweeper(session_maker, settings)) if sweeper else None
        try:
            yield
        finally:
            if sweep is not None:
                sweep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweep
            await db.stop()
            await engine.dispose()

    app = FastAPI(
        redirect_slashes=False,  # a redirect would build its Location from the Host header
        title="zndraw-joblib",
        summary="A job queue with SQL persistence: workers register jobs, users submit tasks.",
        version="0.2.0",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.session_maker = session_maker
    app.state.auth_settings = auth_settings
    app.state.joblib_settings = settings
    app.include_router(router)  # first: the queue's routes are the ones matched most
    app.include_router(
        fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt", tags=["auth"]
    )
    app.include_router(
        fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth", tags=["auth"]
    )
    app.include_router(
        fastapi_users.get_users_router(UserRead, UserUpdate), prefix="/users", tags=["users"]
    )
    install_exception_handlers(app)
    if settings.fast_lane:
        app.add_middleware(FastLane)
    app.add_middleware(UnexpectedErrors)  # outside the lane: its errors are answered here too
    # Outermost: every body of the app (registration and login too) has a size limit.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

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
        return {"status": "ok", "database": engine.dialect.name, "statements": db.statements}

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
    if auth_settings.secret_key.get_secret_value() == DEV_SECRET:
        logger.warning(
            "Using zndraw-auth's default JWT secret; set ZNDRAW_AUTH_SECRET_KEY (32+ bytes, "
            "the same for every server process) before exposing this server."
        )


def _redact(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _creds = head.partition("://")
    return f"{scheme}://***@{tail}"
