"""Workers: create, list, heartbeat, delete (ownership and task release)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

P = "/v1/joblib"
UNKNOWN = "00000000-0000-4000-8000-000000000001"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_create_worker_201(as_alice) -> None:
    before = datetime.now(UTC)
    resp = await as_alice.post(f"{P}/workers")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["id"]
    assert ts(body["last_heartbeat"]) >= before.replace(microsecond=0)
    assert ts(body["last_heartbeat"]).tzinfo is not None


async def test_list_workers_newest_first_and_paged(as_alice, as_bob, flow, problem) -> None:
    ids = []
    for client in (as_alice, as_bob, as_alice):
        ids.append(await flow.worker(client))
    page = (await as_bob.get(f"{P}/workers")).json()
    assert [w["id"] for w in page["items"]] == ids[::-1]
    assert page["total"] == 3
    assert page["limit"] == 50
    assert page["offset"] == 0
    page = (await as_bob.get(f"{P}/workers", params={"limit": 1, "offset": 1})).json()
    assert [w["id"] for w in page["items"]] == [ids[1]]
    assert page["total"] == 3
    page = (await as_bob.get(f"{P}/workers", params={"limit": 0})).json()
    assert page["items"] == []
    assert page["total"] == 3
    problem(await as_bob.get(f"{P}/workers", params={"limit": 501}), 422, "validation-error")


async def test_heartbeat_updates_last_heartbeat(as_alice, flow) -> None:
    worker = await flow.worker(as_alice)
    first = (await as_alice.get(f"{P}/workers")).json()["items"][0]["last_heartbeat"]
    await asyncio.sleep(0.01)
    resp = await as_alice.patch(f"{P}/workers/{worker}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == worker
    assert ts(body["last_heartbeat"]) > ts(first)
    assert body["cancel_requested"] == []
    listed = (await as_alice.get(f"{P}/workers")).json()["items"][0]
    assert listed["last_heartbeat"] == body["last_heartbeat"]


async def test_heartbeat_unknown_worker_404(as_alice, problem) -> None:
    problem(await as_alice.patch(f"{P}/workers/{UNKNOWN}"), 404, "worker-not-found")


async def test_heartbeat_by_other_user_403_even_superuser(
    as_alice, as_bob, as_admin, flow, problem
) -> None:
    worker = await flow.worker(as_alice)
    before = (await as_alice.get(f"{P}/workers")).json()["items"][0]["last_heartbeat"]
    problem(await as_bob.patch(f"{P}/workers/{worker}"), 403, "forbidden")
    problem(await as_admin.patch(f"{P}/workers/{worker}"), 403, "forbidden")
    after = (await as_alice.get(f"{P}/workers")).json()["items"][0]["last_heartbeat"]
    assert after == before


async def test_heartbeat_extends_leases_of_in_flight_tasks(as_alice, flow) -> None:
    job, worker, claimed = await flow.claimed(as_alice)
    await flow.submit(as_alice, job["full_name"])
    running = await flow.claim(as_alice, worker)
    running = await flow.move(as_alice, running["id"], "running", worker_id=worker)
    await asyncio.sleep(0.02)
    hb = await as_alice.patch(f"{P}/workers/{worker}")
    assert hb.status_code == 200
    for old in (claimed, running):
        now = await flow.task(as_alice, old["id"])
        assert ts(now["lease_expires_at"]) > ts(old["lease_expires_at"])


async def test_delete_worker_by_owner_204_and_gone(as_alice, flow, problem) -> None:
    worker = await flow.worker(as_alice)
    resp = await as_alice.delete(f"{P}/workers/{worker}")
    assert resp.status_code == 204
    assert resp.content == b""
    assert (await as_alice.get(f"{P}/workers")).json()["total"] == 0
    problem(await as_alice.patch(f"{P}/workers/{worker}"), 404, "worker-not-found")
    problem(await as_alice.delete(f"{P}/workers/{worker}"), 404, "worker-not-found")
    resp = await as_alice.post(f"{P}/tasks/claim", json={"worker_id": worker})
    problem(resp, 404, "worker-not-found")


async def test_delete_worker_by_other_user_403_by_superuser_204(
    as_alice, as_bob, as_admin, flow, problem
) -> None:
    worker = await flow.worker(as_alice)
    problem(await as_bob.delete(f"{P}/workers/{worker}"), 403, "forbidden")
    assert (await as_alice.get(f"{P}/workers")).json()["total"] == 1
    assert (await as_admin.delete(f"{P}/workers/{worker}")).status_code == 204
    assert (await as_alice.get(f"{P}/workers")).json()["total"] == 0


async def test_delete_worker_requeues_tasks_with_attempts_left(as_alice, flow) -> None:
    job, worker, claimed = await flow.claimed(as_alice, max_attempts=2)
    await flow.submit(as_alice, job["full_name"], max_attempts=2)
    running = await flow.claim(as_alice, worker)
    await flow.move(as_alice, running["id"], "running", worker_id=worker, progress=0.5)
    assert (await as_alice.delete(f"{P}/workers/{worker}")).status_code == 204
    for tid in (claimed["id"], running["id"]):
        task = await flow.task(as_alice, tid)
        assert task["status"] == "pending"
        assert task["attempt"] == 1
        assert task["worker_id"] is None
        assert task["started_at"] is None
        assert task["lease_expires_at"] is None
        assert task["progress"] is None
        assert task["error"]  # explains the lost attempt
        assert ts(task["run_after"]) > ts(task["created_at"])
    # the job is kept (it has pending tasks) and a new worker gets the tasks after backoff
    assert (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).status_code == 200


async def test_delete_worker_fails_tasks_on_last_attempt(as_alice, flow) -> None:
    _, worker, claimed = await flow.claimed(as_alice, max_attempts=1)
    assert (await as_alice.delete(f"{P}/workers/{worker}")).status_code == 204
    task = await flow.task(as_alice, claimed["id"])
    assert task["status"] == "failed"
    assert task["completed_at"] is not None
    assert "disconnected" in task["error"]
    assert task["attempt"] == 1


async def test_delete_worker_cancels_cancel_requested_task(as_alice, flow) -> None:
    _, worker, claimed = await flow.claimed(as_alice, running=True)
    resp = await as_alice.post(f"{P}/tasks/{claimed['id']}/cancel")
    assert resp.status_code == 200
    assert (await as_alice.delete(f"{P}/workers/{worker}")).status_code == 204
    assert (await flow.task(as_alice, claimed["id"]))["status"] == "cancelled"


async def test_delete_worker_leaves_other_workers_tasks_alone(as_alice, as_admin, flow) -> None:
    job = await flow.job(as_alice)
    bobs = (await flow.job(as_admin, worker_id=None))["worker_id"]  # a superuser may serve it
    await flow.submit(as_alice, job["full_name"])
    await flow.submit(as_alice, job["full_name"])
    mine = await flow.claim(as_alice, job["worker_id"])
    his = await flow.claim(as_admin, bobs)
    assert (await as_alice.delete(f"{P}/workers/{job['worker_id']}")).status_code == 204
    assert (await flow.task(as_alice, mine["id"]))["status"] == "pending"
    his_now = await flow.task(as_alice, his["id"])
    assert his_now["status"] == "claimed"
    assert his_now["worker_id"] == bobs


async def test_heartbeat_answer_lease_expires_at(as_alice, flow) -> None:
    """The documented heartbeat field: null when the worker holds no task."""
    worker = await flow.worker(as_alice)
    idle = (await as_alice.patch(f"{P}/workers/{worker}")).json()
    _, busy_worker, _ = await flow.claimed(as_alice)
    busy = (await as_alice.patch(f"{P}/workers/{busy_worker}")).json()
    assert busy["lease_expires_at"] is not None
    assert idle["lease_expires_at"] is None


async def test_heartbeat_keeps_per_task_lease(as_alice, flow) -> None:
    """A task submitted with a long lease_seconds must not get a shorter lease on heartbeat."""
    _, worker, task = await flow.claimed(as_alice, lease_seconds=3600)
    assert (await as_alice.patch(f"{P}/workers/{worker}")).status_code == 200
    after = await flow.task(as_alice, task["id"])
    assert ts(after["lease_expires_at"]) >= ts(task["lease_expires_at"])
