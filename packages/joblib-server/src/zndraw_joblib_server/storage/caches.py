"""Per-database caches and hints: state of one queue, never of the process.

Each :class:`~zndraw_joblib_server.storage.database.Database` (one per session maker, so
one per app) owns a :class:`QueueCaches`; two apps in one process, even on the same kind of
database, never see each other's hints or names. The sessions the database opens carry it,
so a service that holds only a session still finds its queue's caches.
"""

from __future__ import annotations

import uuid
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["Bounded", "QueueCaches", "caches_of"]

_K = TypeVar("_K")
_V = TypeVar("_V")

_KEY = "zndraw_joblib_caches"


class Bounded(dict[_K, _V], Generic[_K, _V]):
    """A dict that forgets everything when a new key would take it past ``limit``.

    For guesses and caches whose loss costs only a query: no eviction bookkeeping.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: _K, value: _V) -> None:
        """Store ``value`` under ``key``, first clearing a full cache."""
        if key not in self and len(self) >= self.limit:
            self.clear()
        self[key] = value


class QueueCaches:
    """What one queue remembers between requests.

    Attributes:
        claim_hints: Per worker, from its last claim outside a transaction: whether it
            served one job, and whether that claim found tasks (see
            ``services.claim.claim_tasks``).
        job_names: Full names of jobs by id (a job's name never changes).
    """

    def __init__(self) -> None:
        self.claim_hints: Bounded[uuid.UUID, tuple[bool, bool]] = Bounded(10_000)
        self.job_names: Bounded[uuid.UUID, str] = Bounded(100_000)

    def attach(self, session: AsyncSession) -> None:
        """Let services holding only ``session`` find these caches."""
        session.info[_KEY] = self


def caches_of(session: AsyncSession) -> QueueCaches:
    """The caches of the queue that opened ``session`` (fresh ones for a foreign session)."""
    found = session.info.get(_KEY)
    if found is None:
        found = QueueCaches()
        session.info[_KEY] = found
    return found
