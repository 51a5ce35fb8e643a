"""Long polls: a claim that waits for work, a task read that waits for a change.

Neither holds a database connection while it waits: the request sleeps on the in-process
notifier (fed by PostgreSQL ``NOTIFY`` across processes) and looks again only when woken,
when a delayed task falls due, or every ``claim_poll_interval_seconds`` (so a lost
notification only delays work).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

from zndraw_joblib_core import (
    ClaimNextResponse,
    Forbidden,
    ProblemError,
    ProviderReadRequest,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskResponse,
)
from zndraw_joblib_server.models import Worker, utcnow
from zndraw_joblib_server.services import claim as claim_service
from zndraw_joblib_server.services import tasks as task_service
from zndraw_joblib_server.services.access import Actor, RoomAccess
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import Database, EventSink, UnitOfWork
from zndraw_joblib_server.storage.provider_cache import provider_cache_of, reads_key

__all__ = [
    "FirstClaim",
    "claim",
    "claim_after",
    "claim_request",
    "claim_within",
    "read_task",
]


@dataclass
class FirstClaim:
    """A claim's first look: what it claimed, and what a wait needs to go on from there."""

    tasks: list[TaskResponse]
    job_ids: list[uuid.UUID]
    """The jobs the worker serves (the keys a wait listens to)."""
    due: datetime | None
    """When the next delayed task of those jobs falls due (looked up only to wait)."""
    seq: int
    """The notifier's count before the look: a later notification may have been missed."""


async def _first_claim(
    uow: UnitOfWork,
    who: claim_service.ClaimOffer,
    settings: JobLibSettings,
    *,
    seq: int,
    waits: bool,
    likely: bool = False,
) -> FirstClaim:
    """Claim for ``who`` in ``uow``; with ``waits`` and nothing claimed, also when to look again.

    Raises:
        WorkerNotFound: No such worker.
        Forbidden: The worker is not the caller's.
    """
    tasks, job_ids = await claim_service.claim_tasks(
        uow, who.actor, who.worker_id, who.max_tasks, settings, likely=likely, start=who.start
    )
    due = await claim_service.next_due(uow.session, job_ids) if waits and not tasks else None
    return FirstClaim(tasks, job_ids, due, seq)


async def claim(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    worker_id: uuid.UUID,
    max_tasks: int,
    wait: float | None,
    settings: JobLibSettings,
    *,
    start: bool = False,
    interrupt: Sequence[str] = (),
    since: int | None = None,
    first: FirstClaim | None = None,
) -> list[TaskResponse]:
    """``POST /tasks/claim``: claim at once; with ``wait`` (seconds), wait for work first.

    ``start``: the tasks are started as they are claimed. A notification of one of the
    ``interrupt`` keys after the notifier's count was ``since`` (default: now) ends the wait
    with what was claimed (e.g. a provider read). ``first``: the first look was made
    already (in an update's write); the claim goes on from it.

    Raises:
        WorkerNotFound: No such worker.
        Forbidden: The worker is not the caller's.
    """
    who = claim_service.ClaimOffer(actor, worker_id, max_tasks, start)
    if first is None:
        seq = db.notifier.seq if since is None else since
        async with db.write(sink, standalone=True) as uow:
            first = await _first_claim(uow, who, settings, seq=seq, waits=wait is not None)
    if first.tasks or wait is None:
        return first.tasks
    return await _wait_for_work(db, sink, who, settings, first, wait, list(interrupt))


async def claim_request(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    request: TaskClaimRequest,
    wait: float | None,
    settings: JobLibSettings,
    first: FirstClaim | None = None,
) -> TaskClaimResponse:
    """A claim as its body asks: tasks, and the reads waiting for the worker's providers.

    ``start`` starts the tasks; with ``providers`` the reads waiting for the worker's
    providers are listed too, and a read arriving while the claim waits ends the wait.
    ``first``: as for :func:`claim`.

    Raises:
        WorkerNotFound: No such worker.
        Forbidden: The worker is not the caller's.
    """
    worker_id, providers = request.worker_id, request.providers
    since = db.notifier.seq  # before the reads are taken: a read queued after wakes the wait
    reads = await _reads(db, actor, worker_id) if providers else []
    tasks = await claim(
        db,
        sink,
        actor,
        worker_id,
        request.max_tasks,
        None if reads else wait,
        settings,
        start=request.start,
        interrupt=[reads_key(worker_id)] if providers else (),
        since=since,
        first=first,
    )
    if providers and not reads:
        reads = await _reads(db, actor, worker_id)
    return TaskClaimResponse(task=tasks[0] if tasks else None, tasks=tasks, provider_reads=reads)


async def _reads(db: Database, actor: Actor, worker_id: uuid.UUID) -> list[ProviderReadRequest]:
    """The reads waiting for the caller's worker's providers, each handed out once."""
    async with db.read() as session:
        owner = await session.get(Worker, worker_id)
    if owner is None:
        return []  # the claim answers the missing worker
    if owner.user_id != actor.id:
        raise Forbidden("This worker belongs to a different user.")
    reads = await provider_cache_of(db).take(worker_id)
    return [ProviderReadRequest(**asdict(read)) for read in reads]


async def claim_within(
    uow: UnitOfWork,
    actor: Actor,
    request: TaskClaimRequest | None,
    settings: JobLibSettings,
    *,
    seq: int,
    waits: bool,
) -> FirstClaim | ClaimNextResponse | None:
    """The first look of ``claim_next`` in the update's unit of work (None without one).

    In a transaction the update and the claim commit together (one commit); outside one
    (PostgreSQL's hot path) each statement commits alone, as a claim of its own would. A
    refused claim has written nothing (it fails on the worker's lookup), so the update still
    stands: it is answered with the problem. ``seq``: the notifier's count before the
    update; ``waits``: the update asked to wait for work.
    """
    if request is None:
        return None
    try:
        who = claim_service.ClaimOffer(actor, request.worker_id, request.max_tasks, request.start)
        return await _first_claim(uow, who, settings, seq=seq, waits=waits)
    except ProblemError as exc:
        return ClaimNextResponse(problem=exc.to_problem())


async def claim_after(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    request: TaskClaimRequest | None,
    wait: float | None,
    settings: JobLibSettings,
    first: FirstClaim | ClaimNextResponse | None,
) -> ClaimNextResponse | None:
    """The claim an update answers with, going on from :func:`claim_within`'s first look.

    Waits for work with ``wait``, and lists provider reads as the request asks. A refused
    claim does not undo the update: the answer carries the problem instead of raising it.
    """
    if request is None:
        return None
    if isinstance(first, ClaimNextResponse):
        return first
    try:
        answer = await claim_request(db, sink, actor, request, wait, settings, first)
    except ProblemError as exc:
        return ClaimNextResponse(problem=exc.to_problem())
    return ClaimNextResponse(**dict(answer))


async def _wait_for_work(
    db: Database,
    sink: EventSink | None,
    who: claim_service.ClaimOffer,
    settings: JobLibSettings,
    first: FirstClaim,
    wait: float,
    interrupt: list[str],
) -> list[TaskResponse]:
    """Hold a claim that found nothing until a task of its jobs arrives or ``wait`` s pass.

    While a woken claim is running, the subscription stays fired, so the next submit
    wakes another waiter rather than this busy one; a submit this claim may have missed
    makes it look again at once. With ``claim_handoff`` a submit in this process claims
    for the waiting request inside its own transaction (``services.claim.hand_off``),
    and the request answers with what it was handed. A notification of an ``interrupt``
    key (see :func:`claim`) ends the wait early.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    tasks: list[TaskResponse] = []
    due, seq = first.due, first.seq
    job_keys = [f"job:{j}" for j in first.job_ids]
    watched = [f"worker:{who.worker_id}", *job_keys, *interrupt]
    async with db.notifier.subscribe(watched, who if settings.claim_handoff else None) as sub:
        # A submit may have committed between the empty claim and the subscription.
        woken = db.notifier.notified_since(watched, seq)
        while not tasks:
            if interrupt and db.notifier.notified_since(interrupt, seq):
                break
            remaining = deadline - loop.time()
            if not woken:
                if remaining <= 0:
                    break
                pause = min(remaining, settings.claim_poll_interval_seconds)
                if due is not None:
                    pause = min(pause, max((due - utcnow()).total_seconds(), 0) + 0.001)
                woken = await sub.wait(pause, consume=False)
                tasks = await sub.take_handed()  # a submit in this process claimed for us
                if tasks:
                    break
                if not woken and due is None and pause >= remaining:
                    break  # nothing arrived and nothing fell due: no need to look
            mark = db.notifier.seq
            async with db.write(sink, standalone=True) as uow:
                again = await _first_claim(uow, who, settings, seq=mark, waits=True, likely=woken)
            tasks, due = again.tasks, again.due
            sub.clear()
            # Not merely "the worker's key was notified": on PostgreSQL this process
            # also hears its own notifications again (LISTEN echoes them), possibly late.
            if not tasks and set(again.job_ids) != set(first.job_ids):
                break  # the worker now serves other jobs: let the client ask again
            woken = not tasks and db.notifier.notified_since(job_keys, mark)
    return tasks


async def read_task(
    db: Database,
    actor: Actor,
    access: RoomAccess,
    task_id: uuid.UUID,
    wait: float | None,
    wait_for: Literal["terminal", "change"],
    known: int | None,
) -> tuple[TaskResponse, bool]:
    """``GET /tasks/{id}``: the task; with ``wait``, once it is terminal or has changed.

    Args:
        db: The database.
        actor: The caller.
        access: The room access policy.
        task_id: The task.
        wait: Seconds to wait at most (None: answer at once).
        wait_for: Wake when the task is terminal, or on any change.
        known: The version the caller already has (``If-None-Match``); a task at
            another version is answered at once when waiting for a change.

    Returns:
        The task and whether the request waited.

    Raises:
        TaskNotFound: No such task, or not visible to the caller.
    """
    async with db.notifier.subscribe([f"task:{task_id}"]) as sub:
        async with db.read() as session:
            task, version = await task_service.get_task(session, actor, access, task_id)
        changed = wait_for == "change" and known is not None and known != version
        if wait is None or task.status.is_terminal or changed:
            return task, False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (remaining := deadline - loop.time()) > 0:
            if not await sub.wait(remaining):
                break
            async with db.read() as session:
                task, now_version = await task_service.get_task(session, actor, access, task_id)
            if task.status.is_terminal or (wait_for == "change" and now_version != version):
                break
    return task, True
