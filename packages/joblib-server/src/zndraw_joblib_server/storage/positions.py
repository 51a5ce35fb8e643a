"""Queue positions: counted from the claim index, or from the kept counts for new tasks.

A task's 1-based position counts the pending tasks of its job claimed before it. A read
counts them (:func:`queue_positions`); a submit answers, where the database keeps them
(see ``storage.pending``), from the job's pending count minus the tasks queued behind the
new one, which costs the same at the back of a long queue as at its front
(:func:`insert_one`, :func:`new_position`).
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.models import Job, status_is
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.pending import counts_kept
from zndraw_joblib_server.storage.prebuilt import BY_ID, prebuilt
from zndraw_joblib_server.storage.records import TASKS, TaskRecord, task_param
from zndraw_joblib_server.storage.rules_sql import claim_order_by
from zndraw_joblib_server.storage.store import Store

__all__ = ["insert_one", "new_position", "queue_positions"]


_AHEAD_FIELDS = ("job_id", "priority", "run_after", "created_at")
"""What places a task in its job's queue."""


def _counts_ahead_of(prefix: str, *, behind: bool = False) -> Any:
    """SQL: how many pending tasks of the job are claimed before (``behind``: after) one.

    The task is given by parameters named ``prefix`` + each of :data:`_AHEAD_FIELDS`.
    Three counts over ranges of the claim index (higher priority; same priority and due
    earlier; same priority and due time, created earlier), so each walks only the entries
    it counts instead of testing every pending task of the job against an ``OR``.
    """
    c = TASKS.c
    job_id, priority, run_after, created_at = (
        task_param(f"{prefix}{name}", name) for name in _AHEAD_FIELDS
    )
    pending = [c.job_id == job_id, status_is(TaskStatus.PENDING)]
    # Ahead: a higher priority, or an earlier time; behind: the opposite.
    by_priority, by_time = (operator.lt, operator.gt) if behind else (operator.gt, operator.lt)
    ranges = [
        [by_priority(c.priority, priority)],
        [c.priority == priority, by_time(c.run_after, run_after)],
        [c.priority == priority, c.run_after == run_after, by_time(c.created_at, created_at)],
    ]
    counts = [
        select(func.count()).select_from(TASKS).where(*pending, *r).scalar_subquery()
        for r in ranges
    ]
    return counts[0] + counts[1] + counts[2]


_AHEAD_OF_ONE = prebuilt(select(_counts_ahead_of("")))
"""The count ahead of one task, built once (no statement construction per request)."""


@lru_cache(maxsize=8)
def _position_of_new(store: Store) -> Any:
    """A pending task's position from its job's pending count (see ``storage.pending``)."""
    kept = store.kept_count(task_param("job_id"))
    return prebuilt(select(kept - _counts_ahead_of("", behind=True)))


async def new_position(session: AsyncSession, task: TaskRecord, store: Store) -> int:
    """The 1-based queue position of a task just inserted as pending.

    Where the database keeps the counts: the job's pending count minus the tasks queued
    behind the new one (usually none), so the cost does not grow with the queue; elsewhere
    as :func:`queue_positions`.
    """
    if await counts_kept(session):
        params = {name: getattr(task, name) for name in _AHEAD_FIELDS}
        position = (await execute(session, _position_of_new(store), params)).scalar_one()
        if position is not None and position >= 1:  # None: the job's count was removed
            return int(position)
    return (await queue_positions(session, [task]))[task.id]


_JOBS = Job.__table__
_SEEN = bindparam("j_updated_at", type_=_JOBS.c.updated_at.type)
_JOB_UNCHANGED = exists().where(
    _JOBS.c.id == task_param("job_id"),
    _JOBS.c.deleted.is_(False),
    _JOBS.c.updated_at.is_not_distinct_from(_SEEN),
)
"""SQL: the new row's job is active and unchanged since it was looked up (``j_updated_at``)."""


@lru_cache(maxsize=32)
def _insert_one(store: Store, keyed: bool, counting: str | None) -> Any:
    """One task's ``INSERT ... SELECT`` (if its job is unchanged), built once per shape.

    Prebuilt (see ``storage.prebuilt``): SQLAlchemy's own ``on_conflict_do_nothing`` opts
    out of its compiled-statement cache.
    """
    columns = [column.key for column in TASKS.c]
    row = select(*(task_param(name) for name in columns)).where(_JOB_UNCHANGED)
    stmt: Any = store.insert(TASKS).from_select(columns, row)
    if keyed:  # the tasks table's unique key: a concurrent insert is waited for, then skipped
        c = TASKS.c
        stmt = stmt.on_conflict_do_nothing(index_elements=[c.job_id, c.room_id, c.idempotency_key])
    if counting is None:
        return prebuilt(stmt)
    if counting == "ahead":  # the pending tasks ahead of the new one
        ahead = _counts_ahead_of("r_")
    else:  # the same, from the kept count (before the insert's trigger)
        ahead = store.kept_count(task_param("r_job_id", "job_id")) - _counts_ahead_of(
            "r_", behind=True
        )
    # The new row's id too: concurrent submits may then share a round trip (BY_ID).
    return prebuilt(stmt.returning(TASKS.c.id, ahead.label("ahead")), rows_of=BY_ID)


async def insert_one(
    session: AsyncSession,
    store: Store,
    row: dict[str, Any],
    job_changed_at: datetime | None,
    *,
    keyed: bool,
    counting: bool,
) -> tuple[bool, int | None]:
    """Insert one complete task row in one statement, if its job is as it was looked up.

    Args:
        session: The transaction's session.
        store: The database's store (its ``INSERT`` and kept counts).
        row: Every column of the task.
        job_changed_at: The ``updated_at`` of the row's job when it was looked up: the
            task is inserted only if the job is still active and has not changed since
            (so a submit may use a job looked up by an earlier request).
        keyed: Insert nothing when the row's idempotency key is taken (no error, no
            savepoint: a concurrent insert of the same key is waited for, then skipped).
        counting: Also return the new task's position (the store decides). ``RETURNING`` is
            evaluated on the statement's snapshot, which holds neither the new row nor the
            change its trigger makes to the counts: with the counts kept, the job's count
            minus the pending tasks queued behind the new one are those ahead of it;
            without, the tasks ahead are counted. Either is what :func:`queue_positions`
            finds after the insert.

    Returns:
        Whether the row was inserted, and with ``counting`` its 1-based queue position.
    """
    params = {**row, "j_updated_at": job_changed_at}
    mode = None
    if counting:
        params.update({f"r_{name}": row[name] for name in _AHEAD_FIELDS})
        mode = "kept" if await counts_kept(session) else "ahead"
    result = await execute(session, _insert_one(store, keyed, mode), params)
    if mode is None:
        return result.rowcount == 1, None
    inserted = result.first()
    if inserted is None:
        return False, None
    ahead = inserted[1]
    if ahead is None or ahead < 0:  # no count, or one edited by hand: count instead
        return True, (await queue_positions(session, [TaskRecord(row)]))[row["id"]]
    return True, int(ahead) + 1


async def queue_positions(
    session: AsyncSession, tasks: Iterable[TaskRecord]
) -> dict[uuid.UUID, int]:
    """1-based queue positions of the pending tasks among ``tasks``.

    One task's position counts the pending tasks of its job claimed before it, through the
    claim index: the cost grows with the position (as with RQ's ``get_position``), not with
    the size of the table. Several tasks' positions come from one ranking of the pending
    tasks of their jobs.
    """
    pending = [t for t in tasks if t.status == TaskStatus.PENDING]
    if not pending:
        return {}
    if len(pending) == 1:
        task = pending[0]
        params = {name: getattr(task, name) for name in _AHEAD_FIELDS}
        return {task.id: int((await execute(session, _AHEAD_OF_ONE, params)).scalar_one()) + 1}
    # Several: rank the pending tasks of their jobs once, in claim order.
    ranked = (
        select(
            TASKS.c.id,
            func.row_number()
            .over(partition_by=TASKS.c.job_id, order_by=claim_order_by(TASKS.c))
            .label("position"),
        )
        .where(status_is(TaskStatus.PENDING), TASKS.c.job_id.in_({t.job_id for t in pending}))
        .subquery()
    )
    rows = await session.execute(
        select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_([t.id for t in pending]))
    )
    return {task_id: int(position) for task_id, position in rows.tuples()}
