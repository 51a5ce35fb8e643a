"""Task states and the transitions a client may request."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE_STATUSES",
    "CLIENT_TRANSITIONS",
    "TERMINAL_STATUSES",
    "Category",
    "TaskStatus",
    "can_transition",
]


class TaskStatus(StrEnum):
    """The state of a task; the wire value is the lower-case name."""

    PENDING = "pending"
    CLAIMED = "claimed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether no further transition is possible from this state."""
        return self in TERMINAL_STATUSES


class Category(StrEnum):
    """The default job categories (a server may allow others through its settings)."""

    MODIFIER = "modifiers"
    SELECTION = "selections"
    ANALYSIS = "analysis"


TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)
"""States a task never leaves."""

ACTIVE_STATUSES: frozenset[TaskStatus] = frozenset({TaskStatus.CLAIMED, TaskStatus.RUNNING})
"""States in which a worker holds the task (and its lease)."""

CLIENT_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.CLAIMED, TaskStatus.CANCELLED}),
    TaskStatus.CLAIMED: frozenset({TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}
"""Transitions accepted by ``PATCH /tasks/{id}``: ``{from: {to, ...}}``.

``pending -> claimed`` through PATCH is reserved to superusers; workers claim through
``POST /tasks/claim``.
"""


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    """Return whether ``PATCH /tasks/{id}`` may move a task from ``current`` to ``target``.

    Args:
        current: The task's state now.
        target: The requested state.

    Returns:
        True when the transition table allows it.
    """
    return target in CLIENT_TRANSITIONS[current]
