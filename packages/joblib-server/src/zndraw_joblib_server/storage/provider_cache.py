"""Where provider answers and reads in flight are kept: a small protocol, two backends.

:class:`DatabaseProviderCache` (the default) keeps both in the queue's database, so every
server process sees them; :class:`MemoryProviderCache` keeps them in this process (one
server process only). A host may plug in its own (Redis, say) by implementing
:class:`ProviderCache` and passing it to ``JobQueue(provider_cache=...)``. Wake-ups are not
the backend's business: the services announce them through the database's notifier (which
PostgreSQL ``LISTEN``/``NOTIFY`` carries to the other processes).
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from zndraw_joblib_server.models import ProviderRead, ProviderResult, utcnow
from zndraw_joblib_server.storage.database import Database

__all__ = [
    "Begun",
    "CachedResult",
    "DatabaseProviderCache",
    "MemoryProviderCache",
    "PendingRead",
    "ProviderCache",
    "internal_cache_of",
    "provider_cache_of",
    "reads_key",
    "use_provider_cache",
]


def reads_key(worker_id: uuid.UUID) -> str:
    """Wake-up key of a worker's claim long-poll when a read for it arrives."""
    return f"provider-reads:{worker_id}"


Begun = Literal["dispatch", "waiting", "full"]
"""What :meth:`ProviderCache.begin` did: marked a new read (dispatch it), found the read
already in flight, or refused it (the provider has too many reads in flight)."""


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A provider's answer to one read: HTTP status, media type, body."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class PendingRead:
    """A read in flight, as handed to the provider's worker."""

    provider_id: uuid.UUID
    provider_name: str
    request_hash: str
    params: dict[str, str] = field(default_factory=dict)


class ProviderCache(Protocol):
    """Result cache and in-flight marks of provider reads (implement it to plug a backend)."""

    async def get(self, provider_id: uuid.UUID, request_hash: str) -> CachedResult | None:
        """The cached answer of a read, if any and not expired."""

    async def put(
        self, provider_id: uuid.UUID, request_hash: str, result: CachedResult, ttl: float
    ) -> None:
        """Cache an answer for ``ttl`` seconds and clear the read's in-flight mark."""

    async def begin(
        self, read: PendingRead, worker_id: uuid.UUID, ttl: float, limit: int
    ) -> Begun:
        """Mark a read in flight for ``ttl`` seconds unless it already is (see :data:`Begun`).

        An expired mark counts as absent (the read is dispatched again), and so does one
        for another worker (the provider was registered again); a provider with ``limit``
        live marks refuses new ones.
        """

    async def take(self, worker_id: uuid.UUID) -> list[PendingRead]:
        """The reads of the worker's providers not yet handed out; each is handed out once."""

    async def forget(self, provider_ids: list[uuid.UUID]) -> None:
        """Drop everything kept for these providers (they are gone)."""

    async def sweep(self, max_entries: int) -> int:
        """Drop expired answers and marks, and the oldest answers beyond ``max_entries``."""


class DatabaseProviderCache:
    """The default backend: tables ``joblib_provider_result`` and ``joblib_provider_read``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, provider_id: uuid.UUID, request_hash: str) -> CachedResult | None:
        """The cached answer of a read, if any and not expired."""
        table = ProviderResult.__table__
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(table.c.status, table.c.content_type, table.c.body).where(
                        table.c.provider_id == provider_id,
                        table.c.request_hash == request_hash,
                        table.c.expires_at > utcnow(),
                    )
                )
            ).first()
        return None if row is None else CachedResult(row[0], row[1], bytes(row[2]))

    async def put(
        self, provider_id: uuid.UUID, request_hash: str, result: CachedResult, ttl: float
    ) -> None:
        """Cache an answer and clear the read's in-flight mark (one transaction)."""
        now = utcnow()
        async with self.db.write() as uow:
            for model in (ProviderResult, ProviderRead):
                await uow.session.execute(
                    delete(model).where(
                        model.provider_id == provider_id, model.request_hash == request_hash
                    )
                )
            uow.session.add(
                ProviderResult(
                    provider_id=provider_id,
                    request_hash=request_hash,
                    status=result.status,
                    content_type=result.content_type,
                    body=result.body,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )

    async def begin(
        self, read: PendingRead, worker_id: uuid.UUID, ttl: float, limit: int
    ) -> Begun:
        """Mark a read in flight unless it already is (see :meth:`ProviderCache.begin`)."""
        now = utcnow()
        try:
            async with self.db.write() as uow:
                session = uow.session
                found = await session.get(
                    ProviderRead, (read.provider_id, read.request_hash), with_for_update=True
                )
                if found is None or found.expires_at <= now:  # new, or expired: (re)dispatch
                    live = (
                        await session.execute(
                            select(func.count())
                            .select_from(ProviderRead)
                            .where(
                                ProviderRead.provider_id == read.provider_id,
                                ProviderRead.expires_at > now,
                            )
                        )
                    ).scalar_one()
                    if live >= limit:
                        return "full"
                    if found is None:
                        found = ProviderRead(**asdict(read))
                        session.add(found)
                    found.created_at, found.expires_at = now, now + timedelta(seconds=ttl)
                elif found.worker_id == worker_id:
                    return "waiting"
                # Handed out (again), or to the worker the provider moved to (registered
                # again).
                found.worker_id, found.dispatched_at = worker_id, None
                await session.flush()
                return "dispatch"
        except IntegrityError:  # marked concurrently by another process
            return "waiting"

    async def take(self, worker_id: uuid.UUID) -> list[PendingRead]:
        """The worker's reads not yet handed out, marked handed out."""
        table = ProviderRead.__table__
        now = utcnow()
        async with self.db.write() as uow:
            rows = (
                await uow.session.execute(
                    update(table)
                    .where(
                        table.c.worker_id == worker_id,
                        table.c.dispatched_at.is_(None),
                        table.c.expires_at > now,
                    )
                    .values(dispatched_at=now)
                    .returning(
                        table.c.provider_id,
                        table.c.provider_name,
                        table.c.request_hash,
                        table.c.params,
                    )
                )
            ).all()
        return [PendingRead(r[0], r[1], r[2], dict(r[3] or {})) for r in rows]

    async def forget(self, provider_ids: list[uuid.UUID]) -> None:
        """Drop the providers' answers and marks."""
        if not provider_ids:
            return
        async with self.db.write() as uow:
            for model in (ProviderResult, ProviderRead):
                await uow.session.execute(delete(model).where(model.provider_id.in_(provider_ids)))

    async def sweep(self, max_entries: int) -> int:
        """Drop expired answers and marks, and the oldest answers beyond ``max_entries``."""
        now = utcnow()
        async with self.db.write() as uow:
            session = uow.session
            dropped = 0
            for model in (ProviderResult, ProviderRead):
                gone = await session.execute(delete(model).where(model.expires_at <= now))
                dropped += int(getattr(gone, "rowcount", 0) or 0)
            kept = (
                await session.execute(select(func.count()).select_from(ProviderResult))
            ).scalar_one()
            if kept > max_entries:
                key = tuple_(ProviderResult.provider_id, ProviderResult.request_hash)
                oldest = (
                    select(ProviderResult.provider_id, ProviderResult.request_hash)
                    .order_by(ProviderResult.created_at)
                    .limit(kept - max_entries)
                )
                gone = await session.execute(delete(ProviderResult).where(key.in_(oldest)))
                dropped += int(getattr(gone, "rowcount", 0) or 0)
        return dropped


@dataclass
class _Mark:
    read: PendingRead
    worker_id: uuid.UUID
    expires: datetime
    dispatched: bool = False


@dataclass
class _Entry:
    result: CachedResult
    created: datetime
    expires: datetime


class MemoryProviderCache:
    """A backend in this process's memory: for a single server process (tests, desktops)."""

    def __init__(self) -> None:
        self._results: dict[tuple[uuid.UUID, str], _Entry] = {}
        self._marks: dict[tuple[uuid.UUID, str], _Mark] = {}
        self.running: dict[tuple[uuid.UUID, str], asyncio.Future[CachedResult]] = {}
        """Reads of ``@internal`` providers running now, each joined by its later readers."""

    async def get(self, provider_id: uuid.UUID, request_hash: str) -> CachedResult | None:
        """The cached answer of a read, if any and not expired."""
        entry = self._results.get((provider_id, request_hash))
        if entry is None or entry.expires <= utcnow():
            return None
        return entry.result

    async def put(
        self, provider_id: uuid.UUID, request_hash: str, result: CachedResult, ttl: float
    ) -> None:
        """Cache an answer and clear the read's in-flight mark."""
        now = utcnow()
        key = (provider_id, request_hash)
        self._results[key] = _Entry(result, now, now + timedelta(seconds=ttl))
        self._marks.pop(key, None)

    async def begin(
        self, read: PendingRead, worker_id: uuid.UUID, ttl: float, limit: int
    ) -> Begun:
        """Mark a read in flight unless it already is (see :meth:`ProviderCache.begin`)."""
        now = utcnow()
        key = (read.provider_id, read.request_hash)
        found = self._marks.get(key)
        if found is not None and found.expires > now:
            if found.worker_id == worker_id:
                return "waiting"
            found.worker_id, found.dispatched = worker_id, False  # moved to another worker
            return "dispatch"
        live = sum(
            1 for m in self._marks.values() if m.read.provider_id == key[0] and m.expires > now
        )
        if live >= limit:
            return "full"
        self._marks[key] = _Mark(read, worker_id, now + timedelta(seconds=ttl))
        return "dispatch"

    async def take(self, worker_id: uuid.UUID) -> list[PendingRead]:
        """The worker's reads not yet handed out, marked handed out."""
        now = utcnow()
        found = []
        for mark in self._marks.values():
            if mark.worker_id == worker_id and not mark.dispatched and mark.expires > now:
                mark.dispatched = True
                found.append(mark.read)
        return found

    async def forget(self, provider_ids: list[uuid.UUID]) -> None:
        """Drop the providers' answers and marks."""
        gone = set(provider_ids)
        for store in (self._results, self._marks):
            for key in [k for k in store if k[0] in gone]:
                del store[key]

    async def sweep(self, max_entries: int) -> int:
        """Drop expired answers and marks, and the oldest answers beyond ``max_entries``."""
        now = utcnow()
        before = len(self._results) + len(self._marks)
        self._results = {k: e for k, e in self._results.items() if e.expires > now}
        self._marks = {k: m for k, m in self._marks.items() if m.expires > now}
        if len(self._results) > max_entries:
            newest = sorted(self._results.items(), key=lambda item: item[1].created)
            self._results = dict(newest[len(newest) - max_entries :])
        return before - len(self._results) - len(self._marks)


_caches: weakref.WeakKeyDictionary[Database, ProviderCache] = weakref.WeakKeyDictionary()


_internal: weakref.WeakKeyDictionary[Database, MemoryProviderCache] = weakref.WeakKeyDictionary()


def internal_cache_of(db: Database) -> MemoryProviderCache:
    """The answers of ``@internal`` providers: they run in this process, so are kept here."""
    return _internal.setdefault(db, MemoryProviderCache())


def use_provider_cache(db: Database, cache: ProviderCache) -> None:
    """Make ``cache`` the provider cache of ``db`` (a host's own backend)."""
    _caches[db] = cache


def provider_cache_of(db: Database) -> ProviderCache:
    """The provider cache of ``db``: the one set, else the one the settings name."""
    found = _caches.get(db)
    if found is None:
        memory = db.settings.provider_cache == "memory"
        found = _caches[db] = MemoryProviderCache() if memory else DatabaseProviderCache(db)
    return found
