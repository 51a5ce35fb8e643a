"""Submitting tasks: 202 + headers, task fields, extensions, idempotency, payload schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"
SCHEMA = {
    "type": "object",
    "properties": {
        "angle": {"type": "number", "minimum": 0},
        "axis": {"type": "string", "enum": ["x", "y", "z"]},
        "nested": {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    },
    "required": ["angle"],
    "additionalProperties": False,
}
TASK_FIELDS = {
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
}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_submit_202_location_retry_after_and_fields(as_alice, as_bob, flow) -> None:
    job = await flow.job(as_alice)
    before = datetime.now(UTC) - timedelta(seconds=1)
    resp = await as_bob.post(
        f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {"x": [1, 2, {"y": None}]}}
    )
    assert resp.status_code == 202, resp.text
    task = resp.json()
    assert resp.headers["location"] == f"{P}/tasks/{task['id']}"
    assert int(resp.headers["retry-after"]) >= 0
    assert set(task) >= TASK_FIELDS
    assert task["job_name"] == "lab:modifiers:Rotate"
    assert task["room_id"] == "lab"
    assert task["status"] == "pending"
    assert task["payload"] == {"x": [1, 2, {"y": None}]}
    assert ts(task["created_at"]) >= before
    assert task["started_at"] is None
    assert task["completed_at"] is None
    assert task["worker_id"] is None
    assert task["error"] is None
    assert task["queue_position"] == 1
    assert task["priority"] == 0
    assert task["attempt"] == 0
    assert task["max_attempts"] == 3  # settings default
    assert task["timeout_seconds"] is None
    assert task["lease_expires_at"] is None
    assert task["cancel_requested"] is False
    assert task["progress"] is None
    assert task["message"] is None
    assert task["result"] is None
    # Location is a working URL
    got = await as_alice.get(resp.headers["location"])
    assert got.status_code == 200
    assert got.json()["id"] == task["id"]


async def test_submit_without_body_fields_uses_defaults(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    resp = await as_alice.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={})
    assert resp.status_code == 202
    assert resp.json()["payload"] == {}


async def test_submit_extensions_are_visible(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    later = datetime.now(UTC) + timedelta(hours=1)
    task = await flow.submit(
        as_alice,
        job["full_name"],
        priority=7,
        run_after=later.isoformat(),
        max_attempts=5,
        timeout_seconds=12.5,
    )
    assert task["priority"] == 7
    assert abs((ts(task["run_after"]) - later).total_seconds()) < 0.01
    assert task["max_attempts"] == 5
    assert task["timeout_seconds"] == 12.5
    again = await flow.task(as_alice, task["id"])
    assert again["priority"] == 7
    assert again["max_attempts"] == 5


async def test_submit_run_after_in_the_past_is_now(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    task = await flow.submit(as_alice, job["full_name"], run_after="2000-01-01T00:00:00Z")
    assert ts(task["run_after"]) >= ts(task["created_at"])


async def test_task_room_is_the_path_room_for_global_jobs(as_admin, as_alice, flow) -> None:
    job = await flow.job(as_admin, "@global", "G")
    task = await flow.submit(as_alice, job["full_name"], "lab")
    assert task["room_id"] == "lab"
    assert task["job_name"] == "@global:modifiers:G"
    assert (await flow.room_tasks(as_alice, "lab"))["total"] == 1
    assert (await flow.room_tasks(as_alice, "@global"))["total"] == 0
    other = await flow.submit(as_alice, job["full_name"], "other")
    assert other["room_id"] == "other"


async def test_queue_positions(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    a = await flow.submit(as_alice, job["full_name"])
    b = await flow.submit(as_alice, job["full_name"])
    assert (a["queue_position"], b["queue_position"]) == (1, 2)
    urgent = await flow.submit(as_alice, job["full_name"], priority=5)
    assert urgent["queue_position"] == 1
    low = await flow.submit(as_alice, job["full_name"], priority=-1)
    assert low["queue_position"] == 4
    assert (await flow.task(as_alice, a["id"]))["queue_position"] == 2
    assert (await flow.task(as_alice, b["id"]))["queue_position"] == 3
    claimed = await flow.claim(as_alice, job["worker_id"])
    assert claimed["id"] == urgent["id"]
    assert (await flow.task(as_alice, urgent["id"]))["queue_position"] is None
    assert (await flow.task(as_alice, a["id"]))["queue_position"] == 1
    # another job's queue is separate
    other = await flow.job(as_alice, name="Other")
    assert (await flow.submit(as_alice, other["full_name"]))["queue_position"] == 1


async def test_idempotency_key_same_job_and_room(as_alice, as_bob, as_admin, flow) -> None:
    job = await flow.job(as_admin, "@global")
    key = {"Idempotency-Key": "abc-123"}
    first = await flow.submit(as_alice, job["full_name"], headers=key, payload={"v": 1})
    again = await flow.submit(
        as_alice, job["full_name"], headers=key, payload={"v": 1}, expect=200
    )
    assert again["id"] == first["id"]
    assert again["payload"] == {"v": 1}
    # the key is the submitter's own: another user's same key creates that user's task
    resp = await as_bob.post(
        f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {}}, headers=key
    )
    assert resp.status_code == 202
    assert resp.json()["id"] != first["id"]
    assert (await flow.room_tasks(as_alice))["total"] == 2
    # another room, another job, or another key creates a new task
    other_room = await flow.submit(as_alice, job["full_name"], "other", headers=key)
    assert other_room["id"] != first["id"]
    other_job = await flow.job(as_alice, name="Other")
    assert (await flow.submit(as_alice, other_job["full_name"], headers=key))["id"] != first["id"]
    new_key = await flow.submit(as_alice, job["full_name"], headers={"Idempotency-Key": "z"})
    assert new_key["id"] != first["id"]
    assert (await flow.room_tasks(as_alice))["total"] == 4
    assert (await flow.room_tasks(as_alice, "other"))["total"] == 1


async def test_idempotency_key_returns_finished_task(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    key = {"Idempotency-Key": "k" * 300}  # longer than the column: hashed
    first = await flow.submit(as_alice, job["full_name"], headers=key)
    await as_alice.post(f"{P}/tasks/{first['id']}/cancel")
    again = await flow.submit(as_alice, job["full_name"], headers=key, expect=200)
    assert again["id"] == first["id"]
    assert again["status"] == "cancelled"
    other = await flow.submit(as_alice, job["full_name"], headers={"Idempotency-Key": "k" * 299})
    assert other["id"] != first["id"]


async def test_payload_valid_against_schema(as_alice, flow) -> None:
    job = await flow.job(as_alice, schema=SCHEMA)
    task = await flow.submit(
        as_alice, job["full_name"], payload={"angle": 1.5, "axis": "x", "nested": {"n": 2}}
    )
    assert task["payload"]["nested"] == {"n": 2}


async def test_payload_invalid_lists_each_failing_path(as_alice, flow, problem) -> None:
    job = await flow.job(as_alice, schema=SCHEMA)
    resp = await as_alice.post(
        f"{P}/rooms/lab/tasks/{job['full_name']}",
        json={"payload": {"angle": -1, "axis": "w", "nested": {"n": "two"}, "extra": 1}},
    )
    body = problem(resp, 422, "invalid-payload")
    paths = {e["path"] for e in body["errors"]}
    assert {"/angle", "/axis", "/nested/n", "/"} <= paths
    assert all(e["message"] for e in body["errors"])
    resp = await as_alice.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {}})
    body = problem(resp, 422, "invalid-payload")
    assert [e["path"] for e in body["errors"]] == ["/"]
    assert "angle" in body["errors"][0]["message"]
    assert (await flow.room_tasks(as_alice))["total"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"payload": [1, 2]},
        {"payload": "text"},
        {"priority": 1_000_001},
        {"priority": "high"},
        {"max_attempts": 0},
        {"timeout_seconds": 0},
        {"run_after": "tomorrow"},
        {"unknown": True},
    ],
)
async def test_submit_bad_body_is_validation_error(as_alice, flow, problem, body) -> None:
    job = await flow.job(as_alice)
    resp = await as_alice.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json=body)
    err = problem(resp, 422, "validation-error")
    assert err["errors"]
    assert (await flow.room_tasks(as_alice))["total"] == 0


async def test_submit_unknown_job_and_bad_room(as_alice, flow, problem) -> None:
    await flow.job(as_alice)
    problem(
        await as_alice.post(f"{P}/rooms/lab/tasks/lab:modifiers:Nope", json={}),
        404,
        "job-not-found",
    )
    problem(await as_alice.post(f"{P}/rooms/lab/tasks/garbage", json={}), 404, "job-not-found")
    problem(
        await as_alice.post(f"{P}/rooms/a@b/tasks/lab:modifiers:Rotate", json={}),
        400,
        "invalid-room-id",
    )
    assert (await flow.room_tasks(as_alice))["total"] == 0
