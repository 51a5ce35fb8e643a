"""The :class:`Store` protocol: what one database, written one way, does its own way.

Services never ask which database they run on, nor whether their work runs in a
transaction: they ask the unit of work's store (``uow.store``). A :class:`Database` picks
its store once, by its dialect (see :data:`STORES`); work it runs outside a transaction
(``Database.write(standalone=True)`` on PostgreSQL) gets the store's
:meth:`Store.standalone` variant. The concrete stores live in ``storage.stores``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.storage.task_record import Owners, TaskRecord

Write = Callable[[], AbstractAsyncContextManager[Any]]
"""Opens a write transaction yielding a unit of work (``Database.write``)."""

__all__ = ["STORES", "Store", "Write"]


@runtime_checkable
class Store(Hashable, Protocol):
    """One database's (and one way of writing's) strategies and SQL pieces.

    Hashable: statements built for a store are cached by it.
    """

    def standalone(self) -> Store | None:
        """The store of work whose statements each commit alone (None: always a transaction)."""

    async def claim(
        self,
        session: AsyncSession,
        params: dict[str, Any],
        user_id: Any,
        job_ids: list[uuid.UUID] | None,
        *,
        start: bool,
        worker_timeout: float,
    ) -> list[TaskRecord]:
        """Claim for the worker ``params["b_worker"]`` (see ``stores.claim_sql``).

        ``job_ids``: the jobs it serves; None: the statement finds the worker's only job
        itself and checks that the worker is ``user_id``'s (claiming nothing otherwise).
        Such a claim also beats the worker: in the statement (PostgreSQL), or (SQLite)
        after it when due by ``rules.beat_due`` (``worker_timeout``). Outside a
        transaction the statement beats the worker and claims only if it is
        ``user_id``'s. Keeps the worker's claim hint.
        """

    async def report(
        self,
        session: AsyncSession,
        status: TaskStatus,
        params: Callable[[], dict[str, Any] | None],
    ) -> TaskRecord | None:
        """A worker's usual report to ``status``, as one ``UPDATE``, where this store does so.

        ``params()`` builds the statement's parameters (see ``stores.base``), or None
        for a report the statement is not for. None: nothing was written (not tried, or
        not in order): the general path answers.
        """

    async def report_and_claim(
        self,
        session: AsyncSession,
        status: TaskStatus,
        params: Callable[[], tuple[dict[str, Any], dict[str, Any]] | None],
        *,
        start: bool,
    ) -> tuple[TaskRecord | None, list[TaskRecord]] | None:
        """A worker's usual report and its next claim of its only job, as one statement.

        ``params()`` builds the report's parameters (as for :meth:`report`) and the
        claim's (as for :meth:`claim` without jobs: the worker and its owner are checked,
        the worker beaten), or None. The claim is made only if the report is. None where
        this store does not chain them (or ``params()`` gave none); else the reported
        task (None: nothing written, take the general path) and the claimed tasks (which
        keep the worker's claim hint).
        """

    async def insert_one(
        self,
        session: AsyncSession,
        row: dict[str, Any],
        job_changed_at: datetime | None,
        *,
        keyed: bool,
    ) -> tuple[bool, int | None]:
        """Insert one complete task row in one statement (see ``storage.positions``).

        Only if its job is active and its ``updated_at`` is still ``job_changed_at``;
        ``keyed``: and only if the row's idempotency key is free. Whether the row was
        inserted, and its queue position where this store answers it in the same
        statement (None: the caller reads it, if it needs it).
        """

    async def load_for_update(
        self, session: AsyncSession, ids: Iterable[uuid.UUID], *, light: bool
    ) -> tuple[dict[uuid.UUID, TaskRecord], Owners]:
        """The tasks among ``ids`` to change, and the owners of the workers holding them.

        Row-locked in a transaction; outside one nothing is locked and :meth:`save` guards.
        ``light``: only ``LIGHT_FIELDS`` are read.
        """

    async def save(
        self, session: AsyncSession, tasks: Iterable[TaskRecord], *, skip_stale: bool = False
    ) -> None:
        """Write what changed in ``tasks`` (loaded by :meth:`load_for_update` or claimed).

        Outside a transaction each write applies only to the version read, and the first
        task changed meanwhile raises ``StaleRecord`` (nothing of it written); with
        ``skip_stale`` such a task is left as it is instead.
        """

    def pick_ids(self, column: Any, ids: Any) -> Any:
        """SQL: ``column`` is one of the ids the select ``ids`` (of one column) returns."""

    def kept_count(self, job_id: Any) -> Any:
        """SQL: the kept pending count of the job ``job_id`` (see ``storage.pending``)."""

    def insert(self, table: Any) -> Any:
        """The database's ``INSERT`` into ``table``, with ``on_conflict_do_nothing``."""

    async def touch_worker(
        self, session: AsyncSession, worker_id: uuid.UUID, user_id: Any, now: datetime
    ) -> tuple[bool, list[uuid.UUID]]:
        """Beat the caller's worker (claiming is a sign of life); whether found, its jobs.

        False when the worker does not exist or is not ``user_id``'s. Work
        outside a transaction may leave the beat to the claim statement.
        """

    async def lock_exclusive(self, session: AsyncSession, key: int) -> None:
        """Hold the lock ``key`` until the transaction ends (writers take turns)."""

    async def fold_counts(self, write: Write) -> None:
        """Compact the kept pending counts in a ``write`` (nothing where one row per job)."""


STORES: dict[str, Store] = {}
"""The store of each dialect's databases (``storage`` fills it from ``storage.stores``)."""
