"""SQLite: how many tasks each job has pending, kept by triggers (O(1) queue positions).

A new task's queue position is the number of pending tasks of its job claimed before it,
plus one. Counted from the claim index, that walks every pending task ahead of it: at the
back of a 10,000-task queue, most of a submit's time. On SQLite this module keeps the number
of pending tasks per job in ``joblib_job_pending``, maintained by triggers on the tasks table
(whatever changes a task's status: submits, claims, the sweeper, cancels, deletes), so a new
task's position is that number minus the pending tasks queued *behind* it (none, unless
it was submitted with a lower priority or an earlier ``run_after`` than others waiting).

The table and triggers are created with the tables (``Base.metadata.create_all``, which the
reference app and :func:`~zndraw_joblib_server.create_tables` run); every ``create_all``
also recounts the table from the tasks, so a database created by an older version, or
edited by hand, starts consistent. A database without them (a schema made by migrations
that do not run ``create_all``) still works: positions are then counted as on PostgreSQL.

SQLite writes are serialised, so the one counter row per job costs no concurrency there.
PostgreSQL does without: a counter row per job would be locked by every submit and claim of
that job until commit, serialising what ``SKIP LOCKED`` lets run side by side; there the
count stays on the claim index.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import (
    DDL,
    Column,
    Connection,
    Dialect,
    Integer,
    MetaData,
    Table,
    Uuid,
    event,
    inspect,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from zndraw_auth import Base

__all__ = ["PENDING", "counts_kept"]

PENDING = Table(
    "joblib_job_pending",
    MetaData(),  # not Base.metadata: created by the DDL below, on SQLite only
    Column("job_id", Uuid, primary_key=True),
    Column("pending", Integer, nullable=False),
)
"""The counts (SQLite only): ``job_id``, ``pending``."""

_ADD = (
    "INSERT INTO joblib_job_pending (job_id, pending) SELECT NEW.job_id, 1 WHERE {when} "
    "ON CONFLICT (job_id) DO UPDATE SET pending = pending + 1"
)
_SUBTRACT = (
    "UPDATE joblib_job_pending SET pending = pending - 1 WHERE job_id = OLD.job_id AND {when}"
)

_STATEMENTS = [
    "CREATE TABLE IF NOT EXISTS joblib_job_pending "
    "(job_id CHAR(32) PRIMARY KEY NOT NULL, pending INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS joblib_task_pending_insert AFTER INSERT ON joblib_task "
    "WHEN NEW.status = 'pending' BEGIN " + _ADD.format(when="1") + "; END",
    "CREATE TRIGGER IF NOT EXISTS joblib_task_pending_delete AFTER DELETE ON joblib_task "
    "WHEN OLD.status = 'pending' BEGIN " + _SUBTRACT.format(when="1") + "; END",
    "CREATE TRIGGER IF NOT EXISTS joblib_task_pending_update "
    "AFTER UPDATE OF status, job_id ON joblib_task "
    "WHEN (OLD.status = 'pending') != (NEW.status = 'pending') "
    "OR (OLD.job_id != NEW.job_id AND NEW.status = 'pending') BEGIN "
    + _SUBTRACT.format(when="OLD.status = 'pending'")
    + "; "
    + _ADD.format(when="NEW.status = 'pending'")
    + "; END",
    # Recount (a database from before these triggers, or changed with them missing).
    "DELETE FROM joblib_job_pending",
    "INSERT INTO joblib_job_pending (job_id, pending) SELECT job_id, count(*) "
    "FROM joblib_task WHERE status = 'pending' GROUP BY job_id",
]


def _with_tasks(
    ddl: Any,
    target: Any,
    bind: Connection | None,
    tables: list[Table] | None = None,
    state: Any = None,
    *,
    dialect: Dialect,
    compiler: Any = None,
    checkfirst: bool = True,
) -> bool:
    """Whether the database is SQLite and has the tasks table.

    ``create_all`` may have been asked for other tables only.
    """
    return bool(
        dialect.name == "sqlite" and bind is not None and inspect(bind).has_table("joblib_task")
    )


for _sql in _STATEMENTS:
    _ddl = DDL(_sql)  # type: ignore[no-untyped-call]
    event.listen(Base.metadata, "after_create", _ddl.execute_if(callable_=_with_tasks))


_READY: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


async def counts_kept(session: AsyncSession) -> bool:
    """Whether this SQLite database keeps the counts (table and triggers present).

    A database whose schema was made without ``create_all`` (by migrations, say) may lack
    them; positions are then counted from the claim index. Looked up once per engine.
    """
    engine = session.sync_session.get_bind().engine
    kept = _READY.get(engine)
    if kept is None:
        found = await session.execute(_INSTALLED)
        kept = _READY[engine] = found.scalar_one() == 4
    return kept


_INSTALLED = text(
    "SELECT count(*) FROM sqlite_master WHERE name IN ('joblib_job_pending', "
    "'joblib_task_pending_insert', 'joblib_task_pending_delete', 'joblib_task_pending_update')"
)
