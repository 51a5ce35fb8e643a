"""Who may do what: each acting endpoint for the owner, another user and a superuser.

The owner is alice; bob is another regular user; root is a superuser. Every refusal must
change nothing (checked by re-reading the resource).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

P = "/v1/joblib"

# action -> expected status for (owner, other user, superuser)
MATRIX: dict[str, tuple[int, int, int]] = {
    "claim_with_worker": (200, 403, 403),
    "heartbeat_worker": (200, 403, 403),
    "start_task": (200, 403, 200),
    "cancel_task": (200, 403, 200),
    "delete_worker": (204, 403, 204),
    "register_with_worker": (200, 403, 404),  # another's job (403), another's worker (404)
}


async def _setup(as_alice: httpx.AsyncClient, flow) -> dict[str, Any]:
    job = await flow.job(as_alice, "lab", "Owned")
    worker = job["worker_id"]
    pending = await flow.submit(as_alice, job["full_name"])
    claimed_task = await flow.submit(as_alice, job["full_name"])
    return {"job": job, "worker": worker, "pending": pending, "claimed": claimed_task}


async def _act(action: str, client: httpx.AsyncClient, ctx: dict[str, Any]) -> httpx.Response:
    worker = ctx["worker"]
    if action == "claim_with_worker":
        return await client.post(f"{P}/tasks/claim", json={"worker_id": worker})
    if action == "heartbeat_worker":
        return await client.patch(f"{P}/workers/{worker}")
    if action == "start_task":
        return await client.patch(f"{P}/tasks/{ctx['task_id']}", json={"status": "running"})
    if action == "cancel_task":
        return await client.post(f"{P}/tasks/{ctx['pending']['id']}/cancel")
    if action == "delete_worker":
        return await client.delete(f"{P}/workers/{worker}")
    if action == "register_with_worker":
        body = {"category": "modifiers", "name": "Owned", "schema": {}, "worker_id": worker}
        return await client.put(f"{P}/rooms/lab/jobs", json=body)
    raise AssertionError(action)


async def _snapshot(as_alice: httpx.AsyncClient) -> Any:
    tasks = (await as_alice.get(f"{P}/rooms/lab/tasks")).json()["items"]
    workers = (await as_alice.get(f"{P}/workers")).json()["items"]
    return (
        sorted((t["id"], t["status"], t["cancel_requested"]) for t in tasks),
        sorted(w["id"] for w in workers),
    )


@pytest.mark.parametrize("action", sorted(MATRIX))
@pytest.mark.parametrize("role", ["owner", "other", "superuser"])
async def test_role_matrix(
    role: str, action: str, as_alice, as_bob, as_admin, flow, problem
) -> None:
    ctx = await _setup(as_alice, flow)
    claimed = await flow.claim(as_alice, ctx["worker"])
    ctx["task_id"] = claimed["id"]
    client = {"owner": as_alice, "other": as_bob, "superuser": as_admin}[role]
    expected = MATRIX[action][("owner", "other", "superuser").index(role)]
    before = await _snapshot(as_alice)
    resp = await _act(action, client, ctx)
    assert resp.status_code == expected, resp.text
    if expected >= 400:
        problem(resp, expected)
        assert await _snapshot(as_alice) == before, "a refused request changed something"


async def test_only_superusers_register_global_jobs(as_bob, as_admin, problem) -> None:
    body = {"category": "modifiers", "name": "Everywhere", "schema": {}}
    problem(await as_bob.put(f"{P}/rooms/@global/jobs", json=body), 403, "forbidden")
    assert (await as_bob.get(f"{P}/rooms/@global/jobs")).json()["total"] == 0
    assert (await as_admin.put(f"{P}/rooms/@global/jobs", json=body)).status_code == 201
