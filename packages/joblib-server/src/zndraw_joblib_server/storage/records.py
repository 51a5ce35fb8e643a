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
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, Update, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskNotFound
from zndraw_joblib_server.models import Worker
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.task_record import (
    FIELDS,
    LIGHT_FIELDS,
    TASKS,
    UNLOADED,
    Owners,
    StaleRecord,
    TaskRecord,
)

__all__ = [
    "FIELDS",
    "LIGHT_FIELDS",
    "TASKS",
    "UNLOADED",
    "Owners",
    "StaleRecord",
    "TaskRecord",
    "execute",
    "fetch",
    "insert_tasks",
    "load",
    "load_one",
    "load_with_owners",
    "save",
    "task_param",
]


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
    stmt = _LOAD[for_update]
    return {record.id: record for record in await fetch(session, stmt, {"ids": wanted})}


_BY_IDS = select(TASKS).where(TASKS.c.id.in_(bindparam("ids", expanding=True)))
_LOAD = {False: prebuilt(_BY_IDS), True: prebuilt(_BY_IDS.with_for_update())}
"""Tasks by id (parameter ``ids``, a list), plain and row-locked, built once."""


_WORKERS = Worker.__table__


@lru_cache(maxsize=4)
def _load_with_owners(light: bool, locked: bool) -> Select[Any]:
    """Tasks by id (parameter ``ids``), each with its worker's owner (last column).

    The owner comes from the same statement, so the usual update (a worker reporting on its
    own task) needs no second lookup. With ``locked`` only the task rows are locked
    (``FOR UPDATE OF``).
    """
    columns = [TASKS.c[name] for name in LIGHT_FIELDS] if light else list(TASKS.c)
    stmt = (
        select(*columns, _WORKERS.c.user_id.label("worker_owner"))
        .outerjoin(_WORKERS, _WORKERS.c.id == TASKS.c.worker_id)
        .where(TASKS.c.id.in_(bindparam("ids", expanding=True)))
    )
    return prebuilt(stmt.with_for_update(of=TASKS) if locked else stmt)


async def load_with_owners(
    session: AsyncSession, ids: Iterable[uuid.UUID], *, light: bool, locked: bool
) -> tuple[dict[uuid.UUID, TaskRecord], Owners]:
    """The existing tasks among ``ids``, and the owners of the workers holding them.

    ``light``: only :data:`LIGHT_FIELDS` are read; ``locked``: the task rows are locked.
    """
    params = {"ids": list(dict.fromkeys(ids))}
    result = await execute(session, _load_with_owners(light, locked), params)
    keys = tuple(result.keys())[:-1]
    tasks: dict[uuid.UUID, TaskRecord] = {}
    owners: Owners = {}
    for row in result:
        task = TaskRecord.from_row(keys, row[:-1])
        tasks[task.id] = task
        if task.worker_id is not None:
            owners[task.worker_id] = row[-1]
    return tasks, owners


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


async def save(
    session: AsyncSession,
    records: Iterable[TaskRecord],
    *,
    guarded: bool = False,
    skip_stale: bool = False,
) -> None:
    """Write what changed in ``records``: one ``executemany`` per set of changed columns.

    With ``guarded``, each record is written by a statement of its own that applies only
    if the row still has the version it was read with (for work outside a transaction,
    where the row was not locked); the first that does not raises :class:`StaleRecord`
    (or, with ``skip_stale``, is left as it is while the others are written).
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
                if skip_stale:
                    continue  # changed meanwhile (released, say): it keeps its new state
                raise StaleRecord(f"Task {record.id} changed since it was read.")
        else:
            groups.setdefault(tuple(sorted(changed)), []).append(params)
        record._saved.update(changed)
    for columns, params_list in groups.items():
        await execute(session, _update_statement(columns), params_list)
