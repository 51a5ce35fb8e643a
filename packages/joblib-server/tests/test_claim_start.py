"""One request per task: a claim that starts its tasks, and updates that carry the next claim.

Every test runs with the fast lane on and off, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

# The lane on and off in every run (in every mode with the conformance session).
pytestmark = [pytest.mark.conformance, pytest.mark.vary("fast_lane")]

P = "/v1/joblib"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_claim_with_start_hands_out_running_tasks(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    plain = await flow.submit(as_alice, job["full_name"], priority=1)
    timed = await flow.submit(as_alice, job["full_name"], timeout_seconds=30, lease_seconds=5)
    resp = await as_alice.post(
        f"{P}/tasks/claim", json={"worker_id": worker, "max_tasks": 5, "start": True}
    )
    assert resp.status_code == 200, resp.text
    tasks = resp.json()["tasks"]
    assert [t["id"] for t in tasks] == [plain["id"], timed["id"]]  # claim order kept
    for task in tasks:
        assert task["status"] == "running"
        assert task["worker_id"] == worker
        assert task["attempt"] == 1
        assert task["started_at"] is not None
    first, second = tasks
    assert ts(first["lease_expires_at"]) > ts(first["started_at"]) + timedelta(seconds=30)
    lease = ts(second["lease_expires_at"]) - ts(second["started_at"])
    assert timedelta(seconds=4) < lease <= timedelta(seconds=5)  # the task's own lease
    stored = await flow.task(as_alice, timed["id"])
    assert stored["status"] == "running"
    assert stored["lease_expires_at"] == second["lease_expires_at"]
    # started tasks complete as usual; a second start is refused as a PATCH would be
    done = await flow.move(as_alice, first["id"], "completed", worker_id=worker, result=1)
    assert done["status"] == "completed"
    again = await flow.patch(as_alice, second["id"], status="running", worker_id=worker)
    assert again.status_code == 409


async def test_claim_without_start_is_unchanged(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    await flow.submit(as_alice, job["full_name"])
    task = await flow.claim(as_alice, job["worker_id"])
    assert task is not None
    assert task["status"] == "claimed"
    assert task["started_at"] is None


async def test_waiting_claim_with_start_gets_running_tasks(as_alice, flow) -> None:
    job = await flow.job(as_alice)

    async def wait_claim() -> Any:
        return await as_alice.post(
            f"{P}/tasks/claim",
            json={"worker_id": job["worker_id"], "start": True},
            headers={"Prefer": "wait=8"},
        )

    waiter = asyncio.create_task(wait_claim())
    await asyncio.sleep(0.2)  # let the claim park (a claim arriving later finds the task anyway)
    # a batch submit runs in a transaction: it hands the task to the parked claim
    resp = await as_alice.post(
        f"{P}/rooms/lab/jobs/{job['full_name']}/tasks", json={"items": [{"payload": {}}]}
    )
    assert resp.status_code == 202, resp.text
    answer = await waiter
    assert answer.status_code == 200
    task = answer.json()["task"]
    assert task["status"] == "running"
    assert task["started_at"] is not None


async def test_completion_carries_the_next_claim(as_alice, flow) -> None:
    job, worker, task = await flow.claimed(as_alice, running=True)
    nxt = [await flow.submit(as_alice, job["full_name"]) for _ in range(3)]
    resp = await flow.patch(
        as_alice,
        task["id"],
        status="completed",
        worker_id=worker,
        result={"ok": True},
        claim_next={"worker_id": worker, "max_tasks": 2, "start": True},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == task["id"]
    assert body["status"] == "completed"
    assert body["result"] == {"ok": True}
    claimed = body["claimed"]
    assert claimed["problem"] is None
    assert [t["id"] for t in claimed["tasks"]] == [nxt[0]["id"], nxt[1]["id"]]
    assert claimed["task"]["id"] == nxt[0]["id"]
    assert all(t["status"] == "running" for t in claimed["tasks"])
    assert (await flow.task(as_alice, nxt[2]["id"]))["status"] == "pending"
    # without claim_next the answer is the task, as before
    plain = await flow.move(as_alice, nxt[0]["id"], "completed", worker_id=worker)
    assert plain.get("claimed") is None


async def test_failure_with_next_claim_and_wait(as_alice, flow) -> None:
    job, worker, task = await flow.claimed(as_alice, running=True)

    async def fail() -> Any:
        return await as_alice.patch(
            f"{P}/tasks/{task['id']}",
            json={
                "status": "failed",
                "error": "boom",
                "worker_id": worker,
                "claim_next": {"worker_id": worker},
            },
            headers={"Prefer": "wait=8"},
        )

    pending = asyncio.create_task(fail())
    deadline = asyncio.get_running_loop().time() + 8
    while (await flow.task(as_alice, task["id"]))["status"] != "failed":
        assert asyncio.get_running_loop().time() < deadline  # applied before the wait
        await asyncio.sleep(0.05)
    sub = await flow.submit(as_alice, job["full_name"])
    resp = await pending
    assert resp.status_code == 200, resp.text
    assert resp.headers["preference-applied"] == "wait=8"
    assert resp.json()["status"] == "failed"
    assert resp.json()["claimed"]["task"]["id"] == sub["id"]
    assert resp.json()["claimed"]["task"]["status"] == "claimed"


async def test_refused_update_claims_nothing(as_alice, flow) -> None:
    job, worker, task = await flow.claimed(as_alice, running=True)
    other = await flow.worker(as_alice)
    waiting = await flow.submit(as_alice, job["full_name"])
    resp = await flow.patch(
        as_alice,
        task["id"],
        status="completed",
        worker_id=other,
        claim_next={"worker_id": worker},
    )
    assert resp.status_code == 409
    assert (await flow.task(as_alice, waiting["id"]))["status"] == "pending"
    assert (await flow.task(as_alice, task["id"]))["status"] == "running"


async def test_a_lost_lease_claims_nothing_for_its_worker(as_alice, flow) -> None:
    """The worker's own report refused (its lease ran out): its next claim is not made."""
    job, worker, task = await flow.claimed(as_alice, running=True, lease_seconds=0.2)
    waiting = await flow.submit(as_alice, job["full_name"])
    await asyncio.sleep(0.4)  # the lease runs out (no sweeper here: the task stays running)
    resp = await flow.patch(
        as_alice,
        task["id"],
        status="completed",
        worker_id=worker,
        claim_next={"worker_id": worker, "start": True},
    )
    assert resp.status_code == 409, resp.text
    assert resp.json()["type"].endswith("lease-lost")
    assert (await flow.task(as_alice, waiting["id"]))["status"] == "pending"
    assert (await flow.task(as_alice, task["id"]))["status"] == "running"


async def test_refused_claim_keeps_the_update(as_alice, as_bob, flow) -> None:
    _job, worker, task = await flow.claimed(as_alice, running=True)
    bobs = await flow.worker(as_bob)
    resp = await flow.patch(
        as_alice,
        task["id"],
        status="completed",
        worker_id=worker,
        claim_next={"worker_id": bobs},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "completed"
    assert resp.json()["claimed"]["tasks"] == []
    assert resp.json()["claimed"]["problem"]["status"] == 403


async def test_bad_claim_next_is_refused_and_changes_nothing(as_alice, flow, problem) -> None:
    _job, worker, task = await flow.claimed(as_alice, running=True)
    resp = await flow.patch(
        as_alice,
        task["id"],
        status="completed",
        worker_id=worker,
        claim_next={"worker_id": worker, "max_tasks": 0},
    )
    problem(resp, 422)
    assert (await flow.task(as_alice, task["id"]))["status"] == "running"


async def test_batch_update_carries_the_next_claim(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    for _ in range(4):
        await flow.submit(as_alice, job["full_name"])
    resp = await as_alice.post(
        f"{P}/tasks/claim", json={"worker_id": worker, "max_tasks": 2, "start": True}
    )
    first = resp.json()["tasks"]
    items = [
        {"task_id": t["id"], "status": "completed", "worker_id": worker, "result": n}
        for n, t in enumerate(first)
    ]
    resp = await as_alice.patch(
        f"{P}/tasks",
        json={"items": items, "claim_next": {"worker_id": worker, "max_tasks": 5, "start": True}},
        headers={"Prefer": "return=minimal, wait=3"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["preference-applied"] == "return=minimal, wait=3"
    body = resp.json()
    assert [o["ok"] for o in body["items"]] == [True, True]
    assert len(body["claimed"]["tasks"]) == 2
    assert all(t["status"] == "running" for t in body["claimed"]["tasks"])
    for task in first:
        assert (await flow.task(as_alice, task["id"]))["status"] == "completed"
    # the list form answers as before
    items = [
        {"task_id": t["id"], "status": "completed", "worker_id": worker}
        for t in body["claimed"]["tasks"]
    ]
    resp = await as_alice.patch(f"{P}/tasks", json=items)
    assert resp.status_code == 200, resp.text
    assert resp.json()["claimed"] is None
    assert [o["ok"] for o in resp.json()["items"]] == [True, True]


async def test_batch_object_form_checks_its_input(as_alice, flow, problem) -> None:
    _job, worker, task = await flow.claimed(as_alice, running=True)
    item = {"task_id": task["id"], "status": "completed", "worker_id": worker}
    resp = await as_alice.patch(
        f"{P}/tasks", json={"items": [item], "claim_next": {"max_tasks": 1}}
    )
    problem(resp, 422)
    resp = await as_alice.patch(f"{P}/tasks", json={"items": [item] * 501})
    assert resp.status_code in (413, 422)
    assert (await flow.task(as_alice, task["id"]))["status"] == "running"
