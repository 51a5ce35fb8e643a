"""Events: the ``kind``-discriminated union parses each event type."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from pydantic import TypeAdapter, ValidationError

from zndraw_joblib_core import Event, JobsChanged, TaskAvailable, TaskStatus, TaskStatusChanged

EVENTS: TypeAdapter[Any] = TypeAdapter(Event)
TASK = UUID(int=7)
WORKER = UUID(int=8)

SAMPLES: list[tuple[dict[str, Any], type]] = [
    (
        {
            "kind": "task_status_changed",
            "task_id": str(TASK),
            "job_name": "room:modifiers:Rotate",
            "room_id": "room",
            "status": "running",
            "attempt": 2,
            "worker_id": str(WORKER),
            "progress": 0.5,
            "message": "half",
            "cancel_requested": True,
            "error": None,
            "at": "2025-01-01T01:00:00+01:00",
        },
        TaskStatusChanged,
    ),
    (
        {"kind": "task_available", "task_id": str(TASK), "job_name": "r:c:n", "room_id": "r"},
        TaskAvailable,
    ),
    ({"kind": "jobs_changed", "room_id": "@global"}, JobsChanged),
]


@pytest.mark.parametrize(("data", "cls"), SAMPLES, ids=lambda x: getattr(x, "__name__", ""))
def test_union_parses_each_kind(data: dict[str, Any], cls: type) -> None:
    event = EVENTS.validate_python(data)
    assert type(event) is cls
    assert event.kind == data["kind"]
    assert event.room_id == data["room_id"]


@pytest.mark.parametrize(("data", "cls"), SAMPLES, ids=lambda x: getattr(x, "__name__", ""))
def test_union_json_round_trip(data: dict[str, Any], cls: type) -> None:
    event = EVENTS.validate_python(data)
    again = EVENTS.validate_json(EVENTS.dump_json(event))
    assert again == event
    assert type(again) is cls


def test_task_status_changed_fields() -> None:
    event = EVENTS.validate_python(SAMPLES[0][0])
    assert isinstance(event, TaskStatusChanged)
    assert event.task_id == TASK
    assert event.status is TaskStatus.RUNNING
    assert event.worker_id == WORKER
    assert event.at == datetime(2025, 1, 1, tzinfo=UTC)
    assert event.at.utcoffset() is not None
    assert not event.at.utcoffset()


def test_defaults_of_task_status_changed() -> None:
    event = TaskStatusChanged(
        task_id=TASK,
        job_name="r:c:n",
        room_id="r",
        status=TaskStatus.PENDING,
        at=datetime(2025, 1, 1),
    )
    assert event.kind == "task_status_changed"
    assert event.attempt == 0
    assert event.worker_id is None
    assert event.cancel_requested is False
    assert event.at.tzinfo is not None


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "nope", "room_id": "r"},
        {"room_id": "r"},
        {"kind": "task_available", "room_id": "r"},  # missing task_id and job_name
        {
            "kind": "task_status_changed",
            "task_id": str(TASK),
            "job_name": "j",
            "room_id": "r",
            "status": "exploded",
            "at": "2025-01-01T00:00:00Z",
        },
        {"kind": "jobs_changed"},
    ],
)
def test_invalid_events_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EVENTS.validate_python(data)


def test_discriminator_picks_the_class_not_the_first_match() -> None:
    # A task_available body would also satisfy jobs_changed's fields; kind decides.
    data = {"kind": "jobs_changed", "task_id": str(TASK), "job_name": "j", "room_id": "r"}
    assert type(EVENTS.validate_python(data)) is JobsChanged


def test_events_ignore_unknown_fields_and_are_frozen() -> None:
    event = EVENTS.validate_python({"kind": "jobs_changed", "room_id": "r", "future": 1})
    assert event == JobsChanged(room_id="r")
    with pytest.raises(ValidationError):
        event.room_id = "other"


def test_kind_is_fixed_per_class() -> None:
    with pytest.raises(ValidationError):
        JobsChanged.model_validate({"kind": "task_available", "room_id": "r"})
