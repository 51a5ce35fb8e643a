"""Helpers shared by the services: names, validation, serialisation, releasing tasks."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any, Concatenate, ParamSpec, TypeVar

import pydantic_core
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

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
from zndraw_joblib_server.domain.rules import after_lost_attempt, backoff_seconds, lease_until
from zndraw_joblib_server.models import Job
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import Database, EventSink, UnitOfWork
from zndraw_joblib_server.storage.caches import Bounded, caches_of
from zndraw_joblib_server.storage.records import FIELDS, UNLOADED, TaskRecord

__all__ = [
    "announce",
    "check_size",
    "count_rows",
    "find_or_insert",
    "job_named",
    "job_names",
    "json_measure",
    "page_of",
    "release",
    "release_all",
    "requeue",
    "start_task",
    "status_event",
    "to_response",
    "validate_room",
    "written",
]

P = ParamSpec("P")
T = TypeVar("T")


async def written(
    db: Database,
    sink: EventSink | None,
    work: Callable[Concatenate[UnitOfWork, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``work(uow, *args, **kwargs)`` in a write transaction of its own (routes open none)."""
    async with db.write(sink) as uow:
        return await work(uow, *args, **kwargs)


async def find_or_insert(
    session: AsyncSession, find: Callable[[], Awaitable[T | None]], new: Callable[[], T]
) -> tuple[T, bool]:
    """The row ``find()`` answers, else ``new()`` inserted in a savepoint (True: inserted).

    A row of the same key inserted concurrently by another process makes the insert fail;
    that row is then found and answered.
    """
    found = await find()
    if found is not None:
        return found, False
    row = new()
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:  # inserted concurrently by another process
        found = await find()
        if found is None:  # pragma: no cover - the conflicting row vanished again
            raise
        return found, False
    return row, True


def validate_room(room_id: str) -> None:
    """Raise :class:`InvalidRoomId` unless ``room_id`` follows the naming rules."""
    if not is_valid_room_id(room_id):
        raise InvalidRoomId(
            f"Invalid room id {room_id!r}: it must be '@global' or a non-empty id without "
            "'@', ':', '/', control characters or surrounding spaces (at most 255 characters)."
        )


_SURROGATE = re.compile("[\ud800-\udfff]")
"""A UTF-16 surrogate code point: in a decoded string it is always unpaired (JSON decoding
joins escaped pairs), and neither UTF-8 nor the databases can store it."""

_logger = logging.getLogger("zndraw_joblib_server")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_measure(value: Any) -> tuple[int, int]:
    """The size in bytes of ``value`` encoded as compact JSON, and its nesting depth.

    Both come from one encoding (C code and regular expressions; a Python walk over a
    payload of tens of thousands of objects held the event loop for tens of ms): strings
    are cut out of the text, and the depth is the deepest running count of brackets.

    Raises:
        ValueError: ``value`` holds a non-finite number (NaN, Infinity), which JSON forbids.
        UnicodeEncodeError: A string holds an unpaired UTF-16 surrogate.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    size = len(text.encode())
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return size, max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_size(what: str, value: Any, limit: int, max_depth: int = 64) -> int:
    """Check a JSON value or a text against its limit and what the databases can store.

    Returns:
        Its size: bytes of its compact JSON encoding (texts: characters).

    Raises:
        PayloadTooLarge: It encodes to more than ``limit`` bytes (texts: characters).
        RequestValidationFailed: A JSON value holds NaN or Infinity or nests deeper than
            ``max_depth``; a text holds a NUL character; either holds an unpaired UTF-16
            surrogate (which UTF-8 cannot encode).
    """
    if isinstance(value, str):
        size = len(value)
        if "\x00" in value:
            raise RequestValidationFailed(f"The {what} contains a NUL character.")
        if _SURROGATE.search(value) is not None:
            raise RequestValidationFailed(_surrogate_detail(what))
    else:
        try:
            size, depth = json_measure(value)
        except RecursionError:  # deeper than the encoder goes: far beyond any limit
            size, depth = 0, max_depth + 1
        except UnicodeEncodeError:
            raise RequestValidationFailed(_surrogate_detail(what)) from None
        except ValueError:
            raise RequestValidationFailed(
                f"The {what} contains a non-finite number (NaN or Infinity), which JSON "
                "does not allow."
            ) from None
        if depth > max_depth:
            raise RequestValidationFailed(
                f"The {what} nests arrays and objects more than {max_depth} levels deep."
            )
    if size > limit:
        raise PayloadTooLarge(f"The {what} is {size} bytes; the limit is {limit}.", limit=limit)
    return size


def _surrogate_detail(what: str) -> str:
    return (
        f"The {what} contains an unpaired UTF-16 surrogate (e.g. a lone \\ud800 escape), "
        "which is not valid Unicode text."
    )


def job_named(room_id: str, category: str, name: str) -> Select[tuple[Job]]:
    """SQL: the job of a name, deleted or not (names are unique)."""
    return select(Job).where(Job.room_id == room_id, Job.category == category, Job.name == name)


async def count_rows(session: AsyncSession, entity: Any, where: Sequence[Any]) -> int:
    """How many rows of ``entity`` match ``where`` (a page's total)."""
    stmt = select(func.count()).select_from(entity).where(*where)
    return (await session.execute(stmt)).scalar() or 0


def page_of(stmt: Select[Any], entity: Any, limit: int, offset: int) -> Select[Any]:
    """One page of ``stmt``: newest first (then by id), ``limit`` rows from ``offset``."""
    return stmt.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit).offset(offset)


def remember_name(
    session: AsyncSession, job_id: uuid.UUID, room_id: str, category: str, name: str
) -> str:
    """Cache (in the queue's caches) and return a job's full name (it never changes)."""
    full_name = build_job_name(room_id, category, name)
    caches_of(session).job_names.put(job_id, full_name)
    return full_name


async def job_names(session: AsyncSession, job_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Full names of the given jobs, from the cache or one query."""
    wanted = set(job_ids)
    names = caches_of(session).job_names
    missing = [jid for jid in wanted if jid not in names]
    if missing:
        rows = await session.execute(
            select(Job.id, Job.room_id, Job.category, Job.name).where(Job.id.in_(missing))
        )
        for jid, room, category, name in rows:
            names.put(jid, build_job_name(room, category, name))
    return {jid: names.get(jid, "") for jid in wanted}


_ANSWERED = tuple(field for field in TaskResponse.model_fields if field in FIELDS)
"""The fields of a task's answer that are its columns (all but the job name and position)."""
_ANNOUNCED = tuple(field for field in TaskStatusChanged.model_fields if field in FIELDS)
"""The fields of a task's status event that are its columns."""


def to_response(
    task: TaskRecord,
    job_name: str,
    queue_position: int | None = None,
    *,
    logged: Bounded[tuple[uuid.UUID, str], bool] | None = None,
) -> TaskResponse:
    """Serialise a task row.

    The values come typed from the database (aware UTC timestamps, enums, JSON), so the
    model is built without validating them again. A stored value that cannot be rendered is
    replaced by a marker and logged: once per task and field with ``logged`` (the queue's
    ``QueueCaches.unrenderable``), else every time.
    """
    payload, result = task.payload or {}, task.result
    if payload and not _renders(payload):
        payload = _unrenderable(task.id, "payload", logged)
    if result is not None and not _renders(result):
        result = _unrenderable(task.id, "result", logged)
    # Unpaired surrogates cannot be encoded in the answer: replaced.
    error, message = (
        text and _SURROGATE.sub("\ufffd", text) for text in (task.error, task.message)
    )
    values = {field: getattr(task, field) for field in _ANSWERED}
    values.update(payload=payload, result=result, error=error, message=message)
    return TaskResponse.model_construct(job_name=job_name, queue_position=queue_position, **values)


UNRENDERABLE_KEY = "$unrenderable"
"""The only key of the object that replaces a stored JSON value that cannot be answered."""


def _renders(value: Any) -> bool:
    """Whether a stored JSON value serialises.

    Rows written before the input checks, or around the API, may nest too deeply or hold
    unpaired surrogates.
    """
    try:
        pydantic_core.to_json(value)
    except (pydantic_core.PydanticSerializationError, ValueError, RecursionError):
        return False
    return True


def _unrenderable(
    task_id: uuid.UUID, field: str, logged: Bounded[tuple[uuid.UUID, str], bool] | None
) -> dict[str, str]:
    """The marker answered in place of a stored field that cannot be rendered (logged)."""
    if logged is None or (task_id, field) not in logged:
        if logged is not None:
            logged.put((task_id, field), True)
        _logger.warning("task %s: the stored %s cannot be rendered as JSON", task_id, field)
    return {UNRENDERABLE_KEY: f"The stored {field} cannot be rendered as JSON."}


def status_event(
    task: TaskRecord, job_name: str, at: datetime, queue_position: int | None = None
) -> TaskStatusChanged:
    """The event announcing a task's new state (with its queue position when known)."""
    values = {field: _known(getattr(task, field)) for field in _ANNOUNCED}
    return TaskStatusChanged(
        task_id=task.id, job_name=job_name, at=at, queue_position=queue_position, **values
    )


def _known(value: Any) -> Any:
    """A column of the task, None when the record was read without it (light records)."""
    return None if value is UNLOADED else value


async def announce(
    uow: UnitOfWork,
    changed: Sequence[TaskRecord],
    now: datetime,
    claimable: Iterable[TaskRecord] = (),
    *,
    watched: bool = True,
    positions: Mapping[uuid.UUID, int] | None = None,
) -> dict[uuid.UUID, str]:
    """Queue, for after commit, the wake-ups and status events of changed tasks.

    Args:
        uow: The transaction the tasks changed in.
        changed: Tasks whose state changed (their long-polls wake, an event is emitted).
        now: When the change happened.
        claimable: Tasks among them that became claimable (a waiting claim of their job wakes).
        watched: Whether long-polls may be waiting on the tasks (False for new tasks, whose
            ids nobody knows yet).
        positions: Queue positions of pending tasks among them, already computed (a
            submit's); their events carry them. Nothing is counted here.

    Returns:
        The full names of the tasks' jobs, by job id.
    """
    names = await job_names(uow.session, {t.job_id for t in changed})
    for task in changed:
        if watched:
            uow.wake_all(f"task:{task.id}")
        if uow.record_events:
            position = positions.get(task.id) if positions else None
            uow.events.append(status_event(task, names[task.job_id], now, position))
    for task in claimable:
        uow.wake_some(f"job:{task.job_id}")
    return names


def release_all(
    pairs: Sequence[tuple[TaskRecord, str]], now: datetime, settings: JobLibSettings
) -> list[TaskRecord]:
    """Apply the lost-lease rule to each ``(task, reason)``; return those requeued."""
    return [task for task, reason in pairs if release(task, now, settings, reason)]


def requeue(task: TaskRecord, now: datetime, settings: JobLibSettings) -> None:
    """Put an in-flight task back to pending, claimable after the backoff of its attempt."""
    task.status = TaskStatus.PENDING
    task.worker_id = None
    task.claimed_at = None
    task.started_at = None
    task.lease_expires_at = None
    task.deadline_at = None
    task.progress = None
    task.run_after = now + timedelta(
        seconds=backoff_seconds(
            task.attempt, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds
        )
    )


def release(task: TaskRecord, now: datetime, settings: JobLibSettings, reason: str) -> bool:
    """Apply the lost-lease rule to an in-flight task.

    With attempts left the task goes back to pending after a backoff; otherwise it fails
    with ``reason``. A task whose cancellation was requested is cancelled instead.

    Returns:
        True when the task was requeued (claimable again).
    """
    task.lease_expires_at = None
    task.deadline_at = None
    task.version += 1
    after = after_lost_attempt(task.cancel_requested, task.attempt, task.max_attempts)
    if after == TaskStatus.PENDING:
        requeue(task, now, settings)
        task.error = f"Attempt {task.attempt} lost: {reason}"
        return True
    task.status = after
    task.completed_at = now
    if after == TaskStatus.CANCELLED:
        task.error = task.error or f"Cancelled ({reason})."
    else:
        task.error = f"{reason} (attempt {task.attempt} of {task.max_attempts})."
    return False


def start_task(task: TaskRecord, now: datetime, settings: JobLibSettings) -> None:
    """Start ``task`` at ``now``: a fresh lease, and the deadline of a task with a timeout."""
    task.started_at = now
    task.lease_expires_at = lease_until(now, task.lease_seconds, settings.lease_seconds)
    if task.timeout_seconds is not None:
        task.deadline_at = now + timedelta(seconds=task.timeout_seconds)
