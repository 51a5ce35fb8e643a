"""Claim long-polls: new jobs of the waiting worker, results only with completion, events."""

from __future__ import annotations

import asyncio

import httpx

from zndraw_joblib_core import JobsChanged

P = "/v1/joblib"


async def test_registering_a_job_wakes_the_workers_waiting_claim(
    as_alice: httpx.AsyncClient, flow
) -> None:
    first = await flow.job(as_alice, "lab", "First")
    worker = first["worker_id"]
    waiting = asyncio.create_task(
        as_alice.post(
            f"{P}/tasks/claim", json={"worker_id": worker}, headers={"Prefer": "wait=30"}
        )
    )
    await asyncio.sleep(0.3)
    second = await flow.job(as_alice, "lab", "Second", worker_id=worker)
    answer = await asyncio.wait_for(waiting, 10)  # without the wake-up it would hold 30 s
    assert answer.status_code == 200
    assert answer.json()["task"] is None
    submitted = await flow.submit(as_alice, second["full_name"])
    assert (await flow.claim(as_alice, worker))["id"] == submitted["id"]


async def test_result_is_refused_without_completed(
    as_alice: httpx.AsyncClient, flow, problem
) -> None:
    _job, worker, task = await flow.claimed(as_alice, running=True)
    resp = await flow.patch(
        as_alice, task["id"], status="failed", worker_id=worker, result={"partial": 1}
    )
    problem(resp, 422, "validation-error")
    assert (await flow.task(as_alice, task["id"]))["status"] == "running"


async def test_removing_a_worker_announces_each_room_once(
    as_alice: httpx.AsyncClient, flow, events
) -> None:
    job = await flow.job(as_alice, "lab", "A")
    await flow.job(as_alice, "lab", "B", worker_id=job["worker_id"])
    events.clear()
    resp = await as_alice.delete(f"{P}/workers/{job['worker_id']}")
    assert resp.status_code == 204
    changed = [e for e in events if isinstance(e, JobsChanged)]
    assert changed == [JobsChanged(room_id="lab")]


async def test_change_long_poll_answers_at_once_for_an_unseen_version(
    as_alice: httpx.AsyncClient, flow
) -> None:
    job = await flow.job(as_alice, "lab", "Versioned")
    task = await flow.submit(as_alice, job["full_name"])
    await flow.claim(as_alice, job["worker_id"])
    resp = await as_alice.get(
        f"{P}/tasks/{task['id']}",
        params={"wait_for": "change"},
        headers={"Prefer": "wait=5", "If-None-Match": f'"{task["version"]}"'},
    )
    assert resp.json()["status"] == "claimed"
    assert "preference-applied" not in resp.headers
    assert resp.headers["etag"] == f'"{resp.json()["version"]}"'
    assert resp.json()["version"] > task["version"]
    same = await as_alice.get(
        f"{P}/tasks/{task['id']}",
        params={"wait_for": "change"},
        headers={"Prefer": "wait=1", "If-None-Match": resp.headers["etag"]},
    )
    assert same.headers["preference-applied"] == "wait=1"  # nothing new: it waited


async def test_claim_wait_is_capped_below_the_worker_timeout(app, as_alice, flow) -> None:
    app.state.joblib_settings = app.state.joblib_settings.model_copy(
        update={"worker_timeout_seconds": 2.0}
    )
    job = await flow.job(as_alice, "lab", "Capped")
    resp = await as_alice.post(
        f"{P}/tasks/claim", json={"worker_id": job["worker_id"]}, headers={"Prefer": "wait=30"}
    )
    assert resp.headers["preference-applied"] == "wait=1"
