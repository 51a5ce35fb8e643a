"""Batch submit: POST /rooms/{room}/jobs/{job}/tasks creates all entries or none."""

from __future__ import annotations

import asyncio

import pytest

from zndraw_joblib_core import TaskAvailable

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
    "additionalProperties": False,
}


def _url(job: dict, room: str = "lab") -> str:
    return f"{P}/rooms/{room}/jobs/{job['full_name']}/tasks"


async def test_batch_creates_tasks_in_order_with_queue_positions(as_alice, flow) -> None:
    job = await flow.job(as_alice, schema=SCHEMA)
    first = await flow.submit(as_alice, job["full_name"], payload={"n": -1})
    items = [{"payload": {"n": n}} for n in range(5)]
    resp = await as_alice.post(_url(job), json={"items": items})
    assert resp.status_code == 202, resp.text
    assert resp.headers["Retry-After"] == "1"
    tasks = resp.json()["items"]
    assert [t["payload"]["n"] for t in tasks] == list(range(5))
    assert [t["queue_position"] for t in tasks] == [2, 3, 4, 5, 6]
    assert {t["status"] for t in tasks} == {"pending"}
    assert {t["job_name"] for t in tasks} == {job["full_name"]}
    assert {t["room_id"] for t in tasks} == {"lab"}
    assert (await flow.room_tasks(as_alice))["total"] == 6
    claimed = [await flow.claim(as_alice, job["worker_id"]) for _ in range(6)]
    assert [c["id"] for c in claimed] == [first["id"], *(t["id"] for t in tasks)]


async def test_batch_entries_keep_their_own_options(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    items = [
        {"payload": {"i": 0}},
        {"payload": {"i": 1}, "priority": 5, "max_attempts": 7, "timeout_seconds": 9},
        {"payload": {"i": 2}, "priority": 5},
    ]
    tasks = (await as_alice.post(_url(job), json={"items": items})).json()["items"]
    assert [t["priority"] for t in tasks] == [0, 5, 5]
    assert tasks[1]["max_attempts"] == 7
    assert tasks[1]["timeout_seconds"] == 9
    assert [t["queue_position"] for t in tasks] == [3, 1, 2]
    claimed = await flow.claim(as_alice, job["worker_id"])
    assert claimed["id"] == tasks[1]["id"]


async def test_one_bad_entry_refuses_the_whole_batch(as_alice, flow, problem) -> None:
    job = await flow.job(as_alice, schema=SCHEMA)
    items = [{"payload": {"n": 1}}, {"payload": {"n": 2}}, {"payload": {"n": "three"}}]
    body = problem(await as_alice.post(_url(job), json={"items": items}), 422, "invalid-payload")
    assert body["item"] == 2
    assert body["detail"].startswith("items[2]: ")
    assert [e["path"] for e in body["errors"]] == ["/n"]
    assert (await flow.room_tasks(as_alice))["total"] == 0


async def test_an_oversized_entry_refuses_the_batch(app, as_alice, flow, problem) -> None:
    app.state.joblib_settings = app.state.joblib_settings.model_copy(
        update={"max_payload_bytes": 100}
    )
    job = await flow.job(as_alice)
    items = [{"payload": {"x": 1}}, {"payload": {"x": "y" * 200}}]
    body = problem(await as_alice.post(_url(job), json={"items": items}), 413, "payload-too-large")
    assert body["item"] == 1
    assert (await flow.room_tasks(as_alice))["total"] == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"items": []}, {"items": [{"payload": {}}] * 1001}, {"items": [{"nope": 1}]}],
    ids=["missing", "empty", "too-many", "unknown-field"],
)
async def test_malformed_batches_are_validation_errors(as_alice, flow, problem, body) -> None:
    job = await flow.job(as_alice)
    problem(await as_alice.post(_url(job), json=body), 422, "validation-error")
    assert (await flow.room_tasks(as_alice))["total"] == 0


async def test_unknown_job_and_invalid_room(as_alice, flow, problem) -> None:
    job = await flow.job(as_alice)
    body = {"items": [{"payload": {}}]}
    problem(
        await as_alice.post(f"{P}/rooms/lab/jobs/lab:modifiers:Missing/tasks", json=body),
        404,
        "job-not-found",
    )
    problem(
        await as_alice.post(f"{P}/rooms/other/jobs/{job['full_name']}/tasks", json=body),
        404,
        "job-not-found",
    )
    problem(
        await as_alice.post(f"{P}/rooms/a:b/jobs/{job['full_name']}/tasks", json=body),
        400,
        "invalid-room-id",
    )


async def test_idempotent_batch_repeat_returns_the_same_tasks(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    body = {"items": [{"payload": {"i": i}} for i in range(3)]}
    key = {"Idempotency-Key": "batch-1"}
    first = await as_alice.post(_url(job), json=body, headers=key)
    assert first.status_code == 202
    again = await as_alice.post(_url(job), json=body, headers=key)
    assert again.status_code == 200, again.text
    assert [t["id"] for t in again.json()["items"]] == [t["id"] for t in first.json()["items"]]
    other = await as_alice.post(_url(job), json=body, headers={"Idempotency-Key": "batch-2"})
    assert other.status_code == 202
    assert (await flow.room_tasks(as_alice))["total"] == 6
    # a single submit with the same key is another task: keys of batch entries are derived
    single = await flow.submit(as_alice, job["full_name"], headers=key)
    assert single["id"] not in {t["id"] for t in first.json()["items"]}


async def test_batch_wakes_one_waiting_claim_per_task(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    workers = [job["worker_id"]]
    for _ in range(2):
        workers.append((await flow.job(as_alice))["worker_id"])
    polls = [
        asyncio.create_task(
            as_alice.post(f"{P}/tasks/claim", json={"worker_id": w}, headers={"Prefer": "wait=10"})
        )
        for w in workers
    ]
    await asyncio.sleep(0.3)
    resp = await as_alice.post(_url(job), json={"items": [{"payload": {}}] * 3})
    ids = {t["id"] for t in resp.json()["items"]}
    results = await asyncio.wait_for(asyncio.gather(*polls), 5)
    assert {r.json()["task"]["id"] for r in results} == ids


async def test_batch_emits_one_available_event_per_task(as_alice, flow, events) -> None:
    job = await flow.job(as_alice)
    resp = await as_alice.post(_url(job), json={"items": [{"payload": {}}] * 4})
    ids = {t["id"] for t in resp.json()["items"]}
    available = [e for e in events if isinstance(e, TaskAvailable)]
    assert {str(e.task_id) for e in available} == ids


async def test_a_room_the_caller_may_not_write_refuses_the_batch(app, as_alice, flow, problem):
    from zndraw_joblib_server import get_room_access

    class ReadOnly:
        async def can_read(self, actor, room_id):
            return True

        async def can_write(self, actor, room_id):
            return False

    job = await flow.job(as_alice)
    app.dependency_overrides[get_room_access] = ReadOnly
    try:
        resp = await as_alice.post(_url(job), json={"items": [{"payload": {}}]})
        problem(resp, 403, "forbidden")
    finally:
        app.dependency_overrides.clear()
    assert (await flow.room_tasks(as_alice))["total"] == 0


async def test_batch_positions_stay_right_when_read_back(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    items = [{"payload": {"i": i}} for i in range(30)] + [{"payload": {}, "priority": 1}]
    key = {"Idempotency-Key": "positions"}
    tasks = (await as_alice.post(_url(job), json={"items": items}, headers=key)).json()["items"]
    expected = [*range(2, 32), 1]
    assert [t["queue_position"] for t in tasks] == expected
    assert [(await flow.task(as_alice, t["id"]))["queue_position"] for t in tasks] == expected
    again = (await as_alice.post(_url(job), json={"items": items}, headers=key)).json()["items"]
    assert [t["queue_position"] for t in again] == expected
    listed = (await flow.room_tasks(as_alice))["items"]
    by_id = {t["id"]: t["queue_position"] for t in listed}
    assert [by_id[t["id"]] for t in tasks] == expected
    claimed = (
        await as_alice.post(
            f"{P}/tasks/claim", json={"worker_id": job["worker_id"], "max_tasks": 5}
        )
    ).json()["tasks"]
    assert [t["id"] for t in claimed] == [tasks[-1]["id"], *(t["id"] for t in tasks[:4])]
    assert (await flow.task(as_alice, tasks[4]["id"]))["queue_position"] == 1
