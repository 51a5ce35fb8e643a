"""Per-database caches and hints: state of one queue, never of the process.

Each :class:`~zndraw_joblib_server.storage.database.Database` (one per session maker, so
one per app) owns a :class:`QueueCaches`; two apps in one process, even on the same kind of
database, never see each other's hints or names. The sessions the database opens carry it,
so a service that holds only a session still finds its queue's caches.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["Bounded", "QueueCaches", "SizedCache", "caches_of"]

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


class SizedCache:
    """Least recently used values by text key, within a budget of estimated bytes.

    Thread-safe: values may be put from worker threads (compilation off the event loop).
    """

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self.bytes = 0
        """Estimated bytes held now."""
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            found = self.entries.get(key)
            if found is None:
                return None
            self.entries.move_to_end(key)
            return found[1]

    def put(self, key: str, value: Any, cost: int, budget: int) -> None:
        """Keep ``value`` (estimated ``cost`` bytes) within ``budget``.

        The least recently used values go first; a value costing more than the budget is
        not kept.
        """
        with self._lock:
            if key in self.entries or cost > budget:
                return
            self.entries[key] = (cost, value)
            self.bytes += cost
            while self.bytes > budget:
                _key, (old, _value) = self.entries.popitem(last=False)
                self.bytes -= old

    def pop(self, key: str) -> None:
        """Forget the value under ``key``, if any."""
        with self._lock:
            found = self.entries.pop(key, None)
            if found is not None:
                self.bytes -= found[0]


class QueueCaches:
    """What one queue remembers between requests.

    Attributes:
        claim_hints: Per worker, from its last claim where the store claims in one
            statement: whether it served one job, and whether that claim found tasks (see
            ``services.claim.claim_tasks``).
        beats: Per worker, when (monotonic seconds) a claim last wrote its heartbeat, where
            the store's one-statement claim leaves the beat until due (SQLite).
        job_names: Full names of jobs by id (a job's name never changes).
        jobs: Active jobs by full name as last looked up, within a budget (submits use
            them on condition that the job is unchanged, see ``services.jobs.resolve_job``).
        schemas: Compiled job schemas by their JSON text (``services.validation``), within
            ``schema_cache_bytes``.
        unrenderable: Stored fields found unrenderable and logged (``(task id, field)``),
            so each is logged once.
    """

    def __init__(self) -> None:
        self.claim_hints: Bounded[uuid.UUID, tuple[bool, bool]] = Bounded(10_000)
        self.beats: Bounded[uuid.UUID, float] = Bounded(10_000)
        self.job_names: Bounded[uuid.UUID, str] = Bounded(100_000)
        self.jobs = SizedCache()
        self.schemas = SizedCache()
        self.unrenderable: Bounded[tuple[uuid.UUID, str], bool] = Bounded(100_000)

    def attach(self, session: AsyncSession) -> None:
        """Let services holding only ``session`` find these caches."""
        session.info[_KEY] = self


def caches_of(session: AsyncSession) -> QueueCaches:
    """The caches of the queue that opened ``session`` (fresh ones for a foreign session)."""
    found = session.info.get(_KEY)
    if found is None:
        found = session.info[_KEY] = QueueCaches()
    return found
