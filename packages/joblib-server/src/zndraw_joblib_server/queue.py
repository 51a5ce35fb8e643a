"""One object that starts, stops and mounts the job queue inside a host's FastAPI app.

A host builds a :class:`JobQueue`, mounts it with :meth:`JobQueue.include_in` and runs
:meth:`JobQueue.lifespan` (or :meth:`JobQueue.start` / :meth:`JobQueue.stop`) in its own
lifespan; that sets up or checks the tables (see :mod:`zndraw_joblib_server.migrations`),
starts the cross-process wake-ups (PostgreSQL ``LISTEN``), the kept connections and the
sweeper, and stops them again, so no part can be forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from zndraw_joblib_core import API_PREFIX, ProblemError
from zndraw_joblib_server.errors import install_exception_handlers, problem_exception_handler
from zndraw_joblib_server.internal import InProcessExecutor, InternalExecutor, spec_of
from zndraw_joblib_server.internal.identity import ensure_service_user
from zndraw_joblib_server.internal.runtime import InternalRuntime
from zndraw_joblib_server.lane import FastLane, LaneRoute, lane_routes
from zndraw_joblib_server.migrations import ensure_schema
from zndraw_joblib_server.routes import HOT_ENDPOINTS, QUEUE_ROUTERS, router
from zndraw_joblib_server.services.internal import ensure_internal_jobs
from zndraw_joblib_server.services.internal_providers import InternalProvider, InternalProviders
from zndraw_joblib_server.sessions import SessionSource, engine_of, queue_session_maker
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import EventSink, create_engine, get_database
from zndraw_joblib_server.storage.database import Database
from zndraw_joblib_server.storage.provider_cache import ProviderCache, use_provider_cache
from zndraw_joblib_server.sweeper import SweepReport, run_sweeper

__all__ = ["DEFAULT_EXECUTOR", "JobQueue", "queue_lane_routes"]

DEFAULT_EXECUTOR: Any = object()
"""``JobQueue(internal_executor=...)``'s default: an in-process executor sized by
``settings.internal_executor_threads`` (none when that is 0)."""


def queue_lane_routes() -> list[LaneRoute]:
    """The queue's routes in :data:`~zndraw_joblib_server.router`'s order, hot ones compiled."""
    routes = [route for sub in QUEUE_ROUTERS for route in sub.routes]
    return lane_routes(routes, API_PREFIX, HOT_ENDPOINTS)  # type: ignore[arg-type]


class JobQueue:
    """The job queue of one app: its database, settings, routes and background tasks.

    Example::

        queue = JobQueue(JobLibSettings(database_url="sqlite+aiosqlite:///./app.db"))
        app = FastAPI(lifespan=queue.lifespan)
        queue.include_in(app)

    Args:
        settings: Queue settings (default: from ``ZNDRAW_JOBLIB_*`` variables).
        engine: An engine of the host's. Default: one built from ``settings.database_url``
            with :func:`~zndraw_joblib_server.create_engine`; the queue then disposes of it
            when it stops. A given engine is left to its owner.
        session_maker: The host's session maker (default: one bound to ``engine``): an
            ``async_sessionmaker``, or any callable returning sessions (or an async context
            manager yielding one, e.g. a maker wrapped in a lock; then pass ``engine``
            too). From a maker that is not an ``async_sessionmaker`` the queue takes only
            the engine and makes its own sessions on it; the host's maker stays
            ``app.state.session_maker``, for zndraw-auth and the host.
        sweeper: Run the sweeper while started (turn off only where another process of the
            same database runs it).
        event_sink: Where task and job events go after commit (stored as
            ``app.state.joblib_event_sink`` by :meth:`include_in`).
        internal_providers: Server-side providers served in this process, in the
            ``@internal`` room (see :class:`~zndraw_joblib_server.InternalProvider`).
        provider_cache: Where provider answers and reads in flight are kept (default: as
            ``settings.provider_cache`` says; see
            :class:`~zndraw_joblib_server.storage.provider_cache.ProviderCache`).
        migrate: Upgrade the queue's tables at start when their schema is behind this
            version's (default: ``settings.migrate``). Off, :meth:`start` raises
            :class:`~zndraw_joblib_server.migrations.SchemaNotCurrent` on such a
            database. A database without the queue's tables is always set up.
        internal: The host's server-side extension classes (pydantic models with a
            ``category`` and a ``run``, e.g. ``zndraw_joblib_client.Extension``
            subclasses); each becomes the job ``@internal:{category}:{ClassName}``, written
            idempotently at :meth:`start` under a lock (see docs/hosting.md).
        internal_executor: What runs them: by default an
            :class:`~zndraw_joblib_server.internal.InProcessExecutor` with
            ``settings.internal_executor_threads`` slots; None runs nothing here (separate
            ``zndraw-joblib worker --internal`` processes serve them), or any
            :class:`~zndraw_joblib_server.internal.InternalExecutor`.
        start_executor: Start the executor at the end of :meth:`start`. Off, the host calls
            :meth:`start_executor` itself once its own start-up writes are done (on SQLite a
            start-up transaction that reads, awaits and then writes fails if the executor
            wrote in between).
    """

    def __init__(
        self,
        settings: JobLibSettings | None = None,
        *,
        engine: AsyncEngine | None = None,
        session_maker: SessionSource | None = None,
        sweeper: bool = True,
        event_sink: EventSink | None = None,
        migrate: bool | None = None,
        internal: Sequence[type[Any]] = (),
        internal_executor: InternalExecutor | None = DEFAULT_EXECUTOR,
        start_executor: bool = True,
        internal_providers: Iterable[InternalProvider] = (),
        provider_cache: ProviderCache | None = None,
    ) -> None:
        self.settings = settings or JobLibSettings()
        self.internal: dict[str, type[Any]] = {spec_of(cls).full_name: cls for cls in internal}
        """The host's internal extension classes, by full job name."""
        if internal_executor is DEFAULT_EXECUTOR:
            threads = self.settings.internal_executor_threads
            internal_executor = InProcessExecutor(threads) if threads > 0 else None
        self.internal_executor = internal_executor
        self._autostart = start_executor
        self._executing = False
        self._app: FastAPI | None = None
        self._migrate = self.settings.migrate if migrate is None else migrate
        self.host_session_maker = session_maker
        if engine is None and session_maker is not None:
            engine = engine_of(session_maker)
            if engine is None:
                raise TypeError(
                    "JobQueue cannot tell which engine the session maker uses: pass "
                    "engine= too (an async_sessionmaker bound to an engine needs nothing more)"
                )
        self._owns_engine = engine is None
        if engine is None:
            engine = create_engine(
                self.settings.database_url,
                busy_timeout_ms=self.settings.sqlite_busy_timeout_ms,
                sqlite_inline=self.settings.sqlite_inline,
                ping_idle_seconds=self.settings.db_ping_idle_seconds,
                sqlite_synchronous=self.settings.sqlite_synchronous,
            )
        self.engine: AsyncEngine = engine
        self.session_maker: async_sessionmaker[AsyncSession] = (
            queue_session_maker(session_maker, engine)
            if session_maker is not None
            else async_sessionmaker(engine, expire_on_commit=False)
        )
        self.event_sink = event_sink
        self.sweep_observers: list[Callable[[SweepReport], None]] = []
        """Called with each sweeper pass's report (e.g. by :class:`~.metrics.QueueMetrics`)."""
        self.internal_providers = InternalProviders(internal_providers)
        """The ``@internal`` providers (add more with ``.add(...)`` before requests come)."""
        if provider_cache is not None:
            use_provider_cache(self.database, provider_cache)
        self._run_sweeper = sweeper
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False

    @property
    def router(self) -> Any:
        """The ``/v1/joblib`` router (the same for every queue; state comes from the app)."""
        return router

    @property
    def database(self) -> Database:
        """The process's storage handle for this queue's session maker."""
        return get_database(self.session_maker, self.settings)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` has not yet."""
        return self._started

    def include_in(
        self,
        app: FastAPI,
        *,
        fast_lane: bool | None = None,
        exception_handlers: bool = False,
    ) -> None:
        """Mount the queue on ``app``: routes, the fast lane and the state they read.

        The queue's routes answer their own errors as problem+json; the app's exception
        handlers are left alone, apart from one for
        :class:`~zndraw_joblib_core.ProblemError` added when the app has none.

        Sets ``app.state.session_maker`` (where zndraw-auth also looks), ``engine``,
        ``joblib_settings``, ``joblib_queue``, ``joblib_internal_providers`` and, if given,
        ``joblib_event_sink``. Call it before the app starts and before adding your own
        middleware you want outermost.

        Args:
            app: The host's app.
            fast_lane: Serve the hot endpoints through the fast lane (default:
                ``settings.fast_lane``). Valid because the router is included here without
                a prefix or router-level dependencies.
            exception_handlers: Also install the app-wide problem+json handlers
                (:func:`~zndraw_joblib_server.install_exception_handlers`), replacing the
                app's own 422, HTTP-error and 500 handlers; for apps that belong to the
                queue, such as the reference app.
        """
        app.state.engine = self.engine
        app.state.session_maker = self.host_session_maker or self.session_maker
        app.state.joblib_settings = self.settings
        app.state.joblib_queue = self
        self._app = app
        app.state.joblib_internal_providers = self.internal_providers
        if self.event_sink is not None:
            app.state.joblib_event_sink = self.event_sink
        app.include_router(router)
        if exception_handlers:
            install_exception_handlers(app)
        elif ProblemError not in app.exception_handlers:
            app.add_exception_handler(ProblemError, problem_exception_handler)
        if self.settings.fast_lane if fast_lane is None else fast_lane:
            app.add_middleware(FastLane, routes=queue_lane_routes())

    async def start(self) -> None:
        """Check (or set up, or migrate) the schema, start wake-ups and the sweeper. Idempotent.

        Raises:
            SchemaNotCurrent: The database's schema is behind this version's and migrating
                is off, or a newer version migrated it.
        """
        if self._started:
            return
        await ensure_schema(self.engine, migrate=self._migrate)
        await self.database.start()
        if self.internal:
            async with self.database.write(self.event_sink) as uow:
                await ensure_internal_jobs(uow, [spec_of(cls) for cls in self.internal.values()])
            if self._autostart:
                await self.start_executor()
        if self._run_sweeper:
            self._sweeper = asyncio.create_task(
                run_sweeper(
                    self.session_maker, self.settings, self.event_sink, self.sweep_observers
                ),
                name="zndraw-joblib-sweeper",
            )
        self._started = True

    async def stop(self) -> None:
        """Stop the sweeper and the wake-ups, give back kept connections, dispose an own engine.

        Idempotent; safe after a failed :meth:`start`.
        """
        if self._executing and self.internal_executor is not None:
            self._executing = False
            await self.internal_executor.stop()
        sweep, self._sweeper = self._sweeper, None
        if sweep is not None:
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep
        await self.database.stop()
        if self._owns_engine:
            await self.engine.dispose()
        self._started = False

    async def start_executor(self) -> None:
        """Start the internal executor (done by :meth:`start` unless ``start_executor=False``).

        Idempotent; does nothing without internal jobs or executor.
        """
        if self._executing or self.internal_executor is None or not self.internal:
            return
        user_id = await ensure_service_user(self.database)
        runtime = InternalRuntime(
            self.database, self.event_sink, self.settings, self.internal, user_id, self._auth
        )
        await self.internal_executor.start(runtime)
        self._executing = True

    def _auth(self) -> Any:
        """zndraw-auth's settings of the app the queue is mounted on (signs task tokens)."""
        return getattr(self._app.state, "auth_settings", None) if self._app else None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI | None = None) -> AsyncIterator[None]:
        """Start the queue, yield, stop it.

        Usable as ``FastAPI(lifespan=queue.lifespan)`` or as ``async with queue.lifespan():``
        inside a host's own lifespan.

        Args:
            app: The app FastAPI passes to a lifespan (unused).

        Yields:
            None, while the queue runs.
        """
        try:
            await self.start()
            yield
        finally:
            await self.stop()
