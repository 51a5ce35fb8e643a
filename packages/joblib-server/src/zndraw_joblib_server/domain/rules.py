"""The queue's rules written once, as plain values and functions (no SQL, no I/O).

The SQL elsewhere encodes these rules for the database (the claim index and ``ORDER BY``,
the one-statement report's lease); it is built from the values here and tested against
the functions here (``tests/test_rules.py``), so the encodings cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from zndraw_joblib_core import TaskStatus

__all__ = [
    "CLAIM_ORDER",
    "TRANSITIONS",
    "By",
    "Effect",
    "Transition",
    "after_lost_attempt",
    "backoff_seconds",
    "beat_due",
    "claim_key",
    "effect_of",
    "lease_expired",
    "lease_seconds",
    "lease_until",
]

CLAIM_ORDER: tuple[tuple[str, bool], ...] = (
    ("priority", True),
    ("run_after", False),
    ("created_at", False),
)
"""The order pending tasks are claimed in: ``(column, descending)``, most significant first.

Highest priority first, then the earliest due time, then the oldest. Descending columns
are numbers (:func:`claim_key` negates them).
"""


def claim_key(task: Any) -> tuple[Any, ...]:
    """Sort key of a task in :data:`CLAIM_ORDER` (smaller is claimed first)."""
    return tuple(
        -getattr(task, name) if descending else getattr(task, name)
        for name, descending in CLAIM_ORDER
    )


def lease_seconds(own: float | None, default: float) -> float:
    """A task's lease: its own when set, else the queue's default.

    The API refuses a lease of 0 (``lease_seconds > 0``); a 0 stored by other means counts
    as unset, so no task is handed out with a lease that is already lost.
    """
    return own if own else default


def lease_until(now: datetime, own: float | None, default: float) -> datetime:
    """When a lease taken or renewed at ``now`` expires (see :func:`lease_seconds`)."""
    return now + timedelta(seconds=lease_seconds(own, default))


def lease_expired(expires_at: datetime | None, now: datetime) -> bool:
    """Whether a lease ending at ``expires_at`` is lost at ``now``.

    A lease is held up to and including its end instant and lost strictly after it; a task
    without a lease end (None) never loses it by time. So a lease of 0 s taken at ``now`` is
    held at ``now`` and lost a microsecond later.
    """
    return expires_at is not None and expires_at < now


BEAT_RESOLUTION_S = 1.0
"""The most a claim may leave a worker's ``last_heartbeat`` behind (see :func:`beat_due`)."""


def beat_due(last_beat: float | None, now: float, worker_timeout: float) -> bool:
    """Whether a claim at ``now`` (monotonic seconds) must write the worker's heartbeat.

    Claiming is a sign of life. A claim that comes soon after the worker's last written beat
    (``last_beat``; None: none known) may leave it: within a tenth of the worker timeout
    (at most :data:`BEAT_RESOLUTION_S`), so a worker that keeps claiming never comes near
    its timeout, and a busy worker's claims do not each rewrite its row.
    """
    return last_beat is None or now - last_beat >= min(BEAT_RESOLUTION_S, worker_timeout / 10)


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay before the next attempt after attempt ``attempt`` was lost or failed.

    ``base`` after the first attempt, doubling with each further one, never above ``cap``.
    """
    return min(base * 2.0 ** max(attempt - 1, 0), cap)


def after_lost_attempt(cancel_requested: bool, attempt: int, max_attempts: int) -> TaskStatus:
    """Where an attempt that ended without a result (lease lost, failure with retry) leads.

    Cancelled when the submitter asked to stop, back to pending while attempts remain
    (after :func:`backoff_seconds`), else failed for good.
    """
    if cancel_requested:
        return TaskStatus.CANCELLED
    if attempt < max_attempts:
        return TaskStatus.PENDING
    return TaskStatus.FAILED


class By(StrEnum):
    """Who moves a task."""

    CLAIM = "claim"
    """``POST /tasks/claim`` (for a worker of the caller)."""
    WORKER = "worker"
    """``PATCH`` by the owner of the worker holding the task (fenced when it names it)."""
    SUPERUSER = "superuser"
    """``PATCH`` by a superuser: what a worker may, and a few moves of pending tasks."""
    SUBMITTER = "submitter"
    """``DELETE``/cancel by the task's submitter (or a superuser)."""
    SWEEPER = "sweeper"
    """The sweeper, for a lost lease, a timeout or an unacknowledged cancellation."""


class Effect(StrEnum):
    """What a transition does to the task besides its status."""

    CLAIM = "claim"
    """One more attempt, ``claimed_at`` now, a new lease."""
    START = "start"
    """``started_at`` now, the lease renewed, the deadline set from the timeout."""
    PROGRESS = "progress"
    """Only progress and message change (the status stays)."""
    FINISH = "finish"
    """Terminal: ``completed_at`` now, no lease, no deadline; result or error recorded."""
    FAIL = "fail"
    """As :attr:`FINISH` when no retry is asked; with retry, :func:`after_lost_attempt`
    decides: cancelled, requeued after the backoff, or failed for good."""
    CANCEL = "cancel"
    """Terminal at once (a task nobody holds)."""
    REQUEST_CANCEL = "request-cancel"
    """The status stays; the worker holding it is asked to stop (``cancel_requested``)."""
    RELEASE = "release"
    """The attempt is lost: :func:`after_lost_attempt` decides what follows."""


@dataclass(frozen=True)
class Transition:
    """One row of :data:`TRANSITIONS`: ``source -> target`` by ``by`` does ``effect``.

    ``target`` None is a progress report (the status does not change).
    """

    source: frozenset[TaskStatus]
    target: TaskStatus | None
    by: frozenset[By]
    effect: Effect


_PENDING = frozenset({TaskStatus.PENDING})
_ACTIVE = frozenset({TaskStatus.CLAIMED, TaskStatus.RUNNING})
_PATCH = frozenset({By.WORKER, By.SUPERUSER})

TRANSITIONS: tuple[Transition, ...] = (
    Transition(_PENDING, TaskStatus.CLAIMED, frozenset({By.CLAIM, By.SUPERUSER}), Effect.CLAIM),
    Transition(_PENDING, TaskStatus.CANCELLED, frozenset({By.SUPERUSER}), Effect.CANCEL),
    Transition(_PENDING, TaskStatus.CANCELLED, frozenset({By.SUBMITTER}), Effect.CANCEL),
    Transition(frozenset({TaskStatus.CLAIMED}), TaskStatus.RUNNING, _PATCH, Effect.START),
    Transition(frozenset({TaskStatus.RUNNING}), None, _PATCH, Effect.PROGRESS),
    Transition(frozenset({TaskStatus.RUNNING}), TaskStatus.COMPLETED, _PATCH, Effect.FINISH),
    Transition(_ACTIVE, TaskStatus.FAILED, _PATCH, Effect.FAIL),
    Transition(_ACTIVE, TaskStatus.CANCELLED, _PATCH, Effect.FINISH),
    Transition(_ACTIVE, TaskStatus.CANCELLED, frozenset({By.SUBMITTER}), Effect.REQUEST_CANCEL),
    Transition(_ACTIVE, TaskStatus.PENDING, frozenset({By.SWEEPER}), Effect.RELEASE),
)
"""Every move a task can make; anything not listed is refused. Terminal states have no row.

The moves ``PATCH /tasks/{id}`` accepts (by a worker or a superuser) are the core's
:data:`~zndraw_joblib_core.CLIENT_TRANSITIONS`; a test holds the two equal. The SQL that
moves tasks (the claim statement, the one-statement report, the sweeper's selection) is
tested against this table and the functions above on both databases.
"""

_BY_MOVE: dict[tuple[TaskStatus, TaskStatus | None, By], Effect] = {
    (source, row.target, by): row.effect
    for row in TRANSITIONS
    for source in row.source
    for by in row.by
}


def effect_of(source: TaskStatus, target: TaskStatus | None, by: By) -> Effect | None:
    """The effect of moving a task from ``source`` to ``target`` by ``by`` (None: refused)."""
    return _BY_MOVE.get((source, target, by))
