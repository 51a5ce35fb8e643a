"""Long-polls: GET /tasks/{id} and POST /tasks/claim with `Prefer: wait=N`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"
# Upper bound only used to detect a long-poll that was never woken (the fixture caps waits at
# 10 s): a woken request returns long before it.
NOT_WOKEN = 7


async def test_task_long_poll_returns_when_completed(as_alice, as_bob, flow) -> None:
    _, worker, t = await flow.claimed(as_alice, running=True)

    async def finish() -> None:
        await asyncio.sleep(0.2)
        await flow.move(as_alice, t["id"], "completed", worker_id=worker, result={"r": 1})

    poll = asyncio.create_task(as_bob.get(f"{P}/tasks/{t['id']}", headers={"Prefer": "wait=5"}))
    await finish()
    resp = await asyncio.wait_for(poll, NOT_WOKEN)
    assert resp.status_code == 200
    assert resp.json()["status"] == "completed"
    assert resp.json()["result"] == {"r": 1}
    assert resp.headers["preference-applied"] == "wait=5"


async def test_task_long_poll_wakes_on_cancel_of_pending(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    poll = asyncio.create_task(as_alice.get(f"{P}/tasks/{t['id']}", headers={"Prefer": "wait=5"}))
    await asyncio.sleep(0.2)
    await as_alice.post(f"{P}/tasks/{t['id']}/cancel")
    resp = await asyncio.wait_for(poll, NOT_WOKEN)
    assert resp.json()["status"] == "cancelled"


async def test_task_long_poll_times_out_with_preference_applied(as_alice, flow) -> None:
    _, _, t = await flow.claimed(as_alice)
    resp = await as_alice.get(f"{P}/tasks/{t['id']}", headers={"Prefer": "wait=1"})
    assert resp.status_code == 200
    assert resp.json()["status"] == "claimed"
    assert resp.headers["preference-applied"] == "wait=1"


async def test_task_long_poll_on_terminal_task_answers_at_once(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    await as_alice.post(f"{P}/tasks/{t['id']}/cancel")
    resp = await asyncio.wait_for(
        as_alice.get(f"{P}/tasks/{t['id']}", headers={"Prefer": "wait=9"}), NOT_WOKEN
    )
    assert resp.json()["status"] == "cancelled"
    assert "preference-applied" not in resp.headers


async def test_no_prefer_or_zero_wait_does_not_wait(as_alice, flow) -> None:
    _, _, t = await flow.claimed(as_alice)
    for headers in ({}, {"Prefer": "wait=0"}, {"Prefer": "respond-async"}):
        resp = await as_alice.get(f"{P}/tasks/{t['id']}", headers=headers)
        assert resp.status_code == 200
        assert "preference-applied" not in resp.headers


class TestShortCap:
    @pytest.fixture
    def settings_overrides(self) -> dict:
        return {"long_poll_max_wait_seconds": 1}

    async def test_wait_is_capped(self, as_alice, flow) -> None:
        job = await flow.job(as_alice)
        resp = await as_alice.post(
            f"{P}/tasks/claim",
            json={"worker_id": job["worker_id"]},
            headers={"Prefer": "wait=99999"},
        )
        assert resp.headers["preference-applied"] == "wait=1"
        assert resp.json()["task"] is None
        t = await flow.submit(as_alice, job["full_name"])
        resp = await as_alice.get(f"{P}/tasks/{t['id']}", headers={"Prefer": "wait=600"})
        assert resp.headers["preference-applied"] == "wait=1"
        assert resp.json()["status"] == "pending"


async def test_wait_for_change_wakes_on_progress(as_alice, flow) -> None:
    _, worker, t = await flow.claimed(as_alice, running=True)
    poll = asyncio.create_task(
        as_alice.get(
            f"{P}/tasks/{t['id']}", params={"wait_for": "change"}, headers={"Prefer": "wait=5"}
        )
    )
    await asyncio.sleep(0.2)
    resp = await flow.patch(as_alice, t["id"], worker_id=worker, progress=0.5, message="half")
    assert resp.status_code == 200
    resp = await asyncio.wait_for(poll, NOT_WOKEN)
    body = resp.json()
    assert body["status"] == "running"
    assert body["progress"] == 0.5
    assert body["message"] == "half"
    assert resp.headers["preference-applied"] == "wait=5"


async def test_wait_for_change_wakes_on_claim(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    poll = asyncio.create_task(
        as_alice.get(
            f"{P}/tasks/{t['id']}", params={"wait_for": "change"}, headers={"Prefer": "wait=5"}
        )
    )
    await asyncio.sleep(0.2)
    await flow.claim(as_alice, job["worker_id"])
    resp = await asyncio.wait_for(poll, NOT_WOKEN)
    assert resp.json()["status"] == "claimed"


async def test_default_wait_ignores_progress(as_alice, flow) -> None:
    _, worker, t = await flow.claimed(as_alice, running=True)
    poll = asyncio.create_task(as_alice.get(f"{P}/tasks/{t['id']}", headers={"Prefer": "wait=1"}))
    await asyncio.sleep(0.2)
    await flow.patch(as_alice, t["id"], worker_id=worker, progress=0.5)
    resp = await asyncio.wait_for(poll, NOT_WOKEN)
    assert resp.json()["status"] == "running"
    assert resp.headers["preference-applied"] == "wait=1"


async def test_bad_wait_for_is_validation_error(as_alice, flow, problem) -> None:
    _, _, t = await flow.claimed(as_alice)
    resp = await as_alice.get(f"{P}/tasks/{t['id']}", params={"wait_for": "sometimes"})
    problem(resp, 422, "validation-error")


async def test_claim_long_poll_wakes_on_submit(as_alice, as_bob, flow) -> None:
    job = await flow.job(as_alice)
    poll = asyncio.create_task(
        as_alice.post(
            f"{P}/tasks/claim",
            json={"worker_id": job["worker_id"]},
            headers={"Prefer": "wait=10"},
        )
    )
    await asyncio.sleep(0.3)
    t = await flow.submit(as_bob, job["full_name"])
    resp = await asyncio.wait_for(poll, NOT_WOKEN)
    assert resp.status_code == 200
    assert resp.json()["task"]["id"] == t["id"]
    assert resp.json()["task"]["status"] == "claimed"
    assert resp.headers["preference-applied"] == "wait=10"


async def test_claim_long_poll_wakes_on_requeue(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    other = (await flow.job(as_alice))["worker_id"]
    t = await flow.submit(as_alice, job["full_name"])
    await flow.claim(as_alice, job["worker_id"])
    poll = asyncio.create_task(
        as_alice.post(f"{P}/tasks/claim", json={"worker_id": other}, headers={"Prefer": "wait=10"})
    )
    await asyncio.sleep(0.3)
    # the holder disconnects; the task is requeued (1 s backoff) and the waiting claim gets it
    assert (await as_alice.delete(f"{P}/workers/{job['worker_id']}")).status_code == 204
    resp = await asyncio.wait_for(poll, NOT_WOKEN)
    assert resp.json()["task"]["id"] == t["id"]
    assert resp.json()["task"]["attempt"] == 2


async def test_claim_long_poll_gets_task_when_due(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    due = datetime.now(UTC) + timedelta(seconds=0.5)
    t = await flow.submit(as_alice, job["full_name"], run_after=due.isoformat())
    resp = await asyncio.wait_for(
        as_alice.post(
            f"{P}/tasks/claim",
            json={"worker_id": job["worker_id"]},
            headers={"Prefer": "wait=10"},
        ),
        NOT_WOKEN,
    )
    assert resp.json()["task"]["id"] == t["id"]


async def test_claim_long_poll_times_out_empty(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    resp = await as_alice.post(
        f"{P}/tasks/claim", json={"worker_id": job["worker_id"]}, headers={"Prefer": "wait=1"}
    )
    assert resp.status_code == 200
    assert resp.json() == {"task": None, "tasks": [], "provider_reads": []}
    assert resp.headers["preference-applied"] == "wait=1"


async def test_claim_long_poll_immediate_when_available(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    resp = await asyncio.wait_for(
        as_alice.post(
            f"{P}/tasks/claim",
            json={"worker_id": job["worker_id"]},
            headers={"Prefer": "wait=9"},
        ),
        NOT_WOKEN,
    )
    assert resp.json()["task"]["id"] == t["id"]


async def test_several_waiting_claims_each_get_one_task(as_alice, flow) -> None:
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
    ids = {(await flow.submit(as_alice, job["full_name"]))["id"] for _ in range(3)}
    results = await asyncio.wait_for(asyncio.gather(*polls), NOT_WOKEN)
    got = [r.json()["task"]["id"] for r in results]
    assert sorted(got) == sorted(ids)
