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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from zndraw_auth import AuthSettings

from zndraw_joblib_server.accounts import include_account_routes
from zndraw_joblib_server.errors import install_exception_handlers
from zndraw_joblib_server.lane import FastLane
from zndraw_joblib_server.ratelimit import RateLimit
from zndraw_joblib_server.routes import router
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.startup import StartupRefused, ensure_admin, resolve_secret
from zndraw_joblib_server.storage import create_engine, get_database
from zndraw_joblib_server.storage.schema import create_tables
from zndraw_joblib_server.sweeper import run_sweeper

__all__ = ["StartupRefused", "create_app"]

logger = logging.getLogger("zndraw_joblib_server")


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

    Raises:
        StartupRefused: The token secret is missing or too short (see
            :func:`~zndraw_joblib_server.startup.resolve_secret`); the lifespan raises it too
            when an account the configuration did not create has the admin's e-mail.
    """
    settings = settings or JobLibSettings()
    auth_settings = resolve_secret(settings, auth_settings or AuthSettings())
    engine = create_engine(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        sqlite_inline=settings.sqlite_inline,
        ping_idle_seconds=settings.db_ping_idle_seconds,
    )
    session_maker = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_tables(engine)
        await ensure_admin(session_maker, auth_settings)
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
    include_account_routes(app, settings)
    install_exception_handlers(app)
    app.add_middleware(
        RateLimit,
        rates={
            "/auth/jwt/login": settings.login_rate_limit,
            "/auth/register": settings.register_rate_limit,
        },
        storage_uri=settings.rate_limit_storage_uri,
    )
    if settings.fast_lane:
        app.add_middleware(FastLane)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, Any]:
        """Liveness, database reachability, and how many statements the server has sent."""
        async with session_maker() as session:
            await session.execute(text("SELECT 1"))
        db = get_database(session_maker, settings)
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
