"""Job and worker models of the wire contract."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import Field

from zndraw_joblib_core._base import RequestModel, ResponseModel, UTCDateTime

__all__ = [
    "JobRegisterRequest",
    "JobResponse",
    "JobSummary",
    "WorkerResponse",
    "WorkerSummary",
]


class JobRegisterRequest(RequestModel):
    """Body of ``PUT /rooms/{room_id}/jobs``: register (or re-register) a job.

    Attributes:
        category: One of the server's allowed categories.
        name: The job's name within room and category (the extension class name).
        schema_: The JSON Schema of the task payload (wire name ``schema``).
        worker_id: The caller's worker to link to the job; a worker is created when absent.
    """

    category: str
    name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    worker_id: UUID | None = None


class JobResponse(ResponseModel):
    """A job as answered by register and get.

    Attributes:
        id: The job's id.
        room_id: The room the job belongs to (``@global`` for global jobs).
        category: The job's category.
        name: The job's name.
        full_name: ``{room_id}:{category}:{name}``.
        schema_: The payload JSON Schema (wire name ``schema``).
        workers: Ids of the workers serving the job.
        worker_id: The worker used or created by this registration (null on reads).
        live_workers: How many of ``workers`` are live: their last heartbeat or claim is
            within the server's worker timeout (the others are about to be removed).
    """

    id: UUID
    room_id: str
    category: str
    name: str
    full_name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    workers: list[UUID] = Field(default_factory=list)
    worker_id: UUID | None = None
    live_workers: int = 0


class JobSummary(ResponseModel):
    """A job in a listing.

    Attributes:
        full_name: ``{room_id}:{category}:{name}``.
        category: The job's category.
        name: The job's name.
        workers: Ids of the workers serving the job.
        id: The job's id.
        room_id: The room the job belongs to.
        live_workers: How many of ``workers`` are live (see :class:`JobResponse`).
    """

    full_name: str
    category: str
    name: str
    workers: list[UUID] = Field(default_factory=list)
    id: UUID | None = None
    room_id: str | None = None
    live_workers: int = 0


class WorkerResponse(ResponseModel):
    """A worker as answered by create and heartbeat.

    Attributes:
        id: The worker's id.
        last_heartbeat: When the worker last reported in.
        cancel_requested: Ids of the worker's tasks whose cancellation was requested
            (heartbeat answers only; the worker should stop them and report ``cancelled``).
        lease_expires_at: Until when the worker's in-flight tasks are leased (heartbeat
            answers only; null when it holds none).
    """

    id: UUID
    last_heartbeat: UTCDateTime
    cancel_requested: list[UUID] = Field(default_factory=list)
    lease_expires_at: UTCDateTime | None = None


class WorkerSummary(ResponseModel):
    """A worker in a listing.

    Attributes:
        id: The worker's id.
        last_heartbeat: When the worker last reported in.
        job_count: How many jobs the worker serves.
        created_at: When the worker was created.
    """

    id: UUID
    last_heartbeat: UTCDateTime
    job_count: int = 0
    created_at: UTCDateTime | None = None
