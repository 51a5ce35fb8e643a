"""POST /tasks/claim: ordering, eligibility, batches, ownership."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_claim_null_when_nothing(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    resp = await as_alice.post(f"{P}/tasks/claim", json={"worker_id": job["worker_id"]})
    assert resp.status_code == 200
    assert resp.json() == {"task": None, "tasks": [], "provider_reads": []}
    assert "preference-applied" not in resp.headers
    # a worker that serves no job gets nothing either, even with tasks around
    await flow.submit(as_alice, job["full_name"])
    idle = await flow.worker(as_alice)
    assert await flow.claim(as_alice, idle) is None


async def test_claim_sets_attempt_lease_worker(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    sub = await flow.submit(as_alice, job["full_name"], payload={"a": 1})
    before = datetime.now(UTC)
    task = await flow.claim(as_alice, job["worker_id"])
    assert task["id"] == sub["id"]
    assert task["status"] == "claimed"
    assert task["attempt"] == 1
    assert task["worker_id"] == job["worker_id"]
    assert ts(task["lease_expires_at"]) > before + timedelta(seconds=30)  # 60 s default lease
    assert task["payload"] == {"a": 1}
    assert task["job_name"] == job["full_name"]
    assert task["queue_position"] is None
    stored = await flow.task(as_alice, sub["id"])
    assert stored["status"] == "claimed"
    assert stored["worker_id"] == job["worker_id"]
    assert await flow.claim(as_alice, job["worker_id"]) is None  # claimed only once


async def test_oldest_first_at_equal_priority(as_alice, as_bob, flow) -> None:
    job = await flow.job(as_alice)
    ids = [(await flow.submit(as_bob, job["full_name"]))["id"] for _ in range(4)]
    got = [(await flow.claim(as_alice, job["worker_id"]))["id"] for _ in range(4)]
    assert got == ids


async def test_priority_first(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    low = await flow.submit(as_alice, job["full_name"], priority=-5)
    mid1 = await flow.submit(as_alice, job["full_name"])
    high = await flow.submit(as_alice, job["full_name"], priority=10)
    mid2 = await flow.submit(as_alice, job["full_name"])
    top = await flow.submit(as_alice, job["full_name"], priority=11)
    order = [(await flow.claim(as_alice, job["worker_id"]))["id"] for _ in range(5)]
    assert order == [top["id"], high["id"], mid1["id"], mid2["id"], low["id"]]


async def test_only_jobs_the_worker_serves(as_alice, as_bob, as_admin, flow) -> None:
    rotate = await flow.job(as_alice, name="Rotate")
    scale = await flow.job(as_bob, name="Scale")
    glob = await flow.job(as_admin, "@global", "G")
    other_room = await flow.job(as_bob, "other", "Rotate")
    t_scale = await flow.submit(as_alice, scale["full_name"])
    t_other = await flow.submit(as_alice, other_room["full_name"], "other")
    t_glob = await flow.submit(as_alice, glob["full_name"], "other")
    t_rotate = await flow.submit(as_alice, rotate["full_name"])
    assert (await flow.claim(as_alice, rotate["worker_id"]))["id"] == t_rotate["id"]
    assert await flow.claim(as_alice, rotate["worker_id"]) is None
    assert (await flow.claim(as_bob, scale["worker_id"]))["id"] == t_scale["id"]
    assert (await flow.claim(as_bob, other_room["worker_id"]))["id"] == t_other["id"]
    assert (await flow.claim(as_admin, glob["worker_id"]))["id"] == t_glob["id"]


async def test_worker_serving_several_jobs(as_alice, flow) -> None:
    worker = await flow.worker(as_alice)
    a = await flow.job(as_alice, name="A", worker_id=worker)
    b = await flow.job(as_alice, name="B", worker_id=worker)
    ta = await flow.submit(as_alice, a["full_name"])
    tb = await flow.submit(as_alice, b["full_name"], priority=1)
    assert (await flow.claim(as_alice, worker))["id"] == tb["id"]
    assert (await flow.claim(as_alice, worker))["id"] == ta["id"]


async def test_batch_claim(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    ids = [(await flow.submit(as_alice, job["full_name"]))["id"] for _ in range(5)]
    resp = await as_alice.post(
        f"{P}/tasks/claim", json={"worker_id": job["worker_id"], "max_tasks": 3}
    )
    body = resp.json()
    assert [t["id"] for t in body["tasks"]] == ids[:3]
    assert body["task"] == body["tasks"][0]
    assert all(t["status"] == "claimed" and t["attempt"] == 1 for t in body["tasks"])
    resp = await as_alice.post(
        f"{P}/tasks/claim", json={"worker_id": job["worker_id"], "max_tasks": 10}
    )
    assert [t["id"] for t in resp.json()["tasks"]] == ids[3:]
    page = await flow.room_tasks(as_alice, status="claimed")
    assert page["total"] == 5


async def test_batch_claim_respects_priority(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    a = await flow.submit(as_alice, job["full_name"])
    b = await flow.submit(as_alice, job["full_name"], priority=3)
    c = await flow.submit(as_alice, job["full_name"], priority=1)
    resp = await as_alice.post(
        f"{P}/tasks/claim", json={"worker_id": job["worker_id"], "max_tasks": 3}
    )
    assert [t["id"] for t in resp.json()["tasks"]] == [b["id"], c["id"], a["id"]]


async def test_run_after_not_claimable_until_due(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    due = datetime.now(UTC) + timedelta(seconds=0.6)
    later = await flow.submit(as_alice, job["full_name"], run_after=due.isoformat(), priority=9)
    now = await flow.submit(as_alice, job["full_name"])
    assert (await flow.claim(as_alice, job["worker_id"]))["id"] == now["id"]
    assert await flow.claim(as_alice, job["worker_id"]) is None
    await asyncio.sleep(max((due - datetime.now(UTC)).total_seconds(), 0) + 0.1)
    assert (await flow.claim(as_alice, job["worker_id"]))["id"] == later["id"]


async def test_cancelled_tasks_are_not_claimed(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    await as_alice.post(f"{P}/tasks/{t['id']}/cancel")
    assert await flow.claim(as_alice, job["worker_id"]) is None


async def test_claim_ownership(as_alice, as_bob, as_admin, flow, problem) -> None:
    job = await flow.job(as_alice)
    await flow.submit(as_alice, job["full_name"])
    for client in (as_bob, as_admin):
        resp = await client.post(f"{P}/tasks/claim", json={"worker_id": job["worker_id"]})
        problem(resp, 403, "forbidden")
    resp = await as_alice.post(
        f"{P}/tasks/claim", json={"worker_id": "00000000-0000-4000-8000-000000000000"}
    )
    problem(resp, 404, "worker-not-found")
    assert (await flow.room_tasks(as_alice, status="pending"))["total"] == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"worker_id": "nope"}, {"worker_id": None}, {"max_tasks": 0}, {"max_tasks": 101}],
)
async def test_claim_bad_body(as_alice, flow, problem, body) -> None:
    job = await flow.job(as_alice)
    await flow.submit(as_alice, job["full_name"])
    if "max_tasks" in body:
        body = {"worker_id": job["worker_id"], **body}
    problem(await as_alice.post(f"{P}/tasks/claim", json=body), 422, "validation-error")
    assert (await flow.room_tasks(as_alice, status="pending"))["total"] == 1
