"""How many tasks each job has pending, kept by triggers (O(1) queue positions).

A new task's queue position is the number of pending tasks of its job claimed before it,
plus one. Counted from the claim index, that walks every pending task ahead of it: at the
back of a 10,000-task queue, most of a submit's time. Instead, triggers on the tasks table
keep the number of pending tasks per job (whatever changes a task's status: submits,
claims, the sweeper, cancels, deletes), so a new task's position is that number minus the
pending tasks queued *behind* it (none, unless it was submitted with a lower priority or an
earlier ``run_after`` than others waiting), found by a seek on the claim index.

SQLite keeps one row per job in ``joblib_job_pending``: its writes are serialised anyway,
so the counter row costs no concurrency there.

PostgreSQL (``storage.pending_pg``) keeps ``joblib_job_pending_pg``, sharded: a job's count
is the sum of its rows, one per server backend that changed it (``shard = pg_backend_pid()``)
plus a base row (``shard = 0``). A single row per job would be locked by every submit and
claim of the job until commit, serialising what ``SKIP LOCKED`` lets run side by side, and
two transactions each changing two jobs could deadlock on them. A backend runs one
transaction at a time (behind a transaction-pooling proxy too), so no other transaction
writes its rows: concurrent submits and claims never wait for each other on a count.
Statement-level triggers (with transition tables) add one change per job and statement,
upserted in job order. The sweeper folds the rows no open transaction holds into the base
rows (``FOR UPDATE SKIP LOCKED``: it never waits for a transaction, which at most waits the
fold's few milliseconds for its own row), so the table keeps a few rows per job as
connections, and so backend pids, come and go. A submit's ``INSERT ... RETURNING`` reads
the sum in the statement's snapshot, which holds neither the new row nor the trigger's
change: the position there is the sum minus the tasks behind, plus one.

The counts' table and triggers (on PostgreSQL also their functions) are created with the
queue's tables (``Base.metadata.create_all``, which the reference app and
:func:`~zndraw_joblib_server.create_tables` run); every ``create_all`` also recounts the
table from the tasks (on PostgreSQL under a lock that waits out the transactions changing
counts), so a database created by an older version, or edited by hand, starts
consistent. A database without them (a schema made by migrations that do not run
``create_all``) still works: positions are then counted from the claim index.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    Table,
    Uuid,
    cast,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from zndraw_auth import Base

from zndraw_joblib_server.storage import pending_pg

__all__ = ["PENDING", "counts_kept", "kept_count"]

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


def _with_tasks(ddl: Any, target: Any, bind: Connection | None, *args: Any, **kw: Any) -> bool:
    """A DDL condition: the database has the tasks table.

    ``create_all`` may have been asked for other tables only.
    """
    return bind is not None and inspect(bind).has_table("joblib_task")


for _dialect, _statements in (("sqlite", _STATEMENTS), ("postgresql", pending_pg.STATEMENTS)):
    for _sql in _statements:
        _ddl = DDL(_sql)  # type: ignore[no-untyped-call]
        event.listen(
            Base.metadata, "after_create", _ddl.execute_if(dialect=_dialect, callable_=_with_tasks)
        )


_READY: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


async def counts_kept(session: AsyncSession) -> bool:
    """Whether this database keeps the counts (its table, triggers and functions present).

    A database whose schema was made without ``create_all`` (by migrations, say) may lack
    them; positions are then counted from the claim index. Looked up once per engine.
    """
    engine = session.sync_session.get_bind().engine
    kept = _READY.get(engine)
    if kept is None:
        installed = _INSTALLED.get(engine.dialect.name)
        kept = installed is not None and bool((await session.execute(installed)).scalar_one())
        _READY[engine] = kept
    return kept


_INSTALLED = {
    "sqlite": text(
        "SELECT count(*) = 4 FROM sqlite_master WHERE name IN ('joblib_job_pending', "
        "'joblib_task_pending_insert', 'joblib_task_pending_delete', "
        "'joblib_task_pending_update')"
    ),
    "postgresql": pending_pg.INSTALLED,
}


def kept_count(dialect: str, job_id: Any) -> Any:
    """SQL: the kept pending count of the job ``job_id`` (a bound parameter or expression).

    On SQLite ``NULL`` when the job has no row (a job's row stays once made, so only a hand
    edit removes it); on PostgreSQL the sum of its rows, 0 without any.
    """
    if dialect == "sqlite":
        return select(PENDING.c.pending).where(PENDING.c.job_id == job_id).scalar_subquery()
    counts = pending_pg.PENDING_PG.c
    total = func.coalesce(cast(func.sum(counts.pending), BigInteger), 0)  # sum(): numeric
    return select(total).where(counts.job_id == job_id).scalar_subquery()
