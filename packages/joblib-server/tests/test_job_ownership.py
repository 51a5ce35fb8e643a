"""Job ownership: only the owner's (and superusers') workers may serve a job (issue 17 #5).

Another user who may write to the room must not link a worker to someone else's job, and so
must never receive its tasks, on either request path (fast lane on and off).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from zndraw_joblib_server import Actor, Job, get_job_access

P = "/v1/joblib"
BODY = {"category": "modifiers", "name": "Rotate", "schema": {}}


@pytest.fixture(params=[True, False], ids=["lane", "fastapi"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Claims are a hot route: check both request paths."""
    return {"fast_lane": request.param}


async def _claim(client: httpx.AsyncClient, worker: str) -> list[dict[str, Any]]:
    resp = await client.post(f"{P}/tasks/claim", json={"worker_id": worker, "max_tasks": 10})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["tasks"])


async def test_another_user_cannot_link_a_worker_to_a_job_and_gets_no_tasks(
    as_alice, as_bob, flow, problem
) -> None:
    job = await flow.job(as_alice)
    task = await flow.submit(as_alice, job["full_name"], payload={"secret": 1})
    # with a new worker, and with a worker of his own
    problem(await as_bob.put(f"{P}/rooms/lab/jobs", json=BODY), 403, "forbidden")
    worker = await flow.worker(as_bob)
    linked = {**BODY, "worker_id": worker}
    body = problem(await as_bob.put(f"{P}/rooms/lab/jobs", json=linked), 403, "forbidden")
    assert "lab:modifiers:Rotate" in body["detail"]
    assert await _claim(as_bob, worker) == []
    got = (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).json()
    assert got["workers"] == [job["worker_id"]]
    assert (await flow.task(as_alice, task["id"]))["status"] == "pending"
    # the owner's worker gets it
    assert [t["id"] for t in await _claim(as_alice, job["worker_id"])] == [task["id"]]


async def test_owner_and_superusers_may_serve(as_alice, as_admin, flow) -> None:
    job = await flow.job(as_alice)
    again = await flow.job(as_alice)  # the owner adds a second worker: 200
    admin = await flow.job(as_admin)  # a superuser may serve anybody's job
    assert again["id"] == admin["id"] == job["id"]
    task = await flow.submit(as_alice, job["full_name"])
    assert [t["id"] for t in await _claim(as_admin, admin["worker_id"])] == [task["id"]]


async def test_ownership_survives_soft_delete(as_alice, as_bob, flow, problem) -> None:
    """An owner's workers going away (the job soft-deleted) does not free the name."""
    job = await flow.job(as_alice)
    assert (await as_alice.delete(f"{P}/workers/{job['worker_id']}")).status_code == 204
    problem(await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}"), 404)
    problem(await as_bob.put(f"{P}/rooms/lab/jobs", json=BODY), 403, "forbidden")
    assert (await as_alice.put(f"{P}/rooms/lab/jobs", json=BODY)).status_code == 201


async def test_a_job_without_owner_is_served_by_superusers_until_deleted(
    app: FastAPI, as_alice, as_bob, as_admin, flow, problem
) -> None:
    """Jobs registered before owners existed: superusers only; adopted once deleted."""
    job = await flow.job(as_alice)
    async with app.state.session_maker() as session:
        await session.execute(update(Job).values(owner_id=None))
        await session.commit()
    problem(await as_alice.put(f"{P}/rooms/lab/jobs", json=BODY), 403, "forbidden")
    assert (await as_admin.put(f"{P}/rooms/lab/jobs", json=BODY)).status_code == 200
    for w in (await as_admin.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).json()["workers"]:
        assert (await as_admin.delete(f"{P}/workers/{w}")).status_code == 204
    # deleted and ownerless: the next registrant adopts it
    assert (await as_bob.put(f"{P}/rooms/lab/jobs", json=BODY)).status_code == 201
    problem(await as_alice.put(f"{P}/rooms/lab/jobs", json=BODY), 403, "forbidden")


async def test_global_jobs_need_a_superuser(as_alice, problem) -> None:
    resp = await as_alice.put(f"{P}/rooms/@global/jobs", json=BODY)
    problem(resp, 403, "forbidden")


class Collaborators:
    """A host policy: everybody in room 'team' may serve each other's jobs there."""

    async def can_serve(self, actor: Actor, job: Job) -> bool:
        return actor.is_superuser or job.owner_id == actor.id or job.room_id == "team"


async def test_the_job_access_policy_can_be_widened(
    app: FastAPI, as_alice, as_bob, flow, problem
) -> None:
    app.dependency_overrides[get_job_access] = Collaborators
    team = await flow.job(as_alice, "team")
    lab = await flow.job(as_alice, "lab")
    bobs = await flow.job(as_bob, "team")
    assert bobs["id"] == team["id"]
    problem(await as_bob.put(f"{P}/rooms/lab/jobs", json=BODY), 403, "forbidden")
    task = await flow.submit(as_alice, team["full_name"], "team")
    await flow.submit(as_alice, lab["full_name"], "lab")
    assert [t["id"] for t in await _claim(as_bob, bobs["worker_id"])] == [task["id"]]
