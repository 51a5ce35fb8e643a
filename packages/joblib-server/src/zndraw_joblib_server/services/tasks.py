"""Submitting, reading, listing and cancelling tasks."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    INTERNAL_ROOM,
    Forbidden,
    IdempotencyKeyReused,
    InvalidPayload,
    InvalidTaskTransition,
    Page,
    ProblemError,
    ServiceUnavailable,
    TaskAvailable,
    TaskNotFound,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
)
from zndraw_joblib_server.domain.rules import By, Effect, effect_of
from zndraw_joblib_server.models import Task, new_task_row, utcnow
from zndraw_joblib_server.services.access import Actor, RoomAccess, may_read
from zndraw_joblib_server.services.claim import hand_off
from zndraw_joblib_server.services.common import (
    announce,
    check_size,
    count_rows,
    job_names,
    page_of,
    to_response,
    validate_room,
)
from zndraw_joblib_server.services.internal import require_executor
from zndraw_joblib_server.services.jobs import ActiveJob, forget_job, resolve_job
from zndraw_joblib_server.services.liveness import check_live_workers
from zndraw_joblib_server.services.quotas import check_pending_quota
from zndraw_joblib_server.services.validation import (
    Compiled,
    Failure,
    compiled_for,
    first_refused,
    validate_isolated,
)
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import Database, EventSink, Store, UnitOfWork
from zndraw_joblib_server.storage.caches import SizedCache, caches_of
from zndraw_joblib_server.storage.positions import new_position, queue_positions
from zndraw_joblib_server.storage.records import (
    TASKS,
    TaskRecord,
    fetch,
    insert_tasks,
    load_one,
    save,
)

__all__ = [
    "JobChanged",
    "PayloadsUnchecked",
    "batch_keys",
    "cancel_record",
    "cancel_task",
    "check_cancel",
    "get_task",
    "list_job_tasks",
    "list_room_tasks",
    "respond",
    "respond_all",
    "scoped_key",
    "submit_batch",
    "submit_one",
    "submit_tasks",
]

MAX_IDEMPOTENCY_KEY = 255


class JobChanged(Exception):
    """A single submit's insert found its job changed since the (cached) look-up.

    Nothing was written; :func:`_submit` runs the submit again with a fresh look-up.
    """


class PayloadsUnchecked(Exception):
    """The payloads need the validation process; raised before anything is written.

    :func:`_submit` runs the validation process outside its transaction (so a slow
    validation holds no lock) and submits again with the schema's text as the token.
    """

    def __init__(self, compiled: Compiled) -> None:
        super().__init__("payloads need isolated validation")
        self.compiled = compiled


def _at_item(exc: ProblemError, index: int, batch: bool) -> ProblemError:
    """``exc``, in a batch told about entry ``index`` (its detail and ``item``)."""
    if batch:
        exc.detail = f"items[{index}]: {exc.detail}"
        exc.extras["item"] = index
    return exc


def _refusal(failure: Failure, batch: bool) -> ProblemError:
    index, listed, count = failure
    exc = InvalidPayload(
        f"The payload does not match the job's schema ({count} error(s)"
        + (f", the first {len(listed)} listed" if count > len(listed) else "")
        + ").",
        errors=listed,
        error_count=count,
    )
    return _at_item(exc, index, batch)


async def _check_payloads(
    bodies: Sequence[TaskSubmitRequest],
    schema: dict[str, Any],
    settings: JobLibSettings,
    checked: str | None,
    cache: SizedCache,
) -> None:
    batch = len(bodies) > 1
    total = 0
    for index, body in enumerate(bodies):
        try:
            total += check_size(
                "payload", body.payload, settings.max_payload_bytes, settings.max_json_depth
            )
        except ProblemError as exc:
            _at_item(exc, index, batch)
            raise
    if not schema:
        return
    compiled = await compiled_for(schema, settings, cache)
    if checked == compiled.text:
        return
    payloads = [body.payload for body in bodies]
    if not compiled.inline(total, settings):
        raise PayloadsUnchecked(compiled)
    failure = first_refused(compiled.validator, payloads, settings.max_payload_errors)
    if failure is not None:
        raise _refusal(failure, batch)


async def respond_all(session: AsyncSession, tasks: Sequence[TaskRecord]) -> list[TaskResponse]:
    """Serialise tasks with their job names and queue positions (one query each at most)."""
    names = await job_names(session, {t.job_id for t in tasks})
    positions = await queue_positions(session, tasks)
    logged = caches_of(session).unrenderable
    return [to_response(t, names[t.job_id], positions.get(t.id), logged=logged) for t in tasks]


async def respond(session: AsyncSession, task: TaskRecord) -> TaskResponse:
    """Serialise one task with its job name and queue position."""
    return (await respond_all(session, [task]))[0]


async def _new_positions(
    session: AsyncSession, tasks: list[TaskRecord], store: Store
) -> dict[uuid.UUID, int]:
    """Queue positions of tasks inserted together (one count per priority and due time).

    Within a group of the same priority and due time they queue in the order given (their
    ``created_at`` grows by a microsecond each), behind the group's first.
    """
    last: dict[tuple[int, datetime], int] = {}
    positions: dict[uuid.UUID, int] = {}
    for task in tasks:
        group = (task.priority, task.run_after)
        if group in last:
            last[group] += 1
        else:
            last[group] = await new_position(session, task, store)
        positions[task.id] = last[group]
    return positions


async def submit_tasks(
    uow: UnitOfWork,
    actor: Actor,
    room_id: str,
    job_name: str,
    bodies: Sequence[TaskSubmitRequest],
    keys: Sequence[str] | None,
    settings: JobLibSettings,
    checked: str | None = None,
    *,
    probe: str | None = None,
) -> tuple[list[TaskResponse], bool]:
    """Create pending tasks for a job visible from ``room_id`` (access already checked).

    All or nothing: a refused entry raises, and nothing is created. With ``keys`` (one
    idempotency key per entry, scoped here to the submitter), a repeat of the same request
    returns the tasks created by the first submit; the same keys with another request
    raise :class:`IdempotencyKeyReused`. ``probe`` (batches): the key an entry past the
    end would have, so a repeat with fewer entries is told apart. Payloads too costly to
    validate here raise :class:`PayloadsUnchecked` before anything is written; run the
    submit through :func:`_submit`, which passes ``checked``.

    Returns:
        The tasks, and False when they already existed (an idempotent repeat).
    """
    session = uow.session
    single = len(bodies) == 1  # its insert checks the job: it may use an earlier look-up
    job = await resolve_job(session, room_id, job_name, cached=single)
    if job.room_id == INTERNAL_ROOM:
        await require_executor(session, job.id, job.full_name)
    await _check_payloads(bodies, job.schema_, settings, checked, caches_of(session).schemas)
    # One task: one statement inserts it, skips a taken idempotency key and, on PostgreSQL,
    # answers its queue position (instead of a look-up, savepoint, insert, release and count).
    if keys is not None:
        keys = [scoped_key(actor, key) for key in keys]
    if keys is not None and (not single or probe is not None):
        extra = [] if probe is None else [scoped_key(actor, probe)]
        found = await _by_keys(session, job.id, room_id, [*keys, *extra])
        if found:
            return await _repeat(session, found, bodies, keys, settings), False
    try:
        await check_live_workers(session, job.id, job.room_id, settings)
        await check_pending_quota(session, actor, len(bodies), settings)
    except ProblemError:
        if keys is not None and single:  # a repeat is answered even at the cap or unserved
            found = await _by_keys(session, job.id, room_id, keys)
            if found:
                return await _repeat(session, found, bodies, keys, settings), False
        raise
    now = utcnow()
    # Entries of one batch are created a microsecond apart, so they keep their order in the
    # queue and their positions stay distinct.
    rows = [
        new_task_row(
            id=uuid.uuid4(),
            job_id=job.id,
            room_id=room_id,
            created_by_id=actor.id,
            payload=body.payload,
            priority=body.priority,
            run_after=max(body.run_after, now) if body.run_after else now,
            created_at=now + timedelta(microseconds=i),
            max_attempts=body.max_attempts or settings.default_max_attempts,
            timeout_seconds=body.timeout_seconds,
            lease_seconds=body.lease_seconds,
            idempotency_key=None if keys is None else keys[i],
        )
        for i, body in enumerate(bodies)
    ]
    earlier, positions = await _insert(uow, job, room_id, rows, keys)
    if earlier is not None:  # an earlier submit holds the keys: a repeat
        return await _repeat(session, earlier, bodies, keys or [], settings), False
    tasks = [TaskRecord(row) for row in rows]
    if positions is None:
        positions = await _new_positions(session, tasks, uow.store)
    # The events carry the positions the answer does (counted for it anyway).
    await announce(uow, tasks, now, claimable=tasks, watched=False, positions=positions)
    name = job.full_name
    if uow.record_events:
        uow.events.extend(
            TaskAvailable(task_id=t.id, job_name=name, room_id=room_id) for t in tasks
        )
    # Answered as submitted (pending, with its position) even when a waiting claim takes it.
    await hand_off(uow, job.id, {t.id for t in tasks if t.run_after <= now}, settings)
    return [to_response(t, name, positions.get(t.id)) for t in tasks], True


async def submit_one(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    room_id: str,
    job_name: str,
    body: TaskSubmitRequest,
    idempotency_key: str | None,
    settings: JobLibSettings,
) -> tuple[TaskResponse, bool]:
    """``POST /rooms/{room}/tasks/{job}``: one task, in a write of its own.

    Its statements are each safe alone, so the store may run them outside a transaction
    (PostgreSQL: one insert). A claim waiting in this process is then woken after the insert
    and claims for itself, in fewer round trips than a hand-off inside the submit's
    transaction (SQLite still hands it over).

    Returns:
        The task, and False when an earlier submit with the same idempotency key was found.
    """
    keys = None if idempotency_key is None else [idempotency_key]
    tasks, created = await _submit(
        db, sink, actor, room_id, job_name, [body], keys, settings, standalone=True
    )
    return tasks[0], created


async def submit_batch(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    room_id: str,
    job_name: str,
    bodies: Sequence[TaskSubmitRequest],
    idempotency_key: str | None,
    settings: JobLibSettings,
) -> tuple[list[TaskResponse], bool]:
    """``POST /rooms/{room}/jobs/{job}/tasks``: :func:`submit_tasks` in one transaction.

    ``idempotency_key`` is the request's header (see :func:`batch_keys`).
    """
    keys = batch_keys(idempotency_key, len(bodies))
    entries, probe = (None, None) if keys is None else (keys[:-1], keys[-1])
    return await _submit(
        db, sink, actor, room_id, job_name, bodies, entries, settings, probe=probe
    )


async def _submit(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    room_id: str,
    job_name: str,
    bodies: Sequence[TaskSubmitRequest],
    keys: Sequence[str] | None,
    settings: JobLibSettings,
    *,
    standalone: bool = False,
    probe: str | None = None,
) -> tuple[list[TaskResponse], bool]:
    """:func:`submit_tasks` in a write, validating costly payloads between attempts.

    The first attempt raises :class:`PayloadsUnchecked` for payloads too costly to check
    inline; they are validated in the validation process outside any transaction, and the
    submit runs again with the schema's text telling it they were checked.

    Raises:
        InvalidPayload: A payload does not match, or validating it took too long.
    """
    checked: str | None = None
    for _ in range(3):
        try:
            async with db.write(sink, standalone=standalone) as uow:
                return await submit_tasks(
                    uow, actor, room_id, job_name, bodies, keys, settings, checked, probe=probe
                )
        except JobChanged:
            continue
        except PayloadsUnchecked as unchecked:
            payloads = [body.payload for body in bodies]
            failure = await validate_isolated(unchecked.compiled, payloads, settings)
            if failure is not None:
                raise _refusal(failure, len(bodies) > 1) from None
            checked = unchecked.compiled.text
    raise ServiceUnavailable(  # pragma: no cover - the job changed twice meanwhile
        "The job changed during the submit; retry.", headers={"Retry-After": "1"}
    )


def scoped_key(actor: Actor, key: str) -> str:
    """The stored form of an idempotency key: scoped to its submitter.

    Two users sending the same key never see each other's tasks. Keys too long for the
    column with the user's id in front are hashed.
    """
    return _fitted(f"{actor.id.hex}:{key}")


def _same_request(task: TaskRecord, body: TaskSubmitRequest, settings: JobLibSettings) -> bool:
    """Whether ``body`` asks for what ``task`` was created from.

    Compared: the payload, priority, max attempts, timeout and lease. ``run_after`` is not:
    the task keeps the effective time (never before its submit, pushed back by retries).
    """
    return (
        task.payload == body.payload
        and task.priority == body.priority
        and task.max_attempts == (body.max_attempts or settings.default_max_attempts)
        and task.timeout_seconds == body.timeout_seconds
        and task.lease_seconds == body.lease_seconds
    )


async def _repeat(
    session: AsyncSession,
    found: list[TaskRecord],
    bodies: Sequence[TaskSubmitRequest],
    keys: Sequence[str],
    settings: JobLibSettings,
) -> list[TaskResponse]:
    """Answer an idempotent repeat with the tasks the first submit created.

    Raises:
        IdempotencyKeyReused: The key was used for a different request (other entries,
            payloads or options).
    """
    by_key = {task.idempotency_key: task for task in found}
    if len(found) != len(bodies) or any(
        key not in by_key or not _same_request(by_key[key], body, settings)
        for key, body in zip(keys, bodies, strict=True)
    ):
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different request (payload, "
            "options or number of entries); use a new key for a new request."
        )
    return await respond_all(session, found)


def batch_keys(idempotency_key: str | None, count: int) -> list[str] | None:
    """One idempotency key per entry of a batch, derived from the request's key.

    One more than ``count``: the last is the probe of :func:`submit_tasks`.
    """
    if not idempotency_key:
        return None
    return [_fitted(f"{idempotency_key}#{i}") for i in range(count + 1)]


async def _insert(
    uow: UnitOfWork,
    job: ActiveJob,
    room_id: str,
    rows: list[dict[str, Any]],
    keys: Sequence[str] | None,
) -> tuple[list[TaskRecord] | None, dict[uuid.UUID, int] | None]:
    """Insert the rows: ``(found, positions)``.

    ``found``: the tasks an earlier submit created with the same keys (nothing inserted),
    else None. ``positions``: the new task's queue position when the insert answered it.

    Raises:
        JobChanged: One row, not inserted: its job changed since ``job`` was looked up.
    """
    session = uow.session
    if len(rows) == 1:
        inserted, position = await uow.store.insert_one(
            session, rows[0], job.updated_at, keyed=keys is not None
        )
        if inserted:
            return None, None if position is None else {rows[0]["id"]: position}
        found = await _by_keys(session, job.id, room_id, keys) if keys is not None else []
        if found:  # an earlier submit holds the key: a repeat
            return found, None
        forget_job(session, job)  # changed, or the row holding the key is gone again
        raise JobChanged
    if keys is None:
        await insert_tasks(session, rows)
        return None, None
    try:
        async with session.begin_nested():
            await session.connection()  # emits the SAVEPOINT before the insert
            await insert_tasks(session, rows)
    except IntegrityError:  # the same key submitted concurrently by another process
        found = await _by_keys(session, job.id, room_id, keys)
        if not found:
            raise
        return found, None
    return None, None


async def _by_keys(
    session: AsyncSession, job_id: uuid.UUID, room_id: str, keys: Sequence[str]
) -> list[TaskRecord]:
    """The tasks created with ``keys`` for the job and room, in the order of ``keys``."""
    of_job = select(TASKS).where(TASKS.c.job_id == job_id, TASKS.c.room_id == room_id)
    found = await fetch(session, of_job.where(TASKS.c.idempotency_key.in_(list(keys))))
    order = {key: i for i, key in enumerate(keys)}
    return sorted(found, key=lambda t: order.get(t.idempotency_key or "", 0))


def idempotency_key_of(raw: str | None) -> str | None:
    """Normalise an ``Idempotency-Key`` header (long keys are hashed to fit the column)."""
    return _fitted(raw) if raw else None


def _fitted(key: str) -> str:
    """``key``, or its hash when it is too long for the column."""
    if len(key) > MAX_IDEMPOTENCY_KEY:
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


async def get_task(
    session: AsyncSession, actor: Actor, access: RoomAccess, task_id: uuid.UUID
) -> tuple[TaskResponse, int]:
    """A task the caller may read, and its version (for change long-polls)."""
    task = await load_one(session, task_id)
    if not await may_read(access, actor, task.room_id):
        raise TaskNotFound(f"Task {task_id} not found.")
    return await respond(session, task), task.version


def cancel_record(task: TaskRecord, now: datetime) -> bool:
    """Cancel a pending task, or ask the worker holding it to stop; False if nothing changed.

    Raises:
        InvalidTaskTransition: The task is already finished.
    """
    effect = effect_of(task.status, TaskStatus.CANCELLED, By.SUBMITTER)
    if effect is None:  # finished already (the transition table has no such move)
        raise InvalidTaskTransition(f"Cannot cancel a task that is already '{task.status.value}'.")
    if effect == Effect.CANCEL:
        task.status = TaskStatus.CANCELLED
        task.completed_at = now
        task.error = task.error or "Cancelled before it was claimed."
    elif not task.cancel_requested:
        task.cancel_requested = True
        task.cancel_requested_at = now
    else:
        return False
    task.version += 1
    return True


async def check_cancel(actor: Actor, access: RoomAccess, task: TaskRecord) -> None:
    """Raise unless the caller may cancel ``task`` (404 when it may not even read it)."""
    if not await may_read(access, actor, task.room_id):
        raise TaskNotFound(f"Task {task.id} not found.")
    if task.created_by_id != actor.id and not actor.is_superuser:
        raise Forbidden("Only the submitter or a superuser may cancel this task.")


async def cancel_task(
    uow: UnitOfWork, actor: Actor, access: RoomAccess, task_id: uuid.UUID
) -> TaskResponse:
    """Cancel a pending task now, or ask the worker holding it to stop."""
    session = uow.session
    task = await load_one(session, task_id, for_update=True)
    await check_cancel(actor, access, task)
    now = utcnow()
    if cancel_record(task, now):
        await save(session, [task])
        await announce(uow, [task], now)
    return await respond(session, task)


async def _list(
    session: AsyncSession,
    where: list[Any],
    status: TaskStatus | None,
    limit: int,
    offset: int,
) -> Page[TaskResponse]:
    if status is not None:
        where = [*where, Task.status == status]
    total = await count_rows(session, Task, where)
    tasks: list[TaskRecord] = []
    if limit:
        tasks = await fetch(session, page_of(select(TASKS).where(*where), Task, limit, offset))
    items = await respond_all(session, tasks)
    return Page[TaskResponse](items=items, total=total, limit=limit, offset=offset)


async def list_room_tasks(
    session: AsyncSession,
    room_id: str,
    status: TaskStatus | None,
    limit: int,
    offset: int,
) -> Page[TaskResponse]:
    """Tasks submitted from ``room_id``, newest first."""
    validate_room(room_id)
    return await _list(session, [Task.room_id == room_id], status, limit, offset)


async def list_job_tasks(
    session: AsyncSession,
    room_id: str,
    job_name: str,
    status: TaskStatus | None,
    limit: int,
    offset: int,
) -> Page[TaskResponse]:
    """Tasks of one job submitted from ``room_id``, newest first."""
    job = await resolve_job(session, room_id, job_name)
    return await _list(
        session, [Task.job_id == job.id, Task.room_id == room_id], status, limit, offset
    )
