"""PATCH /tasks/{id}: the transition table, progress, results, retries, fencing, ownership."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"
STATUSES = ["pending", "claimed", "running", "completed", "failed", "cancelled"]
VALID = {
    ("pending", "claimed"),
    ("pending", "cancelled"),
    ("claimed", "running"),
    ("claimed", "failed"),
    ("claimed", "cancelled"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _task_in(state: str, client, flow) -> tuple[dict, str]:
    """A task of ``client``'s worker in ``state``; returns (task, worker_id)."""
    job = await flow.job(client)
    worker = job["worker_id"]
    task = await flow.submit(client, job["full_name"], max_attempts=1)
    if state == "pending":
        return task, worker
    if state == "cancelled":
        resp = await client.post(f"{P}/tasks/{task['id']}/cancel")
        assert resp.status_code == 200
        return resp.json(), worker
    task = await flow.claim(client, worker)
    if state == "claimed":
        return task, worker
    if state == "failed":
        return await flow.move(client, task["id"], "failed", worker_id=worker, error="x"), worker
    task = await flow.move(client, task["id"], "running", worker_id=worker)
    if state == "running":
        return task, worker
    assert state == "completed"
    return await flow.move(client, task["id"], "completed", worker_id=worker), worker


@pytest.mark.parametrize("source", STATUSES)
async def test_invalid_transitions_409_and_change_nothing(
    as_alice, as_admin, flow, problem, source
) -> None:
    task, _ = await _task_in(source, as_alice, flow)
    before = await flow.task(as_alice, task["id"])
    targets = [t for t in STATUSES if (source, t) not in VALID]
    assert targets
    for target in targets:
        resp = await flow.patch(as_admin, task["id"], status=target)
        body = problem(resp, 409, "invalid-task-transition")
        assert source in body["detail"]
        assert await flow.task(as_alice, task["id"]) == before


async def test_invalid_transition_by_the_worker_owner(as_alice, flow, problem) -> None:
    task, worker = await _task_in("running", as_alice, flow)
    before = await flow.task(as_alice, task["id"])
    for target in ("pending", "claimed", "running"):
        resp = await flow.patch(as_alice, task["id"], status=target, worker_id=worker)
        problem(resp, 409, "invalid-task-transition")
    assert await flow.task(as_alice, task["id"]) == before


async def test_claimed_to_running_sets_started_at_and_lease(as_alice, flow) -> None:
    task, worker = await _task_in("claimed", as_alice, flow)
    assert task["started_at"] is None
    assert task["attempt"] == 1
    await asyncio.sleep(0.01)
    running = await flow.move(as_alice, task["id"], "running", worker_id=worker)
    assert running["status"] == "running"
    assert ts(running["started_at"]) >= ts(task["created_at"])
    assert ts(running["lease_expires_at"]) > ts(task["lease_expires_at"])
    assert running["completed_at"] is None
    assert running["worker_id"] == worker


async def test_running_to_completed_with_result(as_alice, flow) -> None:
    task, worker = await _task_in("running", as_alice, flow)
    result = {"frames": [1, 2, 3], "energy": -1.5, "ok": True, "none": None}
    done = await flow.move(as_alice, task["id"], "completed", worker_id=worker, result=result)
    assert done["status"] == "completed"
    assert done["result"] == result
    assert ts(done["completed_at"]) >= ts(done["started_at"])
    assert done["lease_expires_at"] is None
    assert done["error"] is None
    assert (await flow.task(as_alice, task["id"]))["result"] == result


@pytest.mark.parametrize("result", [[1, "two"], 42, "text", None])
async def test_completed_result_any_json(as_alice, flow, result) -> None:
    task, worker = await _task_in("running", as_alice, flow)
    done = await flow.move(as_alice, task["id"], "completed", worker_id=worker, result=result)
    assert done["result"] == result


@pytest.mark.parametrize("source", ["claimed", "running"])
async def test_fail_records_error_and_completed_at(as_alice, flow, source) -> None:
    task, worker = await _task_in(source, as_alice, flow)
    failed = await flow.move(as_alice, task["id"], "failed", worker_id=worker, error="boom")
    assert failed["status"] == "failed"
    assert failed["error"] == "boom"
    assert failed["completed_at"] is not None
    assert failed["lease_expires_at"] is None


@pytest.mark.parametrize("source", ["claimed", "running"])
async def test_worker_cancels_in_flight_task(as_alice, flow, source) -> None:
    task, worker = await _task_in(source, as_alice, flow)
    done = await flow.move(as_alice, task["id"], "cancelled", worker_id=worker)
    assert done["status"] == "cancelled"
    assert done["completed_at"] is not None


async def test_pending_to_cancelled_by_patch(as_alice, as_admin, flow) -> None:
    mine, _ = await _task_in("pending", as_alice, flow)
    # the submitter (not owning any worker holding it) may cancel through PATCH
    done = await flow.move(as_alice, mine["id"], "cancelled")
    assert done["status"] == "cancelled"
    assert done["completed_at"] is not None
    job = await flow.job(as_alice, name="Other")
    other = await flow.submit(as_alice, job["full_name"])
    done = await flow.move(as_admin, other["id"], "cancelled")
    assert done["status"] == "cancelled"


async def test_pending_to_claimed_by_patch_superuser_only(
    as_alice, as_admin, flow, problem
) -> None:
    task, _ = await _task_in("pending", as_alice, flow)
    problem(await flow.patch(as_alice, task["id"], status="claimed"), 403, "forbidden")
    assert (await flow.task(as_alice, task["id"]))["status"] == "pending"
    claimed = await flow.move(as_admin, task["id"], "claimed")
    assert claimed["status"] == "claimed"
    assert claimed["attempt"] == 1
    assert claimed["lease_expires_at"] is not None
    assert claimed["queue_position"] is None


async def test_progress_and_message_while_running(as_alice, flow, problem) -> None:
    task, worker = await _task_in("running", as_alice, flow)
    resp = await flow.patch(as_alice, task["id"], worker_id=worker, progress=0.25, message="a")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "running"
    assert resp.json()["progress"] == 0.25
    assert resp.json()["message"] == "a"
    resp = await flow.patch(as_alice, task["id"], worker_id=worker, message="b")
    got = await flow.task(as_alice, task["id"])
    assert (got["progress"], got["message"], got["status"]) == (0.25, "b", "running")
    for bad in (-0.1, 1.01, "half"):
        resp = await flow.patch(as_alice, task["id"], worker_id=worker, progress=bad)
        problem(resp, 422, "validation-error")
    assert (await flow.task(as_alice, task["id"]))["progress"] == 0.25


@pytest.mark.parametrize("source", ["pending", "claimed", "completed"])
async def test_progress_outside_running_is_409(as_alice, as_admin, flow, problem, source) -> None:
    task, _ = await _task_in(source, as_alice, flow)
    before = await flow.task(as_alice, task["id"])
    client = as_admin if source == "pending" else as_alice
    resp = await flow.patch(client, task["id"], progress=0.5, message="m")
    problem(resp, 409, "invalid-task-transition")
    assert await flow.task(as_alice, task["id"]) == before


async def test_unknown_task_404_and_bad_id_422(as_alice, problem) -> None:
    resp = await as_alice.patch(
        f"{P}/tasks/00000000-0000-4000-8000-000000000000", json={"status": "running"}
    )
    problem(resp, 404, "task-not-found")
    problem(
        await as_alice.patch(f"{P}/tasks/not-a-uuid", json={"status": "running"}),
        422,
        "validation-error",
    )
    problem(await as_alice.get(f"{P}/tasks/not-a-uuid"), 422, "validation-error")
    problem(
        await as_alice.get(f"{P}/tasks/00000000-0000-4000-8000-000000000000"),
        404,
        "task-not-found",
    )


async def test_unknown_status_is_validation_error(as_alice, flow, problem) -> None:
    task, worker = await _task_in("running", as_alice, flow)
    resp = await flow.patch(as_alice, task["id"], status="done", worker_id=worker)
    problem(resp, 422, "validation-error")
    assert (await flow.task(as_alice, task["id"]))["status"] == "running"


# ----------------------------------------------------------------------------- ownership


async def test_only_the_workers_owner_or_superuser_may_update(
    as_alice, as_bob, as_admin, flow, problem
) -> None:
    task, worker = await _task_in("claimed", as_alice, flow)
    before = await flow.task(as_alice, task["id"])
    problem(await flow.patch(as_bob, task["id"], status="running"), 403, "forbidden")
    problem(
        await flow.patch(as_bob, task["id"], status="running", worker_id=worker), 403, "forbidden"
    )
    assert await flow.task(as_alice, task["id"]) == before
    running = await flow.move(as_admin, task["id"], "running")
    assert running["status"] == "running"
    assert running["worker_id"] == worker
    done = await flow.move(as_admin, task["id"], "completed", worker_id=worker)
    assert done["status"] == "completed"


async def test_submitter_cancelling_through_patch_requests_cancel(
    as_alice, as_bob, flow, problem
) -> None:
    job = await flow.job(as_alice)
    task = await flow.submit(as_bob, job["full_name"])
    await flow.claim(as_alice, job["worker_id"])
    await flow.move(as_alice, task["id"], "running", worker_id=job["worker_id"])
    resp = await flow.patch(as_bob, task["id"], status="cancelled")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "running"
    assert resp.json()["cancel_requested"] is True
    # a non-submitter who does not own the worker may not
    job2 = await flow.job(as_alice, name="Two")
    t2 = await flow.submit(as_alice, job2["full_name"])
    problem(await flow.patch(as_bob, t2["id"], status="cancelled"), 403, "forbidden")
    assert (await flow.task(as_bob, t2["id"]))["status"] == "pending"


# ------------------------------------------------------------------------------- retries


async def test_retry_requeues_with_backoff(as_alice, flow) -> None:
    task, worker = await _task_in("running", as_alice, flow)
    job = task["job_name"]
    t = await flow.submit(as_alice, job, max_attempts=3)
    await flow.claim(as_alice, worker)
    await flow.move(as_alice, t["id"], "running", worker_id=worker, progress=0.5)
    back = await flow.move(
        as_alice, t["id"], "failed", worker_id=worker, error="flaky", retry=True
    )
    assert back["status"] == "pending"
    assert back["attempt"] == 1
    assert back["worker_id"] is None
    assert back["started_at"] is None
    assert back["completed_at"] is None
    assert back["progress"] is None
    assert back["lease_expires_at"] is None
    assert "flaky" in back["error"]
    assert ts(back["run_after"]) > datetime.now(UTC)  # backoff (1 s by default)
    assert await flow.claim(as_alice, worker) is None  # not due yet


async def test_failed_without_retry_is_final(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"], max_attempts=5)
    await flow.claim(as_alice, job["worker_id"])
    done = await flow.move(as_alice, t["id"], "failed", worker_id=job["worker_id"], error="no")
    assert done["status"] == "failed"
    assert done["attempt"] == 1


class TestRetryWithoutBackoff:
    @pytest.fixture
    def settings_overrides(self) -> dict:
        return {"retry_backoff_seconds": 0}

    async def test_max_attempts_respected(self, as_alice, flow) -> None:
        job = await flow.job(as_alice)
        worker = job["worker_id"]
        t = await flow.submit(as_alice, job["full_name"], max_attempts=2)
        first = await flow.claim(as_alice, worker)
        assert first["attempt"] == 1
        back = await flow.move(as_alice, t["id"], "failed", worker_id=worker, retry=True)
        assert back["status"] == "pending"
        second = await flow.claim(as_alice, worker)
        assert second["id"] == t["id"]
        assert second["attempt"] == 2
        await flow.move(as_alice, t["id"], "running", worker_id=worker)
        final = await flow.move(
            as_alice, t["id"], "failed", worker_id=worker, retry=True, error="again"
        )
        assert final["status"] == "failed"
        assert final["attempt"] == 2
        assert final["error"] == "again"
        assert final["completed_at"] is not None
        assert await flow.claim(as_alice, worker) is None

    async def test_retry_of_cancel_requested_task_does_not_requeue(self, as_alice, flow) -> None:
        job = await flow.job(as_alice)
        worker = job["worker_id"]
        t = await flow.submit(as_alice, job["full_name"], max_attempts=3)
        await flow.claim(as_alice, worker)
        await flow.move(as_alice, t["id"], "running", worker_id=worker)
        assert (await as_alice.post(f"{P}/tasks/{t['id']}/cancel")).status_code == 200
        resp = await flow.patch(as_alice, t["id"], status="failed", worker_id=worker, retry=True)
        assert resp.status_code in (200, 409)
        got = await flow.task(as_alice, t["id"])
        assert got["status"] != "pending"
        assert await flow.claim(as_alice, worker) is None


# ------------------------------------------------------------------------------- fencing


async def test_update_with_a_worker_that_does_not_hold_the_task(as_alice, flow, problem) -> None:
    task, worker = await _task_in("claimed", as_alice, flow)
    other = await flow.worker(as_alice)  # same user, different worker
    before = await flow.task(as_alice, task["id"])
    for body in ({"status": "running"}, {"status": "failed"}, {"progress": 0.5}):
        resp = await flow.patch(as_alice, task["id"], worker_id=other, **body)
        problem(resp, 409, "lease-lost")
    assert await flow.task(as_alice, task["id"]) == before
    await flow.move(as_alice, task["id"], "running", worker_id=worker)


async def test_update_naming_a_strangers_worker_is_forbidden(
    as_alice, as_bob, flow, problem
) -> None:
    """A worker that holds none of the tasks is still checked for its owner (403, not 409)."""
    task, _ = await _task_in("claimed", as_alice, flow)
    bobs = await flow.worker(as_bob)
    before = await flow.task(as_alice, task["id"])
    problem(
        await flow.patch(as_alice, task["id"], status="running", worker_id=bobs), 403, "forbidden"
    )
    resp = await as_alice.patch(
        f"{P}/tasks", json=[{"task_id": task["id"], "status": "running", "worker_id": bobs}]
    )
    assert resp.json()["items"][0]["problem"]["type"] == "/v1/problems/forbidden"
    assert await flow.task(as_alice, task["id"]) == before


async def test_update_after_lease_expired_is_lease_lost(as_alice, flow, problem) -> None:
    _, worker, task = await flow.claimed(as_alice, lease_seconds=0.3)
    await asyncio.sleep(0.5)
    before = await flow.task(as_alice, task["id"])
    problem(
        await flow.patch(as_alice, task["id"], status="running", worker_id=worker),
        409,
        "lease-lost",
    )
    # a heartbeat does not revive an expired lease
    assert (await as_alice.patch(f"{P}/workers/{worker}")).status_code == 200
    problem(
        await flow.patch(as_alice, task["id"], status="running", worker_id=worker),
        409,
        "lease-lost",
    )
    assert await flow.task(as_alice, task["id"]) == before


async def test_update_without_worker_id_is_checked_by_ownership_only(as_alice, flow) -> None:
    """0.1.7 clients send no worker_id: an expired lease does not stop them."""
    _, _, task = await flow.claimed(as_alice, lease_seconds=0.3)
    await asyncio.sleep(0.5)
    running = await flow.move(as_alice, task["id"], "running")
    assert running["status"] == "running"
    done = await flow.move(as_alice, task["id"], "completed")
    assert done["status"] == "completed"


async def test_repeated_final_report_is_harmless(as_alice, flow) -> None:
    task, worker = await _task_in("running", as_alice, flow)
    done = await flow.move(as_alice, task["id"], "completed", worker_id=worker, result=1)
    again = await flow.move(as_alice, task["id"], "completed", worker_id=worker, result=2)
    assert again["result"] == 1
    assert again["completed_at"] == done["completed_at"]


async def test_old_worker_fenced_after_reclaim(as_alice, flow, sweep, problem) -> None:
    job = await flow.job(as_alice)
    old = job["worker_id"]
    new = (await flow.job(as_alice))["worker_id"]
    t = await flow.submit(as_alice, job["full_name"], lease_seconds=0.3)
    await flow.claim(as_alice, old)
    await asyncio.sleep(0.5)
    report = await sweep()
    assert report.tasks_released == 1
    # the retry backoff (1 s by default) keeps the task from being claimed at once
    await asyncio.sleep(1.1)
    again = await flow.claim(as_alice, new)
    assert again["id"] == t["id"]
    assert again["attempt"] == 2
    # the new worker starts at once (its lease is the task's 0.3 s too)
    await flow.move(as_alice, t["id"], "running", worker_id=new)
    problem(
        await flow.patch(as_alice, t["id"], status="running", worker_id=old), 409, "lease-lost"
    )
    got = await flow.task(as_alice, t["id"])
    assert got["status"] == "running"
    assert got["worker_id"] == new


async def test_old_worker_update_after_requeue_is_lease_lost(
    as_alice, flow, sweep, problem
) -> None:
    _, worker, task = await flow.claimed(as_alice, lease_seconds=0.3)
    await asyncio.sleep(0.5)
    await sweep()
    assert (await flow.task(as_alice, task["id"]))["status"] == "pending"
    resp = await flow.patch(as_alice, task["id"], status="running", worker_id=worker)
    problem(resp, 409, "lease-lost")


class TestShortGlobalLease:
    @pytest.fixture
    def settings_overrides(self) -> dict:
        return {"lease_seconds": 0.3}

    async def test_update_after_global_lease_expired(self, as_alice, flow, problem) -> None:
        _, worker, task = await flow.claimed(as_alice)
        assert ts(task["lease_expires_at"]) > ts(task["created_at"])
        await asyncio.sleep(0.5)
        problem(
            await flow.patch(as_alice, task["id"], progress=0.1, worker_id=worker),
            409,
            "lease-lost",
        )
        assert (await flow.task(as_alice, task["id"]))["status"] == "claimed"


# --------------------------------------------------------------------------- batch update


async def test_batch_update_mixed_outcomes(as_alice, as_bob, flow) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    other = await flow.worker(as_alice)
    a = await flow.submit(as_alice, job["full_name"])
    b = await flow.submit(as_alice, job["full_name"])
    c = await flow.submit(as_alice, job["full_name"])
    for _ in range(3):
        await flow.claim(as_alice, worker)
    await flow.move(as_alice, c["id"], "running", worker_id=worker)
    b_before = await flow.task(as_alice, b["id"])
    c_before = await flow.task(as_alice, c["id"])
    missing = "00000000-0000-4000-8000-0000000000aa"
    items = [
        {"task_id": a["id"], "status": "running", "worker_id": worker},
        {"task_id": b["id"], "status": "running", "worker_id": other},
        {"task_id": missing, "status": "running", "worker_id": worker},
        {"task_id": c["id"], "status": "claimed", "worker_id": worker},
    ]
    resp = await as_alice.patch(f"{P}/tasks", json=items)
    assert resp.status_code == 200, resp.text
    out = resp.json()["items"]
    assert [o["task_id"] for o in out] == [a["id"], b["id"], missing, c["id"]]
    assert out[0]["ok"] is True
    assert out[0]["task"]["status"] == "running"
    assert [o["ok"] for o in out[1:]] == [False, False, False]
    assert out[1]["problem"]["type"] == "/v1/problems/lease-lost"
    assert out[1]["problem"]["status"] == 409
    assert out[2]["problem"]["type"] == "/v1/problems/task-not-found"
    assert out[2]["problem"]["status"] == 404
    assert out[3]["problem"]["type"] == "/v1/problems/invalid-task-transition"
    assert (await flow.task(as_alice, a["id"]))["status"] == "running"
    assert await flow.task(as_alice, b["id"]) == b_before
    assert await flow.task(as_alice, c["id"]) == c_before
    # another user's entries are refused one by one
    resp = await as_bob.patch(f"{P}/tasks", json=[{"task_id": a["id"], "progress": 0.5}])
    assert resp.json()["items"][0]["problem"]["type"] == "/v1/problems/forbidden"
    assert (await flow.task(as_alice, a["id"]))["progress"] is None


async def test_batch_update_progress_of_many(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    ids = []
    for _ in range(3):
        ids.append((await flow.submit(as_alice, job["full_name"]))["id"])
    resp = await as_alice.post(f"{P}/tasks/claim", json={"worker_id": worker, "max_tasks": 3})
    assert len(resp.json()["tasks"]) == 3
    items = [{"task_id": i, "status": "running", "worker_id": worker} for i in ids]
    out = (await as_alice.patch(f"{P}/tasks", json=items)).json()["items"]
    assert all(o["ok"] for o in out)
    items = [
        {"task_id": i, "status": "completed", "worker_id": worker, "result": n}
        for n, i in enumerate(ids)
    ]
    out = (await as_alice.patch(f"{P}/tasks", json=items)).json()["items"]
    assert [o["task"]["result"] for o in out] == [0, 1, 2]
    for n, i in enumerate(ids):
        got = await flow.task(as_alice, i)
        assert (got["status"], got["result"]) == ("completed", n)


async def test_batch_update_empty_and_malformed(as_alice, problem) -> None:
    resp = await as_alice.patch(f"{P}/tasks", json=[])
    assert resp.status_code == 200
    assert resp.json()["items"] == []
    assert resp.json().get("claimed") is None  # asked for no claim
    problem(await as_alice.patch(f"{P}/tasks", json={"task_id": "x"}), 422, "validation-error")
    problem(await as_alice.patch(f"{P}/tasks", json=[{"status": "running"}]), 422)


async def test_batch_update_same_task_twice_applies_in_order(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    task = await flow.submit(as_alice, job["full_name"])
    await flow.claim(as_alice, worker)
    items = [
        {"task_id": task["id"], "status": "running", "worker_id": worker},
        {"task_id": task["id"], "progress": 0.5, "worker_id": worker},
        {"task_id": task["id"], "status": "running", "worker_id": worker},
        {"task_id": task["id"], "status": "completed", "worker_id": worker, "result": 7},
    ]
    out = (await as_alice.patch(f"{P}/tasks", json=items)).json()["items"]
    assert [o["ok"] for o in out] == [True, True, False, True]
    assert out[0]["task"]["status"] == "running"
    assert out[1]["task"]["progress"] == 0.5
    assert out[2]["problem"]["type"] == "/v1/problems/invalid-task-transition"
    assert (out[3]["task"]["status"], out[3]["task"]["result"]) == ("completed", 7)
    assert [o["task"]["version"] for o in out if o["ok"]] == [2, 3, 4]
    got = await flow.task(as_alice, task["id"])
    assert (got["status"], got["result"], got["version"]) == ("completed", 7, 4)


@pytest.mark.parametrize("prefer", ["return=minimal", "respond-async, return=minimal"])
async def test_batch_update_return_minimal(as_alice, flow, prefer) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    a = await flow.submit(as_alice, job["full_name"])
    b = await flow.submit(as_alice, job["full_name"])
    await flow.claim(as_alice, worker)
    items = [
        {"task_id": a["id"], "status": "running", "worker_id": worker},
        {"task_id": b["id"], "status": "running", "worker_id": worker},
    ]
    resp = await as_alice.patch(f"{P}/tasks", json=items, headers={"Prefer": prefer})
    assert resp.status_code == 200, resp.text
    assert resp.headers["Preference-Applied"] == "return=minimal"
    out = resp.json()["items"]
    assert [(o["task_id"], o["ok"], o["task"]) for o in out] == [
        (a["id"], True, None),
        (b["id"], False, None),
    ]
    assert out[1]["problem"]["status"] == 409
    assert (await flow.task(as_alice, a["id"]))["status"] == "running"
    assert (await flow.task(as_alice, b["id"]))["status"] == "pending"


async def test_batch_update_return_minimal_writes_everything(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    ids = [(await flow.submit(as_alice, job["full_name"], max_attempts=2))["id"] for _ in range(3)]
    await as_alice.post(f"{P}/tasks/claim", json={"worker_id": worker, "max_tasks": 3})
    minimal = {"Prefer": "return=minimal"}
    start = [{"task_id": i, "status": "running", "worker_id": worker} for i in ids]
    resp = await as_alice.patch(f"{P}/tasks", json=start, headers=minimal)
    assert [o["ok"] for o in resp.json()["items"]] == [True] * 3
    finish = [
        {"task_id": ids[0], "status": "completed", "worker_id": worker, "result": {"x": 1}},
        {"task_id": ids[1], "status": "failed", "worker_id": worker, "error": "boom"},
        {"task_id": ids[2], "status": "failed", "worker_id": worker, "retry": True},
        {"task_id": ids[2], "progress": 0.5, "worker_id": worker},
    ]
    resp = await as_alice.patch(f"{P}/tasks", json=finish, headers=minimal)
    assert [o["ok"] for o in resp.json()["items"]] == [True, True, True, False]
    done, failed, retried = [await flow.task(as_alice, i) for i in ids]
    assert (done["status"], done["result"], done["version"]) == ("completed", {"x": 1}, 3)
    assert done["completed_at"] is not None
    assert done["started_at"] is not None
    assert done["lease_expires_at"] is None
    assert (failed["status"], failed["error"]) == ("failed", "boom")
    assert (retried["status"], retried["worker_id"], retried["attempt"]) == ("pending", None, 1)
    assert retried["started_at"] is None
    assert retried["run_after"] > done["started_at"]
    assert retried["payload"] == {}
    assert done["payload"] == {}
