"""The worker's one request per round: finished tasks' reports and the next claim together.

A worker in steady state sends one request per task: its report (``PATCH /tasks/{id}``, or
``PATCH /tasks`` for several) carries the next claim (``claim_next``, with ``start`` so the
tasks come back running). Bodies are encoded and answers decoded by pydantic-core straight
from and to bytes; the loop's own fields are not validated again on the way out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pydantic_core

from zndraw_joblib_core import (
    TaskBatchUpdateOutcome,
    TaskBatchUpdateResponse,
    TaskClaimResponse,
    TaskResponse,
    TaskUpdateResponse,
)

__all__ = ["Exchange", "Report", "answer_of", "encode", "request_of"]

WAIT_SLACK = 10.0
"""Seconds added to a long-poll's read timeout."""

_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Report:
    """A task's final (or interim) update as the worker loop sends it.

    Attributes:
        task_id: The task.
        worker_id: The worker holding it.
        fields: The update's fields, JSON-ready (``status``, ``result``, ``error``, ...).
    """

    task_id: UUID
    worker_id: UUID
    fields: dict[str, Any]


@dataclass
class Exchange:
    """What one round's request answered.

    Attributes:
        claim: The claim's answer; None when no claim was made (none asked, or a server
            that ignores ``claim_next``).
        waited: Whether the server honoured ``Prefer: wait`` for the claim.
        task: The reported task after the update (a single report).
        outcomes: One outcome per report (several reports).
    """

    claim: TaskClaimResponse | None = None
    waited: bool = False
    task: TaskResponse | None = None
    outcomes: list[TaskBatchUpdateOutcome] = field(default_factory=list)


def encode(value: Any) -> bytes:
    """JSON bytes of ``value`` (UUIDs and datetimes as strings)."""
    return pydantic_core.to_json(value)


def request_of(
    reports: list[Report], claim: dict[str, Any] | None, wait: float | None, prefix: str
) -> tuple[str, str, Any, dict[str, str], float | None]:
    """The request of one round: method, path, body, headers and read timeout."""
    headers = dict(_JSON)
    timeout = None
    if claim is not None and wait is not None and wait > 0:
        seconds = max(1, math.ceil(wait))
        headers["Prefer"] = f"wait={seconds}"
        timeout = seconds + WAIT_SLACK
    if not reports:
        return "POST", f"{prefix}/tasks/claim", claim, headers, timeout
    if len(reports) == 1:
        (report,) = reports
        body: Any = {**report.fields, "worker_id": report.worker_id}
        if claim is not None:
            body["claim_next"] = claim
        return "PATCH", f"{prefix}/tasks/{report.task_id}", body, headers, timeout
    items = [{**r.fields, "task_id": r.task_id, "worker_id": r.worker_id} for r in reports]
    prefer = [headers["Prefer"]] if "Prefer" in headers else []
    headers["Prefer"] = ", ".join(["return=minimal", *prefer])
    body = items if claim is None else {"items": items, "claim_next": claim}
    return "PATCH", f"{prefix}/tasks", body, headers, timeout


def answer_of(reports: list[Report], content: bytes, preference: str) -> Exchange:
    """Decode the answer of :func:`request_of`'s request."""
    waited = "wait=" in preference
    if not reports:
        return Exchange(TaskClaimResponse.model_validate_json(content), waited)
    if len(reports) == 1:
        task = TaskUpdateResponse.model_validate_json(content)
        return Exchange(task.claimed, waited and task.claimed is not None, task=task)
    batch = TaskBatchUpdateResponse.model_validate_json(content)
    return Exchange(batch.claimed, waited and batch.claimed is not None, outcomes=batch.items)
