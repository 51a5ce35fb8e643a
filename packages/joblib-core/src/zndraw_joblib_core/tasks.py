"""Task models of the wire contract: submit, claim, update, cancel, and the task itself."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import Field, JsonValue

from zndraw_joblib_core._base import RequestModel, ResponseModel, UTCDateTime
from zndraw_joblib_core.problems import ProblemDetail
from zndraw_joblib_core.providers import ProviderReadRequest
from zndraw_joblib_core.status import TaskStatus

__all__ = [
    "MAX_CLAIM_BATCH",
    "MAX_PRIORITY",
    "MAX_SUBMIT_BATCH",
    "MAX_UPDATE_BATCH",
    "MIN_PRIORITY",
    "ClaimNextResponse",
    "TaskBatchSubmitRequest",
    "TaskBatchSubmitResponse",
    "TaskBatchUpdateItem",
    "TaskBatchUpdateOutcome",
    "TaskBatchUpdateRequest",
    "TaskBatchUpdateResponse",
    "TaskClaimRequest",
    "TaskClaimResponse",
    "TaskResponse",
    "TaskSubmitRequest",
    "TaskUpdateClaimRequest",
    "TaskUpdateRequest",
    "TaskUpdateResponse",
]

MIN_PRIORITY = -1_000_000
"""Lowest accepted task priority."""

MAX_PRIORITY = 1_000_000
"""Highest accepted task priority."""

MAX_CLAIM_BATCH = 100
"""Most tasks one claim request may take."""

MAX_SUBMIT_BATCH = 1000
"""Most tasks one batch submit may create."""

MAX_UPDATE_BATCH = 500
"""Most entries one batch update may carry."""


class TaskSubmitRequest(RequestModel):
    """Body of ``POST /rooms/{room_id}/tasks/{job_name}``.

    Attributes:
        payload: The task's parameters, validated against the job's JSON Schema.
        priority: Higher is claimed first (default 0).
        run_after: The task is not claimable before this time.
        max_attempts: How many times the task may be claimed in all (server default if null).
        timeout_seconds: Running longer than this counts as a lost lease.
        lease_seconds: Lease length for this task (server default if null).
    """

    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    run_after: UTCDateTime | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    timeout_seconds: float | None = Field(default=None, gt=0, le=31_536_000)
    lease_seconds: float | None = Field(default=None, gt=0, le=86_400)


class TaskBatchSubmitRequest(RequestModel):
    """Body of ``POST /rooms/{room_id}/jobs/{job_name}/tasks``: several submits of one job.

    The batch is all or nothing: when one entry is refused (payload against the schema,
    sizes), no task is created and the problem names the entry.

    Attributes:
        items: The tasks to create, each as the body of a single submit (1 to 1000).
    """

    items: list[TaskSubmitRequest] = Field(min_length=1, max_length=MAX_SUBMIT_BATCH)


class TaskResponse(ResponseModel):
    """A task as the API answers it.

    Attributes:
        id: The task's id.
        job_name: The job's full name ``{room_id}:{category}:{name}``.
        room_id: The room the task was submitted from.
        status: The task's state.
        created_at: When the task was submitted.
        started_at: When it last started running.
        completed_at: When it reached a terminal state.
        worker_id: The worker that holds (or last held) the task.
        error: The failure or cancellation reason.
        payload: The task's parameters.
        queue_position: 1-based place among the job's pending tasks; null unless pending.
        priority: Higher is claimed first.
        run_after: When the task becomes (or became) claimable.
        attempt: How many times the task has been claimed (1 on the first claim).
        max_attempts: How many claims are allowed before a lost lease fails the task.
        timeout_seconds: Longest allowed run time, or null.
        lease_expires_at: When the current holder's lease runs out.
        cancel_requested: Whether cancellation was requested while a worker held it.
        progress: Reported progress between 0 and 1.
        message: A short status message from the worker.
        result: The JSON result of a completed task.
        version: Grows with every change of the task; send it as ``If-None-Match: "N"``
            with a ``wait_for=change`` long-poll to wait for the next change after it.
    """

    id: UUID
    job_name: str
    room_id: str
    status: TaskStatus
    created_at: UTCDateTime
    started_at: UTCDateTime | None = None
    completed_at: UTCDateTime | None = None
    worker_id: UUID | None = None
    error: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    queue_position: int | None = None
    priority: int = 0
    run_after: UTCDateTime | None = None
    attempt: int = 0
    max_attempts: int = 1
    timeout_seconds: float | None = None
    lease_expires_at: UTCDateTime | None = None
    cancel_requested: bool = False
    progress: float | None = None
    message: str | None = None
    result: JsonValue = None
    version: int = 0


class TaskClaimRequest(RequestModel):
    """Body of ``POST /tasks/claim``.

    Attributes:
        worker_id: The caller's worker that claims.
        max_tasks: Claim up to this many tasks at once (default 1).
        providers: The worker serves providers: the answer also lists reads waiting for
            them, and a new read ends a waiting claim (see ``provider_reads``).
        start: Start the claimed tasks too: they come back ``running`` with their lease
            and ``started_at`` set, as a ``PATCH`` to ``running`` right after the claim
            would leave them (default false: ``claimed``).
    """

    worker_id: UUID
    max_tasks: int = Field(default=1, ge=1, le=MAX_CLAIM_BATCH)
    providers: bool = False
    start: bool = False


class TaskClaimResponse(ResponseModel):
    """Answer of ``POST /tasks/claim``.

    Attributes:
        task: The first claimed task, or null when none was available.
        tasks: Every claimed task (at most ``max_tasks``).
        provider_reads: Reads of the worker's providers to answer (only when the claim
            asked with ``providers: true``).
    """

    task: TaskResponse | None = None
    tasks: list[TaskResponse] = Field(default_factory=list)
    provider_reads: list[ProviderReadRequest] = Field(default_factory=list)


class TaskUpdateRequest(RequestModel):
    """Body of ``PATCH /tasks/{task_id}``.

    Attributes:
        status: The state to move to; null for a progress-only update of a running task.
        error: The failure or cancellation reason (with ``failed`` or ``cancelled``).
        worker_id: The worker the caller acts for; a worker that no longer holds the lease is
            refused with 409 ``lease-lost``.
        progress: Progress between 0 and 1 (while running).
        message: A short status message (while running).
        result: The task's JSON result (with ``completed``).
        retry: With ``failed``: requeue with backoff if attempts remain.
    """

    status: TaskStatus | None = None
    error: str | None = None
    worker_id: UUID | None = None
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    message: str | None = None
    result: JsonValue = None
    retry: bool = False


class ClaimNextResponse(TaskClaimResponse):
    """The claim made after an update that asked for one (``claim_next``).

    Attributes:
        problem: Why the claim was refused (the update itself was applied), e.g.
            ``worker-not-found``; null when the claim was made (possibly finding nothing).
    """

    problem: ProblemDetail | None = None


class TaskUpdateClaimRequest(TaskUpdateRequest):
    """Body of ``PATCH /tasks/{task_id}``: an update, optionally with the worker's next claim.

    Attributes:
        claim_next: Once the update is applied, claim as ``POST /tasks/claim`` with this
            body would (``Prefer: wait=N`` long-polls for it); the answer carries the
            claim in ``claimed``. A refused update claims nothing.
    """

    claim_next: TaskClaimRequest | None = None


class TaskUpdateResponse(TaskResponse):
    """Answer of ``PATCH /tasks/{task_id}``: the task after the update.

    Attributes:
        claimed: The next claim, when the update asked for one (``claim_next``).
    """

    claimed: ClaimNextResponse | None = None


class TaskBatchUpdateItem(TaskUpdateRequest):
    """One entry of ``PATCH /tasks``: an update of the task ``task_id``.

    Attributes:
        task_id: The task to update.
    """

    task_id: UUID


class TaskBatchUpdateOutcome(ResponseModel):
    """The outcome of one entry of a batch update.

    Attributes:
        task_id: The task the entry named.
        ok: Whether the update was applied.
        task: The task after the update (when applied).
        problem: Why the update was refused (when not applied).
    """

    task_id: UUID
    ok: bool
    task: TaskResponse | None = None
    problem: ProblemDetail | None = None


class TaskBatchUpdateResponse(ResponseModel):
    """Answer of ``PATCH /tasks``: one outcome per entry, in request order.

    Attributes:
        items: The outcomes.
        claimed: The next claim, when the request asked for one (``claim_next``).
    """

    items: list[TaskBatchUpdateOutcome]
    claimed: ClaimNextResponse | None = None


class TaskBatchUpdateRequest(RequestModel):
    """Body of ``PATCH /tasks`` in its object form (the plain list of entries is the other).

    Attributes:
        items: The updates, applied as the list form applies them.
        claim_next: Once the updates are applied, claim as ``POST /tasks/claim`` with this
            body would (``Prefer: wait=N`` long-polls for it); the answer carries the claim
            in ``claimed``.
    """

    items: list[TaskBatchUpdateItem] = Field(max_length=MAX_UPDATE_BATCH)
    claim_next: TaskClaimRequest | None = None


class TaskBatchSubmitResponse(ResponseModel):
    """Answer of a batch submit: the created tasks, in request order.

    Attributes:
        items: The tasks.
    """

    items: list[TaskResponse]
