"""Helpers shared by the services: names, validation, serialisation, releasing tasks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement

from zndraw_joblib_core import (
    InvalidRoomId,
    PayloadTooLarge,
    RequestValidationFailed,
    TaskResponse,
    TaskStatus,
    TaskStatusChanged,
    build_job_name,
    is_valid_room_id,
)
from zndraw_joblib_server.models import Job
from zndraw_joblib_server.services.records import TASKS, TaskLike, execute, task_param
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork
from zndraw_joblib_server.storage.pending import PENDING, counts_kept
from zndraw_joblib_server.storage.prebuilt import prebuilt

__all__ = [
    "announce",
    "check_size",
    "insert_one",
    "job_names",
    "json_size",
    "new_position",
    "queue_positions",
    "release",
    "release_all",
    "requeue",
    "status_event",
    "to_response",
    "validate_room",
]

_names: dict[uuid.UUID, str] = {}
_MAX_CACHED_NAMES = 100_000


def validate_room(room_id: str) -> None:
    """Raise :class:`InvalidRoomId` unless ``room_id`` follows the naming rules."""
    if not is_valid_room_id(room_id):
        raise InvalidRoomId(
            f"Invalid room id {room_id!r}: it must be '@global' or a non-empty id without "
            "'@', ':', '/', control characters or surrounding spaces (at most 255 characters)."
        )


def json_size(value: Any) -> int:
    """The size in bytes of ``value`` encoded as compact JSON.

    Raises:
        ValueError: ``value`` holds a non-finite number (NaN, Infinity), which JSON forbids.
    """
    encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return len(encoded.encode())


def check_size(what: str, value: Any, limit: int) -> None:
    """Check a JSON value or a text against its limit and what the databases can store.

    Raises:
        PayloadTooLarge: It encodes to more than ``limit`` bytes (texts: characters).
        RequestValidationFailed: A JSON value holds NaN or Infinity, or a text holds a NUL
            character.
    """
    if isinstance(value, str):
        size = len(value)
        if "\x00" in value:
            raise RequestValidationFailed(f"The {what} contains a NUL character.")
    else:
        try:
            size = json_size(value)
        except ValueError:
            raise RequestValidationFailed(
                f"The {what} contains a non-finite number (NaN or Infinity), which JSON "
                "does not allow."
            ) from None
    if size > limit:
        raise PayloadTooLarge(f"The {what} is {size} bytes; the limit is {limit}.", limit=limit)


def remember_name(job_id: uuid.UUID, room_id: str, category: str, name: str) -> str:
    """Cache and return a job's full name (a job's name never changes)."""
    full_name = build_job_name(room_id, category, name)
    if len(_names) >= _MAX_CACHED_NAMES:
        _names.clear()
    _names[job_id] = full_name
    return full_name


async def job_names(session: AsyncSession, job_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Full names of the given jobs, from the cache or one query."""
    wanted = set(job_ids)
    missing = [jid for jid in wanted if jid not in _names]
    if missing:
        rows = await session.execute(
            select(Job.id, Job.room_id, Job.category, Job.name).where(Job.id.in_(missing))
        )
        for jid, room, category, name in rows:
            _names[jid] = build_job_name(room, category, name)
    return {jid: _names.get(jid, "") for jid in wanted}


def _counts_ahead(
    job_id: Any, priority: Any, run_after: Any, created_at: Any, *, behind: bool = False
) -> Any:
    """SQL: how many pending tasks of the job are claimed before (``behind``: after) one.

    The task is given by its ``job_id``, ``priority``, ``run_after`` and ``created_at``.
    Three counts over ranges of the claim index (higher priority; same priority and due
    earlier; same priority and due time, created earlier), so each walks only the entries
    it counts instead of testing every pending task of the job against an ``OR``.
    """
    c = TASKS.c
    pending = [c.job_id == job_id, c.status == TaskStatus.PENDING]
    ranges = [
        [c.priority < priority if behind else c.priority > priority],
        [c.priority == priority, c.run_after > run_after if behind else c.run_after < run_after],
        [
            c.priority == priority,
            c.run_after == run_after,
            c.created_at > created_at if behind else c.created_at < created_at,
        ],
    ]
    counts = [
        select(func.count()).select_from(TASKS).where(*pending, *r).scalar_subquery()
        for r in ranges
    ]
    return counts[0] + counts[1] + counts[2]


_AHEAD_FIELDS = ("job_id", "priority", "run_after", "created_at")
"""What places a task in its job's queue (the parameters of :func:`_counts_ahead`)."""


def _counts_ahead_of(prefix: str, *, behind: bool = False) -> Any:
    """:func:`_counts_ahead` of parameters named ``prefix`` + each of :data:`_AHEAD_FIELDS`."""
    params = (task_param(f"{prefix}{name}", name) for name in _AHEAD_FIELDS)
    return _counts_ahead(*params, behind=behind)


_AHEAD_OF_ONE = prebuilt(select(_counts_ahead_of("")))
"""The count ahead of one task, built once (no statement construction per request)."""

_POSITION_OF_NEW = prebuilt(
    select(
        select(PENDING.c.pending).where(PENDING.c.job_id == task_param("job_id")).scalar_subquery()
        - _counts_ahead_of("", behind=True)
    )
)
"""SQLite: a pending task's position from its job's pending count (see ``storage.pending``)."""


async def new_position(session: AsyncSession, task: TaskLike, dialect: str) -> int:
    """The 1-based queue position of a task just inserted as pending.

    On SQLite: the job's pending count minus the tasks queued behind the new one (usually
    none), so the cost does not grow with the queue; elsewhere as :func:`queue_positions`.
    """
    if dialect == "sqlite" and await counts_kept(session):
        params = {name: getattr(task, name) for name in _AHEAD_FIELDS}
        position = (await execute(session, _POSITION_OF_NEW, params)).scalar_one()
        if position is not None:  # None: the job's count is missing (removed by hand)
            return int(position)
    return (await queue_positions(session, [task]))[task.id]


class _SkipTakenKey(ClauseElement):
    """``ON CONFLICT (job_id, room_id, idempotency_key) DO NOTHING``, as a cacheable clause.

    SQLAlchemy's own ``on_conflict_do_nothing()`` (2.0) opts out of its compiled-statement
    cache, so every submit would compile its insert anew. This constant clause caches; it is
    attached through the insert's ``_post_values_clause`` (where ``on_conflict_do_nothing``
    puts its own), a private attribute stable in 2.0 (the workspace pins ``sqlalchemy<2.1``).
    Both databases accept the syntax, against the tasks table's unique key constraint.
    """

    __visit_name__ = "zndraw_joblib_skip_taken_key"
    _traverse_internals: list[Any] = []  # nothing but the class: its key is constant
    inherit_cache = True


@compiles(_SkipTakenKey)
def _render_skip_taken_key(_element: _SkipTakenKey, _compiler: Any, **_kw: Any) -> str:
    return "ON CONFLICT (job_id, room_id, idempotency_key) DO NOTHING"


def _insert_one(keyed: bool, counting: bool) -> Any:
    stmt: Any = insert(TASKS)
    if keyed:
        stmt._post_values_clause = _SkipTakenKey()
    if counting:
        stmt = stmt.returning(_counts_ahead_of("r_"))
    return prebuilt(stmt)


_INSERT_ONE = {(k, c): _insert_one(k, c) for k in (False, True) for c in (False, True)}


async def insert_one(
    session: AsyncSession, row: dict[str, Any], *, keyed: bool, counting: bool
) -> tuple[bool, int | None]:
    """Insert one complete task row in one statement.

    Args:
        session: The transaction's session.
        row: Every column of the task.
        keyed: Insert nothing when the row's idempotency key is taken (no error, no
            savepoint: a concurrent insert of the same key is waited for, then skipped).
        counting: PostgreSQL: also count the pending tasks ahead of the new one
            (``RETURNING`` is evaluated on the statement's snapshot, which does not hold the
            new row, so the count is what :func:`queue_positions` finds after the insert).

    Returns:
        Whether the row was inserted, and with ``counting`` its 1-based queue position.
    """
    params = row
    if counting:
        params = {**row, **{f"r_{name}": row[name] for name in _AHEAD_FIELDS}}
    result = await execute(session, _INSERT_ONE[keyed, counting], params)
    if counting:
        ahead = result.scalar_one_or_none()
        return ahead is not None, None if ahead is None else int(ahead) + 1
    return result.rowcount == 1, None


async def queue_positions(
    session: AsyncSession, tasks: Iterable[TaskLike]
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
            .over(
                partition_by=TASKS.c.job_id,
                order_by=(TASKS.c.priority.desc(), TASKS.c.run_after, TASKS.c.created_at),
            )
            .label("position"),
        )
        .where(
            TASKS.c.status == TaskStatus.PENDING,
            TASKS.c.job_id.in_({t.job_id for t in pending}),
        )
        .subquery()
    )
    rows = await session.execute(
        select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_([t.id for t in pending]))
    )
    return {task_id: int(position) for task_id, position in rows.tuples()}


def to_response(task: TaskLike, job_name: str, queue_position: int | None = None) -> TaskResponse:
    """Serialise a task row.

    The values come typed from the database (aware UTC timestamps, enums, JSON), so the
    model is built without validating them again.
    """
    return TaskResponse.model_construct(
        id=task.id,
        job_name=job_name,
        room_id=task.room_id,
        status=task.status,
        created_at=task.created_at,
        started_at=task.started_at,
        completed_at=task.completed_at,
        worker_id=task.worker_id,
        error=task.error,
        payload=task.payload or {},
        queue_position=queue_position,
        priority=task.priority,
        run_after=task.run_after,
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        timeout_seconds=task.timeout_seconds,
        lease_expires_at=task.lease_expires_at,
        cancel_requested=task.cancel_requested,
        progress=task.progress,
        message=task.message,
        result=task.result,
        version=task.version,
    )


def status_event(task: TaskLike, job_name: str, at: datetime) -> TaskStatusChanged:
    """The event announcing a task's new state."""
    return TaskStatusChanged(
        task_id=task.id,
        job_name=job_name,
        room_id=task.room_id,
        status=task.status,
        attempt=task.attempt,
        worker_id=task.worker_id,
        progress=task.progress,
        message=task.message,
        cancel_requested=task.cancel_requested,
        error=task.error,
        at=at,
    )


async def announce(
    uow: UnitOfWork,
    changed: Sequence[TaskLike],
    now: datetime,
    claimable: Iterable[TaskLike] = (),
    *,
    watched: bool = True,
) -> dict[uuid.UUID, str]:
    """Queue, for after commit, the wake-ups and status events of changed tasks.

    Args:
        uow: The transaction the tasks changed in.
        changed: Tasks whose state changed (their long-polls wake, an event is emitted).
        now: When the change happened.
        claimable: Tasks among them that became claimable (a waiting claim of their job wakes).
        watched: Whether long-polls may be waiting on the tasks (False for new tasks, whose
            ids nobody knows yet).

    Returns:
        The full names of the tasks' jobs, by job id.
    """
    names = await job_names(uow.session, {t.job_id for t in changed})
    for task in changed:
        if watched:
            uow.wake_all(f"task:{task.id}")
        if uow.record_events:
            uow.events.append(status_event(task, names[task.job_id], now))
    for task in claimable:
        uow.wake_some(f"job:{task.job_id}")
    return names


def release_all(
    pairs: Sequence[tuple[TaskLike, str]], now: datetime, settings: JobLibSettings
) -> list[TaskLike]:
    """Apply the lost-lease rule to each ``(task, reason)``; return those requeued."""
    return [task for task, reason in pairs if release(task, now, settings, reason)]


def backoff(settings: JobLibSettings, attempt: int) -> timedelta:
    """Delay before the next attempt after ``attempt`` failed (exponential, capped)."""
    seconds = settings.retry_backoff_seconds * (2 ** max(attempt - 1, 0))
    return timedelta(seconds=min(seconds, settings.retry_backoff_max_seconds))


def requeue(task: TaskLike, now: datetime, settings: JobLibSettings) -> None:
    """Put an in-flight task back to pending, claimable after the backoff of its attempt."""
    task.status = TaskStatus.PENDING
    task.worker_id = None
    task.claimed_at = None
    task.started_at = None
    task.lease_expires_at = None
    task.deadline_at = None
    task.progress = None
    task.run_after = now + backoff(settings, task.attempt)


def release(task: TaskLike, now: datetime, settings: JobLibSettings, reason: str) -> bool:
    """Apply the lost-lease rule to an in-flight task.

    With attempts left the task goes back to pending after a backoff; otherwise it fails
    with ``reason``. A task whose cancellation was requested is cancelled instead.

    Returns:
        True when the task was requeued (claimable again).
    """
    task.lease_expires_at = None
    task.deadline_at = None
    task.version += 1
    if task.cancel_requested:
        task.status = TaskStatus.CANCELLED
        task.completed_at = now
        task.error = task.error or f"Cancelled ({reason})."
        return False
    if task.attempt < task.max_attempts:
        requeue(task, now, settings)
        task.error = f"Attempt {task.attempt} lost: {reason}"
        return True
    task.status = TaskStatus.FAILED
    task.completed_at = now
    task.error = f"{reason} (attempt {task.attempt} of {task.max_attempts})."
    return False
