"""Wire models: JSON round trips, unknown fields, aliases, time zones and field bounds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

import zndraw_joblib_core as core
from zndraw_joblib_core import (
    DEFAULT_PAGE_LIMIT,
    MAX_CLAIM_BATCH,
    MAX_PAGE_LIMIT,
    MAX_PRIORITY,
    MAX_SUBMIT_BATCH,
    MIN_PRIORITY,
    ClaimNextResponse,
    JobRegisterRequest,
    JobResponse,
    JobSummary,
    Page,
    ProblemDetail,
    ProviderReadRequest,
    ProviderRegisterRequest,
    ProviderResponse,
    RequestModel,
    ResponseModel,
    TaskBatchSubmitRequest,
    TaskBatchSubmitResponse,
    TaskBatchUpdateItem,
    TaskBatchUpdateOutcome,
    TaskBatchUpdateRequest,
    TaskBatchUpdateResponse,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
    TaskTokenRequest,
    TaskTokenResponse,
    TaskUpdateClaimRequest,
    TaskUpdateRequest,
    TaskUpdateResponse,
    UTCDateTime,
    WorkerResponse,
    WorkerSummary,
)

T0 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
W1, W2 = UUID(int=1), UUID(int=2)


def _task(**overrides: Any) -> TaskResponse:
    fields: dict[str, Any] = {
        "id": uuid4(),
        "job_name": "room:modifiers:Rotate",
        "room_id": "room",
        "status": TaskStatus.RUNNING,
        "created_at": T0,
        "started_at": T0 + timedelta(seconds=1),
        "worker_id": W1,
        "payload": {"angle": 90, "axis": [0, 0, 1], "nested": {"a": None}},
        "priority": 5,
        "run_after": T0,
        "attempt": 2,
        "max_attempts": 3,
        "timeout_seconds": 12.5,
        "lease_expires_at": T0 + timedelta(minutes=1),
        "cancel_requested": True,
        "progress": 0.25,
        "message": "halfway there ✓",
        "result": {"values": [1, 2.5, "x", None, True], "ok": False},
    }
    fields.update(overrides)
    return TaskResponse(**fields)


# One fully populated instance per wire model. ``test_every_model_has_a_sample`` fails when a
# new model is exported without being added here.
REQUEST_SAMPLES: list[RequestModel] = [
    JobRegisterRequest(
        category="modifiers",
        name="Rotate",
        schema={"type": "object", "properties": {"angle": {"type": "number"}}},
        worker_id=W1,
    ),
    JobRegisterRequest(category="analysis", name="Bare"),
    TaskSubmitRequest(
        payload={"angle": 1.5, "list": [1, "a"]},
        priority=-3,
        run_after=T0,
        max_attempts=4,
        timeout_seconds=30.0,
    ),
    TaskSubmitRequest(),
    TaskBatchSubmitRequest(
        items=[TaskSubmitRequest(payload={"n": 1}), TaskSubmitRequest(priority=3, max_attempts=2)]
    ),
    TaskClaimRequest(worker_id=W1, max_tasks=7),
    TaskTokenRequest(worker_id=W1, identity="worker"),
    TaskUpdateRequest(
        status=TaskStatus.COMPLETED,
        worker_id=W2,
        progress=1.0,
        message="done",
        result=[1, {"k": "v"}],
    ),
    TaskUpdateRequest(status=TaskStatus.FAILED, error="boom", retry=True),
    TaskUpdateRequest(progress=0.0),
    TaskBatchUpdateItem(task_id=uuid4(), status=TaskStatus.RUNNING, worker_id=W1),
    TaskClaimRequest(worker_id=W1, providers=True),
    ProviderRegisterRequest(
        category="filesystem",
        name="local",
        schema={"type": "object", "properties": {"path": {"type": "string"}}},
        content_type="application/octet-stream",
        worker_id=W1,
    ),
    ProviderRegisterRequest(category="filesystem", name="Bare"),
    TaskClaimRequest(worker_id=W1, max_tasks=2, start=True),
    TaskUpdateClaimRequest(
        status=TaskStatus.COMPLETED,
        worker_id=W1,
        result={"ok": True},
        claim_next=TaskClaimRequest(worker_id=W1, max_tasks=3, start=True),
    ),
    TaskBatchUpdateRequest(
        items=[TaskBatchUpdateItem(task_id=W2, status=TaskStatus.COMPLETED, worker_id=W1)],
        claim_next=TaskClaimRequest(worker_id=W1, providers=True),
    ),
]

RESPONSE_SAMPLES: list[ResponseModel] = [
    JobResponse(
        id=uuid4(),
        room_id="@global",
        category="modifiers",
        name="Rotate",
        full_name="@global:modifiers:Rotate",
        schema={"type": "object"},
        workers=[W1, W2],
        worker_id=W1,
    ),
    JobSummary(
        full_name="room:analysis:Plot",
        category="analysis",
        name="Plot",
        workers=[W1],
        id=uuid4(),
        room_id="room",
    ),
    WorkerResponse(id=W1, last_heartbeat=T0, cancel_requested=[uuid4()], lease_expires_at=T0),
    WorkerSummary(id=W2, last_heartbeat=T0, job_count=3, created_at=T0 - timedelta(days=1)),
    _task(),
    _task(status=TaskStatus.PENDING, worker_id=None, queue_position=4, result=None),
    _task(status=TaskStatus.COMPLETED, completed_at=T0 + timedelta(hours=1), result=42),
    TaskClaimResponse(task=None, tasks=[]),
    TaskClaimResponse(
        provider_reads=[
            ProviderReadRequest(
                provider_id=W1,
                provider_name="room:filesystem:local",
                request_hash="0" * 64,
                params={"path": "/"},
            )
        ]
    ),
    ProviderReadRequest(provider_id=W2, provider_name="@global:f:n", request_hash="1" * 64),
    ProviderResponse(
        id=W2,
        room_id="room",
        category="filesystem",
        name="local",
        full_name="room:filesystem:local",
        schema={"type": "object"},
        worker_id=W1,
        created_at=T0,
    ),
    TaskClaimResponse(task=_task(id=W1), tasks=[_task(id=W1), _task(id=W2)]),
    ClaimNextResponse(task=_task(id=W2), tasks=[_task(id=W2)]),
    ClaimNextResponse(
        problem=ProblemDetail(
            type="/v1/problems/worker-not-found", title="Worker not found", status=404
        )
    ),
    TaskUpdateResponse(**dict(_task(id=W1, status=TaskStatus.COMPLETED)), claimed=None),
    TaskUpdateResponse(
        **dict(_task(id=W1, status=TaskStatus.COMPLETED)),
        claimed=ClaimNextResponse(task=None, tasks=[]),
    ),
    TaskBatchSubmitResponse(items=[_task(id=W1, status=TaskStatus.PENDING), _task(id=W2)]),
    TaskBatchUpdateOutcome(task_id=W1, ok=True, task=_task(id=W1)),
    TaskBatchUpdateResponse(
        items=[
            TaskBatchUpdateOutcome(task_id=W1, ok=True, task=_task(id=W1)),
            TaskBatchUpdateOutcome(
                task_id=W2,
                ok=False,
                problem=ProblemDetail(
                    type="/v1/problems/lease-lost",
                    title="Conflict",
                    status=409,
                    detail="gone",
                    extra_member=[1, 2],
                ),
            ),
        ]
    ),
    Page[TaskResponse](items=[_task(), _task()], total=10, limit=2, offset=4),
    Page[JobSummary](items=[], total=0, limit=0, offset=0),
    Page[WorkerSummary](
        items=[WorkerSummary(id=W1, last_heartbeat=T0)], total=1, limit=50, offset=0
    ),
    TaskTokenResponse(access_token="t.o.k", task_id=W1, user_id=W1),
]

ALL_SAMPLES: list[BaseModel] = [*REQUEST_SAMPLES, *RESPONSE_SAMPLES]


def _id(model: BaseModel) -> str:
    return type(model).__name__


def _exported_models() -> set[type[BaseModel]]:
    found = set()
    for name in core.__all__:
        obj = getattr(core, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, (RequestModel, ResponseModel))
            and obj not in (RequestModel, ResponseModel)
        ):
            found.add(obj)
    return found


def _origin(model: BaseModel) -> type[BaseModel]:
    meta = type(model).__pydantic_generic_metadata__
    return meta["origin"] or type(model)


def test_every_model_has_a_sample() -> None:
    sampled = {_origin(m) for m in ALL_SAMPLES}
    missing = _exported_models() - sampled
    assert not missing, f"add samples for {sorted(m.__name__ for m in missing)}"


def test_request_and_response_models_are_the_expected_split() -> None:
    requests = {m for m in _exported_models() if issubclass(m, RequestModel)}
    assert requests == {
        JobRegisterRequest,
        TaskSubmitRequest,
        TaskClaimRequest,
        TaskUpdateRequest,
        TaskBatchUpdateItem,
        TaskBatchSubmitRequest,
        TaskTokenRequest,
        ProviderRegisterRequest,
        TaskUpdateClaimRequest,
        TaskBatchUpdateRequest,
    }


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_SAMPLES, ids=_id)
def test_json_round_trip(model: BaseModel) -> None:
    wire = model.model_dump_json(by_alias=True)
    again = type(model).model_validate_json(wire)
    assert again == model
    assert again.model_dump_json(by_alias=True) == wire


@pytest.mark.parametrize("model", ALL_SAMPLES, ids=_id)
def test_dict_round_trip_through_json_module(model: BaseModel) -> None:
    # What an HTTP layer does: dump to JSON-compatible data, json.dumps, json.loads, validate.
    data = json.loads(json.dumps(model.model_dump(mode="json", by_alias=True)))
    assert type(model).model_validate(data) == model


@pytest.mark.parametrize("model", ALL_SAMPLES, ids=_id)
def test_timestamps_on_the_wire_are_utc(model: BaseModel) -> None:
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value.startswith("20") and "T" in value:
            assert value.endswith("Z"), value

    walk(json.loads(model.model_dump_json(by_alias=True)))


# --- unknown fields -----------------------------------------------------------------------


@pytest.mark.parametrize("model", REQUEST_SAMPLES, ids=_id)
def test_request_models_forbid_unknown_fields(model: RequestModel) -> None:
    data = model.model_dump(mode="json", by_alias=True)
    data["surprise"] = 1
    with pytest.raises(ValidationError) as info:
        type(model).model_validate(data)
    assert [e["type"] for e in info.value.errors()] == ["extra_forbidden"]
    assert info.value.errors()[0]["loc"] == ("surprise",)


@pytest.mark.parametrize("model", RESPONSE_SAMPLES, ids=_id)
def test_response_models_tolerate_unknown_fields(model: ResponseModel) -> None:
    data = model.model_dump(mode="json", by_alias=True)
    data["field_from_a_newer_server"] = {"x": 1}
    parsed = type(model).model_validate(data)
    assert parsed == model
    assert "field_from_a_newer_server" not in parsed.model_dump()


def test_nested_response_models_tolerate_unknown_fields() -> None:
    data = TaskClaimResponse(task=_task(id=W1), tasks=[_task(id=W1)]).model_dump(mode="json")
    data["task"]["new_field"] = 1
    data["tasks"][0]["another"] = [1]
    parsed = TaskClaimResponse.model_validate(data)
    assert parsed.task is not None
    assert parsed.task.id == W1


# --- 0.1.7 compatibility of shapes ----------------------------------------------------------


def test_task_from_a_0_1_7_server_parses_with_defaults() -> None:
    old = {
        "id": str(W1),
        "job_name": "room:modifiers:Rotate",
        "room_id": "room",
        "status": "pending",
        "created_at": "2025-01-01T00:00:00Z",
        "started_at": None,
        "completed_at": None,
        "worker_id": None,
        "error": None,
        "payload": {"a": 1},
        "queue_position": 1,
    }
    task = TaskResponse.model_validate(old)
    assert task.status is TaskStatus.PENDING
    assert task.queue_position == 1
    assert task.priority == 0
    assert task.attempt == 0
    assert task.progress is None
    assert task.result is None
    assert task.cancel_requested is False


def test_task_response_has_every_0_1_7_field() -> None:
    wire = json.loads(_task().model_dump_json())
    for key in (
        "id",
        "job_name",
        "room_id",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "worker_id",
        "error",
        "payload",
        "queue_position",
    ):
        assert key in wire
    for key in (
        "priority",
        "run_after",
        "attempt",
        "max_attempts",
        "timeout_seconds",
        "lease_expires_at",
        "cancel_requested",
        "progress",
        "message",
        "result",
    ):
        assert key in wire


def test_claim_response_from_an_old_server_has_no_tasks_list() -> None:
    parsed = TaskClaimResponse.model_validate({"task": None})
    assert parsed.task is None
    assert parsed.tasks == []


def test_worker_from_a_0_1_7_server() -> None:
    parsed = WorkerResponse.model_validate(
        {"id": str(W1), "last_heartbeat": "2025-01-01T00:00:00"}
    )
    assert parsed.cancel_requested == []
    assert parsed.lease_expires_at is None
    assert parsed.last_heartbeat.tzinfo is not None


def test_old_client_update_body_is_accepted() -> None:
    body = TaskUpdateRequest.model_validate({"status": "failed", "error": "x"})
    assert body.status is TaskStatus.FAILED
    assert body.retry is False
    assert body.worker_id is None


def test_claim_request_from_an_old_client_defaults_to_one() -> None:
    assert TaskClaimRequest.model_validate({"worker_id": str(W1)}).max_tasks == 1


# --- the schema alias ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [JobRegisterRequest, JobResponse])
def test_schema_wire_name(cls: type[BaseModel]) -> None:
    data: dict[str, Any] = {"category": "modifiers", "name": "Rotate", "schema": {"a": 1}}
    if cls is JobResponse:
        data |= {"id": str(W1), "room_id": "r", "full_name": "r:modifiers:Rotate"}
    model = cls.model_validate(data)
    assert model.schema_ == {"a": 1}  # type: ignore[attr-defined]
    wire = json.loads(model.model_dump_json(by_alias=True))
    assert wire["schema"] == {"a": 1}
    assert "schema_" not in wire


def test_register_request_schema_defaults_to_empty() -> None:
    assert JobRegisterRequest(category="c", name="n").schema_ == {}


def test_register_request_keyword_by_alias_and_by_name() -> None:
    by_alias = JobRegisterRequest(category="c", name="n", schema={"x": 1})
    by_name = JobRegisterRequest(category="c", name="n", schema_={"x": 1})
    assert by_alias == by_name


def test_register_request_refuses_a_non_object_schema() -> None:
    with pytest.raises(ValidationError):
        JobRegisterRequest.model_validate({"category": "c", "name": "n", "schema": [1]})


def test_job_response_exposes_the_wire_keys() -> None:
    wire = json.loads(RESPONSE_SAMPLES[0].model_dump_json(by_alias=True))
    assert set(wire) == {
        "id",
        "room_id",
        "category",
        "name",
        "full_name",
        "schema",
        "workers",
        "worker_id",
        "live_workers",
    }


# --- time ----------------------------------------------------------------------------------

_adapter = TypeAdapter(UTCDateTime)


def test_naive_datetimes_are_read_as_utc() -> None:
    parsed = _adapter.validate_python(datetime(2025, 1, 1, 12, 0))
    assert parsed == datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)


def test_aware_datetimes_are_converted_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    parsed = _adapter.validate_python(datetime(2025, 1, 1, 12, 0, tzinfo=plus2))
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)
    assert (parsed.hour, parsed.minute) == (10, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01T12:00:00Z", datetime(2025, 6, 1, 12, tzinfo=UTC)),
        ("2025-06-01T12:00:00+00:00", datetime(2025, 6, 1, 12, tzinfo=UTC)),
        ("2025-06-01T12:00:00-05:30", datetime(2025, 6, 1, 17, 30, tzinfo=UTC)),
        ("2025-06-01T12:00:00", datetime(2025, 6, 1, 12, tzinfo=UTC)),
        ("2025-06-01T00:30:00+01:00", datetime(2025, 5, 31, 23, 30, tzinfo=UTC)),
    ],
)
def test_iso_strings_become_aware_utc(text: str, expected: datetime) -> None:
    for parsed in (
        TaskSubmitRequest.model_validate({"run_after": text}).run_after,
        WorkerResponse.model_validate({"id": str(W1), "last_heartbeat": text}).last_heartbeat,
    ):
        assert parsed == expected
        assert parsed is not None
        assert parsed.utcoffset() == timedelta(0)


# Fixed offsets only: zoneinfo zones have DST gaps, where aware comparisons are not instants.
_fixed_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.one_of(st.none(), _fixed_offsets),
    )
)
def test_any_datetime_keeps_its_instant_and_becomes_utc(value: datetime) -> None:
    parsed = _adapter.validate_python(value)
    assert parsed.utcoffset() == timedelta(0)
    reference = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    assert parsed == reference
    assert _adapter.validate_json(_adapter.dump_json(parsed)) == parsed


def test_every_task_timestamp_is_normalised() -> None:
    plus9 = "2025-01-01T09:00:00+09:00"
    task = TaskResponse.model_validate(
        {
            "id": str(W1),
            "job_name": "r:c:n",
            "room_id": "r",
            "status": "completed",
            "created_at": plus9,
            "started_at": plus9,
            "completed_at": plus9,
            "run_after": plus9,
            "lease_expires_at": plus9,
        }
    )
    for value in (
        task.created_at,
        task.started_at,
        task.completed_at,
        task.run_after,
        task.lease_expires_at,
    ):
        assert value == datetime(2025, 1, 1, tzinfo=UTC)
        assert value is not None
        assert value.utcoffset() == timedelta(0)


# --- bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "field", "ok", "bad"),
    [
        (
            TaskSubmitRequest,
            "priority",
            [MIN_PRIORITY, -1, 0, 1, MAX_PRIORITY],
            [MIN_PRIORITY - 1, MAX_PRIORITY + 1, 10**12, "high", 1.5],
        ),
        (TaskSubmitRequest, "max_attempts", [None, 1, 2, 1000], [0, -1, 1001, 2.5]),
        (TaskSubmitRequest, "timeout_seconds", [None, 0.001, 1, 31_536_000], [0, -1, 31_536_001]),
        (
            TaskUpdateRequest,
            "progress",
            [None, 0, 0.0, 0.5, 1, 1.0],
            [-0.0001, 1.0001, 2, -1, "half"],
        ),
    ],
)
def test_field_bounds(cls: type[BaseModel], field: str, ok: list[Any], bad: list[Any]) -> None:
    for value in ok:
        assert getattr(cls.model_validate({field: value}), field) == value
    for value in bad:
        with pytest.raises(ValidationError) as info:
            cls.model_validate({field: value})
        assert info.value.errors()[0]["loc"] == (field,)


def test_max_tasks_bounds() -> None:
    assert MAX_CLAIM_BATCH >= 1
    for value in (1, 2, MAX_CLAIM_BATCH):
        assert TaskClaimRequest(worker_id=W1, max_tasks=value).max_tasks == value
    for value in (0, -1, MAX_CLAIM_BATCH + 1):
        with pytest.raises(ValidationError):
            TaskClaimRequest(worker_id=W1, max_tasks=value)


def test_batch_item_inherits_the_update_bounds() -> None:
    with pytest.raises(ValidationError):
        TaskBatchUpdateItem(task_id=W1, progress=1.5)
    with pytest.raises(ValidationError):
        TaskBatchUpdateItem.model_validate({"status": "running"})  # task_id is required


def test_defaults_of_submit() -> None:
    body = TaskSubmitRequest()
    assert body.payload == {}
    assert body.priority == 0
    assert body.run_after is None
    assert body.max_attempts is None
    assert body.timeout_seconds is None


@pytest.mark.parametrize("status", ["done", "PENDING", "", 3])
def test_update_refuses_unknown_status(status: Any) -> None:
    with pytest.raises(ValidationError):
        TaskUpdateRequest.model_validate({"status": status})


def test_claim_request_requires_a_uuid() -> None:
    with pytest.raises(ValidationError):
        TaskClaimRequest.model_validate({"worker_id": "not-a-uuid"})
    with pytest.raises(ValidationError):
        TaskClaimRequest.model_validate({})


def test_payload_must_be_an_object() -> None:
    with pytest.raises(ValidationError):
        TaskSubmitRequest.model_validate({"payload": [1, 2]})


def test_result_accepts_any_json_value() -> None:
    for value in (None, 1, 1.5, "s", True, [1, [2]], {"a": {"b": [None]}}):
        assert TaskUpdateRequest(result=value).result == value
        assert _task(result=value).result == value


# --- Page[T] ------------------------------------------------------------------------------


def test_page_limits() -> None:
    assert DEFAULT_PAGE_LIMIT == 50
    assert MAX_PAGE_LIMIT == 500


def test_page_validates_its_items_as_t() -> None:
    wire = {
        "items": [{"id": str(W1), "last_heartbeat": "2025-01-01T00:00:00+01:00"}],
        "total": 1,
        "limit": 50,
        "offset": 0,
    }
    page = Page[WorkerSummary].model_validate(wire)
    assert isinstance(page.items[0], WorkerSummary)
    assert page.items[0].last_heartbeat == datetime(2024, 12, 31, 23, tzinfo=UTC)
    with pytest.raises(ValidationError):
        Page[TaskResponse].model_validate(wire)  # not a task


def test_page_of_scalars() -> None:
    assert Page[int].model_validate({"items": [1, 2], "total": 2, "limit": 2, "offset": 0})
    with pytest.raises(ValidationError):
        Page[int].model_validate({"items": ["x"], "total": 1, "limit": 1, "offset": 0})


@pytest.mark.parametrize("missing", ["items", "total", "limit", "offset"])
def test_page_fields_are_required(missing: str) -> None:
    data: dict[str, Any] = {"items": [], "total": 0, "limit": 0, "offset": 0}
    del data[missing]
    with pytest.raises(ValidationError):
        Page[JobSummary].model_validate(data)


def test_page_wire_shape() -> None:
    page = Page[JobSummary](
        items=[JobSummary(full_name="r:c:n", category="c", name="n")],
        total=3,
        limit=1,
        offset=2,
    )
    wire = json.loads(page.model_dump_json())
    assert set(wire) == {"items", "total", "limit", "offset"}
    assert wire["items"][0]["full_name"] == "r:c:n"
    assert (wire["total"], wire["limit"], wire["offset"]) == (3, 1, 2)


def test_page_json_schema_names_the_item_type() -> None:
    schema = json.dumps(Page[TaskResponse].model_json_schema())
    assert "TaskResponse" in schema


@pytest.mark.parametrize("count", [0, MAX_SUBMIT_BATCH + 1])
def test_batch_submit_size_limits(count: int) -> None:
    with pytest.raises(ValidationError):
        TaskBatchSubmitRequest(items=[TaskSubmitRequest()] * count)
    assert len(TaskBatchSubmitRequest(items=[TaskSubmitRequest()] * MAX_SUBMIT_BATCH).items) == (
        MAX_SUBMIT_BATCH
    )
