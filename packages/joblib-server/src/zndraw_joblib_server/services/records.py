"""Task rows as plain objects, read and written with Core statements.

The hot paths (submit, claim, update) do not need the ORM's identity map and unit of work,
and on a busy queue those cost more than the SQL. A :class:`TaskRecord` has the attributes of
:class:`~zndraw_joblib_server.models.Task`, so the rules written against tasks (transitions,
requeue, serialisation) apply to both; :func:`save` writes back only what changed, with one
``executemany`` per set of changed columns.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, Update, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskNotFound, TaskStatus
from zndraw_joblib_server.models import Task
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.prebuilt import prebuilt

__all__ = [
    "LIGHT_FIELDS",
    "TASKS",
    "UNLOADED",
    "StaleRecord",
    "TaskRecord",
    "execute",
    "fetch",
    "insert_tasks",
    "load",
    "load_one",
    "save",
    "task_param",
]

TASKS = Task.__table__
"""The tasks table (Core)."""


class _Unloaded:
    """The value of a column a record was read without (see :data:`LIGHT_FIELDS`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unloaded>"

    def __eq__(self, other: object) -> bool:
        return other is self

    def __ne__(self, other: object) -> bool:
        return other is not self

    def __hash__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        raise TypeError("this column was not loaded into the task record")


FIELDS: tuple[str, ...] = tuple(column.key for column in TASKS.columns)
"""The tasks table's columns: a record's attributes."""

UNLOADED: Any = _Unloaded()
"""Stands for a column that was not read; assigning a value marks it changed."""


class TaskRecord:
    """One task row as a mutable object with the attributes of ``Task``.

    It remembers the values it was read (or last saved) with; :meth:`changes` lists what
    has been assigned since.
    """

    __slots__ = ("_saved", *FIELDS)

    id: uuid.UUID
    job_id: uuid.UUID
    room_id: str
    created_by_id: uuid.UUID | None
    worker_id: uuid.UUID | None
    status: TaskStatus
    payload: dict[str, Any]
    result: Any
    error: str | None
    message: str | None
    progress: float | None
    priority: int
    run_after: datetime
    created_at: datetime
    claimed_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    lease_expires_at: datetime | None
    deadline_at: datetime | None
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    lease_seconds: float | None
    cancel_requested: bool
    cancel_requested_at: datetime | None
    idempotency_key: str | None
    version: int

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._load({name: values.get(name, UNLOADED) for name in FIELDS})

    def _load(self, saved: dict[str, Any]) -> None:
        for name, value in saved.items():
            setattr(self, name, value)
        self._saved = saved

    @classmethod
    def from_row(cls, keys: Sequence[str], row: Sequence[Any]) -> TaskRecord:
        """A record from a result row and the result's column keys."""
        record = cls.__new__(cls)
        if len(keys) == len(FIELDS):
            record._load(dict(zip(keys, row, strict=True)))
        else:
            saved = dict.fromkeys(FIELDS, UNLOADED)
            saved.update(zip(keys, row, strict=True))
            record._load(saved)
        return record

    def changes(self) -> dict[str, Any]:
        """The columns assigned a different value since the record was read or saved."""
        saved = self._saved
        return {
            name: value
            for name in FIELDS
            if (value := getattr(self, name)) is not saved[name] and value != saved[name]
        }

    def copy(self) -> TaskRecord:
        """A snapshot of the current values (saved as they are now)."""
        return TaskRecord({name: getattr(self, name) for name in FIELDS})


LIGHT_FIELDS: tuple[str, ...] = (
    "id",
    "job_id",
    "room_id",
    "created_by_id",
    "worker_id",
    "status",
    "error",
    "message",
    "progress",
    "attempt",
    "max_attempts",
    "lease_expires_at",
    "timeout_seconds",
    "lease_seconds",
    "cancel_requested",
    "version",
)
"""What the update rules read; the rest (payload, result, timestamps) they only write."""


async def fetch(
    session: AsyncSession, stmt: Any, params: Mapping[str, Any] | None = None
) -> list[TaskRecord]:
    """Run a statement that returns whole task rows; the rows as records."""
    result = await execute(session, stmt, params)
    keys = tuple(result.keys())
    return [TaskRecord.from_row(keys, row) for row in result]


async def load(
    session: AsyncSession, ids: Iterable[uuid.UUID], *, for_update: bool = False
) -> dict[uuid.UUID, TaskRecord]:
    """The tasks among ``ids`` that exist, by id (row-locked with ``for_update``)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    stmt = _load_statement(for_update)
    return {record.id: record for record in await fetch(session, stmt, {"ids": wanted})}


@lru_cache(maxsize=2)
def _load_statement(for_update: bool) -> Select[Any]:
    """Tasks by id, built once per shape (parameter ``ids``, a list)."""
    stmt = select(TASKS).where(TASKS.c.id.in_(bindparam("ids", expanding=True)))
    return prebuilt(stmt.with_for_update() if for_update else stmt)


async def load_one(
    session: AsyncSession, task_id: uuid.UUID, *, for_update: bool = False
) -> TaskRecord:
    """One task, or :class:`TaskNotFound`."""
    found = await load(session, [task_id], for_update=for_update)
    if task_id not in found:
        raise TaskNotFound(f"Task {task_id} not found.")
    return found[task_id]


_INSERT = prebuilt(insert(TASKS))


async def insert_tasks(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert complete task rows (every column given) in one statement."""
    if rows:
        await execute(session, _INSERT, list(rows))


def task_param(name: str, column: str | None = None) -> Any:
    """A bound parameter typed like the tasks table's ``column`` (default: ``name``).

    Prebuilt statements need the column's type on their parameters (UUIDs, UTC timestamps,
    enums are converted by it). Inside ``update().values()`` a parameter may not share a
    column's name, hence ``column``.
    """
    return bindparam(name, type_=TASKS.c[column or name].type)


@lru_cache(maxsize=256)
def _update_statement(columns: tuple[str, ...], guarded: bool = False) -> Update:
    stmt = update(TASKS).where(TASKS.c.id == task_param("b_id", "id"))
    if guarded:
        stmt = stmt.where(TASKS.c.version == task_param("b_version", "version"))
    return prebuilt(stmt.values({name: task_param(f"v_{name}", name) for name in columns}))


class StaleRecord(Exception):
    """A guarded save found the task changed since it was read (nothing was written)."""


async def save(
    session: AsyncSession, records: Iterable[TaskRecord], *, guarded: bool = False
) -> None:
    """Write what changed in ``records``: one ``executemany`` per set of changed columns.

    With ``guarded``, each record is written by a statement of its own that applies only
    if the row still has the version it was read with (for work outside a transaction,
    where the row was not locked); the first that does not raises :class:`StaleRecord`.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in records:
        changed = record.changes()
        if not changed:
            continue
        params = {f"v_{name}": value for name, value in changed.items()}
        params["b_id"] = record.id
        if guarded:
            params["b_version"] = record._saved["version"]
            stmt = _update_statement(tuple(sorted(changed)), True)
            if (await execute(session, stmt, params)).rowcount != 1:
                raise StaleRecord(f"Task {record.id} changed since it was read.")
        else:
            groups.setdefault(tuple(sorted(changed)), []).append(params)
        record._saved.update(changed)
    for columns, params_list in groups.items():
        await execute(session, _update_statement(columns), params_list)
