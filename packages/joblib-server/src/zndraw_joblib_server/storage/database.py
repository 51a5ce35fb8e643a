"""The database handle every request, long-poll and sweeper pass goes through.

``Database.write()`` opens a transaction inside the process-wide write gate (on for SQLite,
so concurrent requests never see "database is locked"), collects wake-up keys and events
while the work runs, commits, and only then wakes long-polls and hands events to the sink.
``Database.read()`` opens a plain session without the gate (SQLite WAL lets readers run
beside the writer).

On SQLite files, a :class:`FileWatch` notices when the file under a running server is
deleted, replaced or made read-only. An open SQLite connection keeps writing into its file
even after the file was unlinked (or made read-only, or replaced by another file): commits
succeed into an inode nobody will ever open again. The watch compares the path with the
file the server opened (one ``stat`` call, about a microsecond) so ``/health`` reports it
and writes refuse with 503 instead of acknowledging work that is already lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, exc, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from zndraw_joblib_core import Event, ServiceUnavailable
from zndraw_joblib_server.sessions import queue_session_maker
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage.caches import QueueCaches
from zndraw_joblib_server.storage.direct import DirectStatements
from zndraw_joblib_server.storage.kept import KeptConnections
from zndraw_joblib_server.storage.notifier import Notifier, PostgresPubSub, Subscription
from zndraw_joblib_server.storage.shared_pg import SharedRuns
from zndraw_joblib_server.storage.sqlite_inline import sync_connection_of
from zndraw_joblib_server.storage.store import STORES, Store
from zndraw_joblib_server.storage.upkeep import ClaimUpkeep

__all__ = [
    "DIRECT_PG",
    "Database",
    "EventSink",
    "UnitOfWork",
    "get_database",
    "release_waiters",
    "session_connection",
]

logger = logging.getLogger("zndraw_joblib_server")

EventSink = Callable[[Sequence[Event]], Awaitable[None]]
"""Receives the events of a committed change (see ``dependencies.get_event_sink``)."""


_CONNECTION = "zndraw_joblib.connection"
_INLINE = "zndraw_joblib.inline"
DIRECT_PG = "zndraw_joblib.direct_pg"
"""Session info key: the session's connection is outside a transaction (PostgreSQL), so
prebuilt statements may run straight on asyncpg (see ``storage.direct_pg``)."""


async def session_connection(session: AsyncSession) -> tuple[Any, Any]:
    """The session's connection as ``(async connection, inline sync connection or None)``.

    Fetched once per session. When the connection's driver is inline SQLite, the second
    item is the synchronous connection, on which statements run straight from the event
    loop (see :func:`~zndraw_joblib_server.storage.sqlite_inline.sync_connection_of`); a
    write transaction that knows its engine is inline checks a pooled connection out
    without the greenlet bridge too (the first item is then None).
    """
    found = session.info.get(_CONNECTION)
    if found is None:
        sync = None
        if session.info.get(_INLINE):
            # The pool may have to wait for a connection to be returned, which awaits; then
            # nothing was checked out: go through the bridge.
            with contextlib.suppress(exc.MissingGreenlet):
                sync = session.sync_session.connection()
        if sync is not None:
            found = (None, sync)
        else:
            conn = await session.connection()
            found = (conn, sync_connection_of(conn))
        session.info[_CONNECTION] = found
    return found


def sqlite_file_of(url: str) -> str | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class FileWatch:
    """The SQLite database file, as opened, and checks that it is still that file.

    Args:
        path: The database file (it need not exist yet: the first check that finds it
            remembers it).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None

    def problem(self) -> str | None:
        """Why the file cannot take writes now, or None when it can."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            if self._identity is None:
                return None  # not created yet
            return f"The database file {self.path} was deleted while the server was running."
        except OSError as error:
            return f"The database file {self.path} cannot be examined: {error.strerror}."
        identity = (found.st_dev, found.st_ino)
        if self._identity is None:
            self._identity = identity
        elif identity != self._identity:
            return f"The database file {self.path} was replaced while the server was running."
        # No write bit at all counts too: root may write anyway, but the file was meant
        # to be read-only (and a read-only mount fails os.access for root as well).
        if not found.st_mode & 0o222 or not os.access(self.path, os.W_OK):
            return f"The database file {self.path} is read-only."
        return None

    def check(self) -> None:
        """Raise 503 when :meth:`problem` finds one.

        Raises:
            ServiceUnavailable: The file was deleted, replaced or made read-only.
        """
        problem = self.problem()
        if problem is not None:
            raise ServiceUnavailable(problem, headers={"Retry-After": "5"})


@dataclass
class UnitOfWork:
    """A write transaction in progress: its session, and what to announce after commit.

    Attributes:
        session: The transaction's session.
        events: Events to hand to the sink after commit.
        record_events: Whether events are wanted at all.
        wake: Wake-up keys to notify after commit, with how many waiters to wake (None: all).
    """

    session: AsyncSession
    store: Store
    """What this database, written this way, does its own way (see ``storage.store``)."""
    events: list[Event] = field(default_factory=list)
    wake: dict[str, int | None] = field(default_factory=dict)
    record_events: bool = True
    """Whether anybody will receive the events (when not, services skip building them)."""
    parked: Notifier | None = None
    """Where waiting claims may be reserved for a hand-off (None: hand-offs are off, or the
    work runs outside a transaction, where the waiting claims are woken instead)."""
    handoffs: dict[Subscription, list[Any]] = field(default_factory=dict)
    """Reserved waiting claims and what this transaction claimed for each; settled after
    commit (with nothing after a rollback)."""
    claimed: int = 0
    """How many tasks this work claimed (counted for :class:`~.upkeep.ClaimUpkeep`)."""

    def wake_all(self, key: str) -> None:
        """Wake every long-poll waiting on ``key`` after commit."""
        self.wake[key] = None

    def wake_some(self, key: str, count: int = 1) -> None:
        """Wake ``count`` more long-polls waiting on ``key`` after commit."""
        current = self.wake.get(key, 0)
        if current is not None:  # a wake-all stays one
            self.wake[key] = current + count

    def wake_fewer(self, key: str, count: int) -> None:
        """Wake ``count`` fewer long-polls waiting on ``key`` (a wake-all stays one)."""
        current = self.wake.get(key)
        if current is None:
            return
        if current > count:
            self.wake[key] = current - count
        else:
            del self.wake[key]


class Database:
    """Sessions, the write gate and wake-ups for one session maker."""

    def __init__(
        self, session_maker: async_sessionmaker[AsyncSession], settings: JobLibSettings
    ) -> None:
        self.session_maker = session_maker
        self.settings = settings
        # Always an engine: get_database takes the maker from queue_session_maker.
        bind: AsyncEngine = session_maker.kw["bind"]
        self.engine = bind
        self._writer_conn: AsyncConnection | None = None
        self.dialect: str = bind.dialect.name
        self.store: Store = STORES[self.dialect]
        """The database's store (services ask it, never the dialect)."""
        self._standalone = self.store.standalone()
        use_gate = settings.enable_db_lock
        self.gate: asyncio.Lock | None = (
            asyncio.Lock() if use_gate or (use_gate is None and self.dialect == "sqlite") else None
        )
        path = sqlite_file_of(str(bind.url))
        self.file_watch: FileWatch | None = FileWatch(path) if path else None
        """SQLite file databases: whether the file is still the one opened (health, writes)."""
        self.notifier = Notifier()
        self.caches = QueueCaches()
        """Hints and caches of this queue (never shared with another app's database)."""
        self.inline: bool | None = None
        """Whether the engine's connections are inline SQLite (None: not known yet)."""
        self.statements = 0
        """Statements sent to the database through this engine (for health and benchmarks)."""
        event.listen(bind.sync_engine, "before_cursor_execute", self._count)
        self.shared_runs = SharedRuns()
        """Lets concurrent runs of a worker's statement share a round trip (PostgreSQL)."""
        self.direct = DirectStatements(self._count, self.shared_runs)
        """Runs this database's prebuilt statements on the driver (see ``storage.direct``)."""
        self._kept: KeptConnections | None = None
        if self._standalone is not None:  # its listeners are the engine's
            autocommit = bind.execution_options(isolation_level="AUTOCOMMIT")
            self._kept = KeptConnections(autocommit, settings.db_ping_idle_seconds)
        postgres = self.dialect == "postgresql"
        self.upkeep = ClaimUpkeep(bind if postgres else None, settings.vacuum_after_claims)
        self.pubsub = PostgresPubSub(bind, self.notifier) if postgres else None

    def _count(self, *_args: object) -> None:
        self.statements += 1

    @property
    def statements_shared(self) -> int:
        """Statements that went to PostgreSQL in a batch with others (see ``shared_pg``)."""
        return self.shared_runs.shared

    async def start(self) -> None:
        """Start cross-process wake-ups (PostgreSQL LISTEN); on SQLite note the file."""
        if self.file_watch is not None:
            self.file_watch.problem()  # remembers the file as it is now
        if self.pubsub is not None:
            await self.pubsub.start()

    async def stop(self) -> None:
        """Answer waiting long-polls 503, stop wake-ups, give the write connection back."""
        self.notifier.close()
        if self.pubsub is not None:
            await self.pubsub.stop()
        await self.upkeep.stop()
        writer, self._writer_conn = self._writer_conn, None
        if writer is not None:
            await writer.close()
        if self._kept is not None:
            await self._kept.close()

    async def _writer(self) -> AsyncConnection:
        """Inline SQLite: the connection every write transaction runs on, kept checked out.

        Writes take turns through the write gate, so one connection serves them all, and a
        write skips the pool's checkout and return and the session's own transaction
        bookkeeping (it joins this connection's transaction instead). Opened on first use,
        and again after it was invalidated or closed.
        """
        writer = self._writer_conn
        if writer is None or writer.closed or writer.invalidated:
            writer = self._writer_conn = await self.engine.connect()
        return writer

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A short read-only session (no gate)."""
        async with self.session_maker() as session:
            self.caches.attach(session)
            self.direct.attach(session)
            yield session

    @asynccontextmanager
    async def _gate(self) -> AsyncIterator[None]:
        if self.gate is None:
            yield
            return
        await _acquire(self.gate, self.settings.db_lock_timeout_seconds)
        try:
            yield
        finally:
            self.gate.release()

    @asynccontextmanager
    async def write(
        self, sink: EventSink | None = None, *, keep_events: bool = False, standalone: bool = False
    ) -> AsyncIterator[UnitOfWork]:
        """A write transaction: commit on success, roll back on error, then announce.

        Args:
            sink: Receives the collected events after commit (errors are logged, not raised).
            keep_events: Collect events even without a sink (the caller reads
                ``uow.events``).
            standalone: Where the store can (PostgreSQL), run without a transaction: each
                statement commits on its own, which saves the ``BEGIN`` and ``COMMIT`` round
                trips. For work
                whose every statement is safe alone: the services then guard their writes
                (a claim checks its worker in the claim statement, an update only applies to
                the version it read). What such work collected is announced even when it
                fails later, as its writes stand. The unit of work's store is then the
                store's :meth:`~.store.Store.standalone` one. Ignored on other databases.
        """
        kept = self._kept if standalone else None
        async with self._gate():
            if self.file_watch is not None:
                self.file_watch.check()  # a write into a deleted file would be lost
            writer = await self._writer() if self.inline and self.gate is not None else None
            line = writer.sync_connection if writer is not None else None
            own: AsyncConnection | None = None
            if line is not None:
                # Joins the writer's transaction; commits and rollbacks are the writer's.
                session = self.session_maker(bind=writer)
                session.info[_CONNECTION] = (None, line)
            elif kept is not None:
                # A connection of its own, past the session's transaction bookkeeping.
                own, session = await kept.take()
                if session is None:  # a new connection: its session is kept with it
                    session = self.session_maker(bind=own)
                    session.info[_CONNECTION] = (own, None)
                    session.info[DIRECT_PG] = True
            else:
                session = self.session_maker()
            session.info[_INLINE] = self.inline
            self.caches.attach(session)
            self.direct.attach(session)
            store = self._standalone if kept is not None and self._standalone else self.store
            # A hand-off claims inside the submit's transaction: none without one.
            handing = self.settings.claim_handoff and store is self.store
            uow = UnitOfWork(
                session,
                store,
                record_events=sink is not None or keep_events,
                parked=self.notifier if handing else None,
            )
            committed = False
            try:
                if line is not None:
                    if line.in_transaction():  # left open by a write whose rollback failed
                        line.rollback()
                    line.begin()
                yield uow
                await self._end(session, line, commit=True)
                committed = True
            except BaseException:
                await self._end(session, line, commit=False)
                if kept is not None:  # what was written stands: announce it
                    await self._after(uow, sink)
                raise
            finally:
                for sub, tasks in uow.handoffs.items():
                    sub.settle(tasks if committed else [])
                if self.inline or not session.sync_session.in_transaction():
                    session.sync_session.close()  # nothing underneath awaits
                else:
                    await session.close()
                if own is not None and kept is not None:
                    await kept.give_back(own, session)
        await self._after(uow, sink)

    async def _after(self, uow: UnitOfWork, sink: EventSink | None) -> None:
        """Wake long-polls and hand the events to ``sink`` (after the work committed)."""
        self.upkeep.claimed(uow.claimed)
        self.announce(uow.wake)
        if sink is not None and uow.events:
            await deliver(sink, list(dict.fromkeys(uow.events)))  # events are hashable

    async def _end(self, session: AsyncSession, line: Any, *, commit: bool) -> None:
        """Commit (or roll back) a write on what it ran on.

        ``line`` is the kept write connection (the session joined its transaction; what the
        session holds is flushed into it first); otherwise the session's own transaction,
        without greenlets when its connection is inline.
        """
        sync = session.sync_session
        # Whether connections are inline SQLite is learnt from the first one: every
        # connection of an engine comes from the same creator, so once one is known to be
        # inline, write transactions commit (or roll back) and close without greenlets:
        # nothing underneath awaits, and the connection goes back to the pool, not away.
        found = session.info.get(_CONNECTION)
        if found is not None and self.inline is None:
            self.inline = found[1] is not None
        if line is not None:
            if commit and sync.in_transaction():
                sync.flush()
            (line.commit if commit else line.rollback)()
        elif self.inline and found is not None:
            (sync.commit if commit else sync.rollback)()
        # Otherwise nothing to end when the session never ran anything itself (its
        # statements ran directly).
        elif sync.in_transaction():
            await (session.commit() if commit else session.rollback())

    def announce(self, wake: dict[str, int | None]) -> None:
        """Wake long-polls for the given keys: local ones now, other processes' next."""
        for key, limit in wake.items():
            self.notifier.notify(key, limit)
        if self.pubsub is not None and wake:
            self.pubsub.queue(wake)


async def _acquire(lock: asyncio.Lock, seconds: float) -> None:
    """Acquire ``lock`` within ``seconds``, or raise :class:`ServiceUnavailable`.

    ``asyncio.wait_for(lock.acquire(), ...)`` can, on Python 3.11, lose a lock that was
    acquired just as the wait timed out or the request was cancelled, leaving it held for
    ever. Here the acquisition runs as its own task, and whatever it acquired after we gave
    up is released.
    """
    if not lock.locked():
        await lock.acquire()  # free: taken at once, without yielding
        return
    attempt = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait_for(asyncio.shield(attempt), seconds)
    except BaseException as exc:
        attempt.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(attempt)
        if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
            lock.release()
        if isinstance(exc, TimeoutError):
            raise ServiceUnavailable(
                "The database is busy; retry later.", headers={"Retry-After": "1"}
            ) from None
        raise


async def deliver(sink: EventSink, events: Sequence[Event]) -> None:
    """Hand ``events`` to ``sink``; a failing sink is logged and never fails the request."""
    try:
        await sink(events)
    except Exception:
        logger.exception("event sink failed for %d event(s)", len(events))


_databases: weakref.WeakKeyDictionary[async_sessionmaker[AsyncSession], Database] = (
    weakref.WeakKeyDictionary()
)


def get_database(
    session_maker: async_sessionmaker[AsyncSession], settings: JobLibSettings
) -> Database:
    """Return the process's :class:`Database` for ``session_maker`` (created on first use).

    ``session_maker`` may be any session source :func:`~zndraw_joblib_server.sessions.
    queue_session_maker` understands (a wrapped one maps to the queue's own maker).
    """
    session_maker = queue_session_maker(session_maker)
    db = _databases.get(session_maker)
    if db is None:
        db = _databases[session_maker] = Database(session_maker, settings)
    return db


def release_waiters() -> int:
    """Shutting down: answer every waiting long-poll of this process 503 with Retry-After.

    The ``serve`` command calls it as soon as a shutdown signal arrives, so waiting claims
    and task reads end at once instead of running into the graceful-shutdown timeout; a
    host running its own server may call it from its signal handling too.

    Returns:
        How many waiting requests were released.
    """
    return sum(db.notifier.close() for db in list(_databases.values()))
