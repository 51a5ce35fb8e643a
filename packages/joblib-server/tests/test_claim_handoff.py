"""Hand-off: a submit claims its new tasks for claims waiting in the same process.

On PostgreSQL only batch submits hand tasks over; a single submit runs outside a
transaction and wakes the waiting claims instead.

Whether a task went through a hand-off shows in the event sink: the sink receives the events
of one transaction at a time, so a handed-off task's "available" and "claimed" events arrive
together, while a waiting claim that claims for itself produces a second delivery.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from zndraw_joblib_server.models import Worker, WorkerJobLink

P = "/v1/joblib"
NOT_WOKEN = 7  # the waits below are 10 s; a woken claim answers long before this


def _park(
    client: httpx.AsyncClient, worker_id: str, wait: int = 10, **body: Any
) -> asyncio.Task[Any]:
    return asyncio.create_task(
        client.post(
            f"{P}/tasks/claim",
            json={"worker_id": worker_id, **body},
            headers={"Prefer": f"wait={wait}"},
        )
    )


async def _submit_while_waiting(
    waiter: httpx.AsyncClient, submitter: httpx.AsyncClient, flow: Any, job: Any
) -> tuple[asyncio.Task[Any], dict[str, Any]]:
    """Park a claim of the job's worker, then submit one task: (the claim, the task)."""
    poll = _park(waiter, job["worker_id"])
    await asyncio.sleep(0.3)
    submitted = await flow.submit(submitter, job["full_name"])
    return poll, submitted


async def test_a_waiting_claim_is_handed_the_new_task_by_the_submit(
    as_alice: httpx.AsyncClient,
    as_bob: httpx.AsyncClient,
    flow,
    backend: str,
    handed_off,
    deliveries,
) -> None:
    """SQLite: the submit claims the task for the waiting claim in its own transaction.

    PostgreSQL: a single submit is one insert outside a transaction; the waiting claim is
    woken and claims for itself (fewer round trips before it answers).
    """
    job = await flow.job(as_alice)
    poll, submitted = await _submit_while_waiting(as_alice, as_bob, flow, job)
    # the submit answers as submitted
    assert submitted["status"] == "pending"
    assert submitted["queue_position"] == 1
    if backend == "sqlite":  # already claimed when the submit has answered
        now = await flow.task(as_bob, submitted["id"])
        assert now["status"] == "claimed"

    answer = await asyncio.wait_for(poll, NOT_WOKEN)
    assert answer.status_code == 200
    assert answer.headers["preference-applied"] == "wait=10"
    body = answer.json()
    assert body["task"]["id"] == submitted["id"]
    assert body["task"]["status"] == "claimed"
    assert [t["id"] for t in body["tasks"]] == [submitted["id"]]
    now = await flow.task(as_bob, submitted["id"])
    assert now["status"] == "claimed"
    assert now["worker_id"] == job["worker_id"]
    assert now["attempt"] == 1
    assert handed_off(deliveries, submitted["id"]) is (backend == "sqlite")
    # the worker goes on as after any claim
    await flow.move(as_alice, submitted["id"], "running", worker_id=job["worker_id"])
    done = await flow.move(as_alice, submitted["id"], "completed", worker_id=job["worker_id"])
    assert done["status"] == "completed"


async def test_a_batch_submit_serves_every_waiting_claim_and_queues_the_rest(
    as_alice: httpx.AsyncClient, flow, handed_off, deliveries
) -> None:
    job = await flow.job(as_alice)
    workers = [job["worker_id"]]
    for _ in range(2):
        workers.append((await flow.job(as_alice))["worker_id"])
    polls = [_park(as_alice, w) for w in workers]
    await asyncio.sleep(0.3)
    resp = await as_alice.post(
        f"{P}/rooms/lab/jobs/{job['full_name']}/tasks",
        json={"items": [{"payload": {"i": i}} for i in range(5)]},
    )
    assert resp.status_code == 202, resp.text
    ids = [t["id"] for t in resp.json()["items"]]
    answers = await asyncio.wait_for(asyncio.gather(*polls), NOT_WOKEN)
    got = {a.json()["task"]["worker_id"]: a.json()["task"]["id"] for a in answers}
    assert set(got) == set(workers)  # each waiting claim got one task
    assert sorted(got.values()) == sorted(ids[:3])  # the oldest three, in queue order
    assert all(handed_off(deliveries, i) for i in ids[:3])
    pending = await flow.room_tasks(as_alice, status="pending")
    assert sorted(t["id"] for t in pending["items"]) == sorted(ids[3:])
    positions = sorted(t["queue_position"] for t in pending["items"])
    assert positions == [1, 2]


async def test_a_waiting_claim_with_max_tasks_is_handed_up_to_that_many(
    as_alice: httpx.AsyncClient, flow
) -> None:
    job = await flow.job(as_alice)
    poll = _park(as_alice, job["worker_id"], max_tasks=2)
    await asyncio.sleep(0.3)
    resp = await as_alice.post(
        f"{P}/rooms/lab/jobs/{job['full_name']}/tasks",
        json={"items": [{"payload": {}}, {"payload": {}}, {"payload": {}}]},
    )
    assert resp.status_code == 202, resp.text
    ids = [t["id"] for t in resp.json()["items"]]
    answer = await asyncio.wait_for(poll, NOT_WOKEN)
    assert [t["id"] for t in answer.json()["tasks"]] == ids[:2]
    assert (await flow.task(as_alice, ids[2]))["status"] == "pending"


async def test_a_waiting_claim_whose_worker_vanished_leaves_the_submit_alone(
    app, as_alice: httpx.AsyncClient, flow, problem
) -> None:
    job = await flow.job(as_alice)
    poll = _park(as_alice, job["worker_id"])
    await asyncio.sleep(0.3)
    # another server process removed the worker (no wake-up reaches this process)
    worker_id = uuid.UUID(job["worker_id"])
    async with app.state.session_maker() as session:
        await session.execute(delete(WorkerJobLink).where(WorkerJobLink.worker_id == worker_id))
        await session.execute(delete(Worker).where(Worker.id == worker_id))
        await session.commit()
    submitted = await flow.submit(as_alice, job["full_name"])
    assert submitted["status"] == "pending"
    answer = await asyncio.wait_for(poll, NOT_WOKEN)
    problem(answer, 404, "worker-not-found")
    assert (await flow.task(as_alice, submitted["id"]))["status"] == "pending"


async def test_a_delayed_task_is_not_handed_off(as_alice: httpx.AsyncClient, flow) -> None:
    job = await flow.job(as_alice)
    poll = _park(as_alice, job["worker_id"], wait=2)
    await asyncio.sleep(0.3)
    later = "2999-01-01T00:00:00Z"
    submitted = await flow.submit(as_alice, job["full_name"], run_after=later)
    assert (await flow.task(as_alice, submitted["id"]))["status"] == "pending"
    answer = await asyncio.wait_for(poll, NOT_WOKEN)
    assert answer.json() == {"task": None, "tasks": [], "provider_reads": []}


class TestHandoffOff:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"claim_handoff": False}

    async def test_the_waiting_claim_claims_for_itself(
        self, as_alice: httpx.AsyncClient, flow, handed_off, deliveries
    ) -> None:
        job = await flow.job(as_alice)
        poll, submitted = await _submit_while_waiting(as_alice, as_alice, flow, job)
        answer = await asyncio.wait_for(poll, NOT_WOKEN)
        assert answer.json()["task"]["id"] == submitted["id"]
        assert not handed_off(deliveries, submitted["id"])
