"""The queue's rules written once, as plain values and functions (no SQL, no I/O).

The SQL elsewhere encodes these rules for the database (the claim index and ``ORDER BY``,
the one-statement report's lease); it is built from the values here and tested against
the functions here (``tests/test_rules.py``), so the encodings cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

__all__ = ["CLAIM_ORDER", "claim_key", "lease_seconds", "lease_until"]

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
