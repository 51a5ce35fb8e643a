"""A task row as a plain object (:class:`TaskRecord`): what the stores load and save.

It has the attributes of :class:`~zndraw_joblib_server.models.Task`, so the rules written
against tasks (transitions, requeue, serialisation) apply to both (see ``storage.records``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.models import Task

__all__ = ["FIELDS", "LIGHT_FIELDS", "TASKS", "UNLOADED", "Owners", "StaleRecord", "TaskRecord"]

TASKS = Task.__table__
"""The tasks table (Core)."""


class _Unloaded:
    """The value of a column a record was read without (see :data:`LIGHT_FIELDS`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unloaded>"

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        raise TypeError("this column was not loaded into the task record")


FIELDS: tuple[str, ...] = tuple(column.key for column in TASKS.columns)
"""The tasks table's columns: a record's attributes."""

UNLOADED: Any = _Unloaded()
"""Stands for a column that was not read; assigning a value marks it changed."""


class TaskRecord:
    """One task row as a mutable object with the attributes of ``Task``.

    It remembers the values it was read (or last saved) with; :meth:`changes` lists what
    has been assigned since.
    """

    __slots__ = ("_saved", *FIELDS)

    id: uuid.UUID
    job_id: uuid.UUID
    room_id: str
    created_by_id: uuid.UUID | None
    worker_id: uuid.UUID | None
    status: TaskStatus
    payload: dict[str, Any]
    result: Any
    error: str | None
    message: str | None
    progress: float | None
    priority: int
    run_after: datetime
    created_at: datetime
    claimed_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    lease_expires_at: datetime | None
    deadline_at: datetime | None
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    lease_seconds: float | None
    cancel_requested: bool
    cancel_requested_at: datetime | None
    idempotency_key: str | None
    version: int

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._load({name: values.get(name, UNLOADED) for name in FIELDS})

    def _load(self, saved: dict[str, Any]) -> None:
        for name, value in saved.items():
            setattr(self, name, value)
        self._saved = saved

    @classmethod
    def from_row(cls, keys: Sequence[str], row: Sequence[Any]) -> TaskRecord:
        """A record from a result row and the result's column keys."""
        record = cls.__new__(cls)
        if len(keys) == len(FIELDS):
            record._load(dict(zip(keys, row, strict=True)))
        else:
            saved = dict.fromkeys(FIELDS, UNLOADED)
            saved.update(zip(keys, row, strict=True))
            record._load(saved)
        return record

    def changes(self) -> dict[str, Any]:
        """The columns assigned a different value since the record was read or saved."""
        saved = self._saved
        return {
            name: value
            for name in FIELDS
            if (value := getattr(self, name)) is not saved[name] and value != saved[name]
        }

    def copy(self) -> TaskRecord:
        """A snapshot of the current values (saved as they are now)."""
        return TaskRecord({name: getattr(self, name) for name in FIELDS})


LIGHT_FIELDS: tuple[str, ...] = (
    "id",
    "job_id",
    "room_id",
    "created_by_id",
    "worker_id",
    "status",
    "error",
    "message",
    "progress",
    "attempt",
    "max_attempts",
    "lease_expires_at",
    "timeout_seconds",
    "lease_seconds",
    "cancel_requested",
    "version",
)
"""What the update rules read; the rest (payload, result, timestamps) they only write."""


Owners = dict[uuid.UUID, uuid.UUID | None]
"""The owning user of each worker looked up (None: no such worker any more)."""


class StaleRecord(Exception):
    """A guarded save found the task changed since it was read (nothing was written)."""
