"""Per-user caps on workers and pending tasks: 429 ``quota-exceeded`` (issue 17 #10)."""

from __future__ import annotations

from typing import Any

import pytest

P = "/v1/joblib"
BODY = {"category": "modifiers", "name": "Rotate", "schema": {}}


@pytest.fixture(params=[True, False], ids=["lane", "fastapi"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Small caps; submits and claims are hot routes: check both request paths."""
    return {
        "fast_lane": request.param,
        "max_workers_per_user": 2,
        "max_pending_tasks_per_user": 3,
    }


async def _workers(client) -> int:
    return int((await client.get(f"{P}/workers", params={"limit": 0})).json()["total"])


async def test_worker_cap(as_alice, as_admin, flow, problem) -> None:
    first = await flow.worker(as_alice)
    await flow.job(as_alice)  # creates the second worker
    body = problem(await as_alice.post(f"{P}/workers"), 429, "quota-exceeded")
    assert "2 workers" in body["detail"]
    problem(await as_alice.put(f"{P}/rooms/lab/jobs", json=BODY), 429, "quota-exceeded")
    assert await _workers(as_alice) == 2
    # linking an existing worker is no new worker
    linked = await as_alice.put(f"{P}/rooms/lab/jobs", json={**BODY, "worker_id": first})
    assert linked.status_code == 200, linked.text
    # superusers are exempt
    for _ in range(3):
        await flow.worker(as_admin)
    # removing one makes room
    assert (await as_alice.delete(f"{P}/workers/{first}")).status_code == 204
    await flow.worker(as_alice)


async def test_pending_task_cap(as_alice, as_bob, as_admin, flow, problem) -> None:
    job = await flow.job(as_admin, "@global")
    url = f"{P}/rooms/lab/tasks/{job['full_name']}"
    batch = f"{P}/rooms/lab/jobs/{job['full_name']}/tasks"
    key = {"Idempotency-Key": "k"}
    assert (await as_alice.post(url, json={"payload": {}}, headers=key)).status_code == 202
    two = {"items": [{"payload": {}}, {"payload": {}}]}
    assert (await as_alice.post(batch, json=two)).status_code == 202
    body = problem(await as_alice.post(url, json={"payload": {}}), 429, "quota-exceeded")
    assert "3 pending tasks" in body["detail"]
    problem(await as_alice.post(batch, json=two), 429, "quota-exceeded")
    # a repeat of an idempotent submit still answers
    assert (await as_alice.post(url, json={"payload": {}}, headers=key)).status_code == 200
    total = (await as_alice.get(f"{P}/rooms/lab/tasks", params={"limit": 0})).json()["total"]
    assert total == 3
    # the cap is per user, superusers are exempt
    assert (await as_bob.post(url, json={"payload": {}})).status_code == 202
    for _ in range(4):
        assert (await as_admin.post(url, json={"payload": {}})).status_code == 202
    # claimed tasks no longer count
    claimed = await as_admin.post(
        f"{P}/tasks/claim", json={"worker_id": job["worker_id"], "max_tasks": 50}
    )
    assert len(claimed.json()["tasks"]) == 8
    assert (await as_alice.post(batch, json=two)).status_code == 202


async def test_a_batch_larger_than_the_cap_is_refused(as_alice, as_admin, flow, problem) -> None:
    job = await flow.job(as_admin, "@global")
    batch = f"{P}/rooms/lab/jobs/{job['full_name']}/tasks"
    four = {"items": [{"payload": {}}] * 4}
    problem(await as_alice.post(batch, json=four), 429, "quota-exceeded")
