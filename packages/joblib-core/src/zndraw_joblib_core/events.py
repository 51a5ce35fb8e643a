"""Events the server hands to its event sink after a change is committed.

A host forwards them wherever it likes (Socket.IO, a message bus). Each event names the
room it concerns in ``room_id``; ``kind`` tells the event types apart in a union.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from zndraw_joblib_core._base import UTCDateTime
from zndraw_joblib_core.status import TaskStatus

__all__ = [
    "Event",
    "JobsChanged",
    "ProviderResultReady",
    "ProvidersChanged",
    "TaskAvailable",
    "TaskStatusChanged",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TaskStatusChanged(_Event):
    """A task changed: its status, or its progress and message while running.

    Attributes:
        kind: Always ``task_status_changed``.
        task_id: The task.
        job_name: The job's full name.
        room_id: The room the task was submitted from.
        status: The task's state after the change.
        attempt: The task's attempt number.
        worker_id: The worker holding the task, if any.
        progress: Reported progress, if any.
        message: The worker's status message, if any.
        cancel_requested: Whether cancellation was requested.
        error: The error, for failed or cancelled tasks.
        at: When the change was committed.
        created_at: When the task was submitted (None from servers before 0.2.1).
        started_at: When the task started running, if it did.
        completed_at: When the task finished, if it did.
        queue_position: The task's 1-based place in its job's queue while pending, when
            the sender knows it. The server sets it on a submit's events (the place its
            answer carries) and leaves it None on every other change (see
            ``docs/hosting.md``).
    """

    kind: Literal["task_status_changed"] = "task_status_changed"
    task_id: UUID
    job_name: str
    room_id: str
    status: TaskStatus
    attempt: int = 0
    worker_id: UUID | None = None
    progress: float | None = None
    message: str | None = None
    cancel_requested: bool = False
    error: str | None = None
    at: UTCDateTime
    created_at: UTCDateTime | None = None
    started_at: UTCDateTime | None = None
    completed_at: UTCDateTime | None = None
    queue_position: int | None = None


class TaskAvailable(_Event):
    """A task became claimable for the workers of a job.

    Attributes:
        kind: Always ``task_available``.
        task_id: The task.
        job_name: The job's full name (workers of this job may claim it).
        room_id: The room the task was submitted from.
    """

    kind: Literal["task_available"] = "task_available"
    task_id: UUID
    job_name: str
    room_id: str


class JobsChanged(_Event):
    """The set of jobs (or their workers) visible in a room changed.

    Attributes:
        kind: Always ``jobs_changed``.
        room_id: The room whose job list changed (``@global`` concerns every room).
    """

    kind: Literal["jobs_changed"] = "jobs_changed"
    room_id: str


class ProvidersChanged(_Event):
    """The set of providers visible in a room changed (registered, updated or gone).

    Attributes:
        kind: Always ``providers_changed``.
        room_id: The providers' room (``@global`` concerns every room).
    """

    kind: Literal["providers_changed"] = "providers_changed"
    room_id: str


class ProviderResultReady(_Event):
    """A provider's answer to a read is cached (readers of that read may fetch it).

    Attributes:
        kind: Always ``provider_result_ready``.
        room_id: The provider's room.
        provider_name: The provider's full name.
        request_hash: The read's hash.
    """

    kind: Literal["provider_result_ready"] = "provider_result_ready"
    room_id: str
    provider_name: str
    request_hash: str


Event = Annotated[
    TaskStatusChanged | TaskAvailable | JobsChanged | ProvidersChanged | ProviderResultReady,
    Field(discriminator="kind"),
]
"""Any event, discriminated by ``kind``."""
