"""POST /tasks/{id}/cancel and the cancel-request handshake with the worker."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"


async def _cancel(client, task_id: str):
    return await client.post(f"{P}/tasks/{task_id}/cancel")


async def test_pending_cancelled_at_once(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    resp = await _cancel(as_alice, t["id"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "cancelled"
    assert body["completed_at"] is not None
    assert body["cancel_requested"] is False
    assert body["queue_position"] is None
    assert (await flow.task(as_alice, t["id"]))["status"] == "cancelled"
    assert await flow.claim(as_alice, job["worker_id"]) is None


@pytest.mark.parametrize("running", [False, True])
async def test_in_flight_cancel_request_and_ack(as_alice, as_bob, flow, running) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    t = await flow.submit(as_bob, job["full_name"])
    await flow.claim(as_alice, worker)
    if running:
        await flow.move(as_alice, t["id"], "running", worker_id=worker)
    resp = await _cancel(as_bob, t["id"])
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == ("running" if running else "claimed")
    assert body["cancel_requested"] is True
    assert body["completed_at"] is None
    # asking again changes nothing
    again = await _cancel(as_bob, t["id"])
    assert again.status_code == 200
    assert again.json() == await flow.task(as_bob, t["id"])
    hb = (await as_alice.patch(f"{P}/workers/{worker}")).json()
    assert hb["cancel_requested"] == [t["id"]]
    done = await flow.move(as_alice, t["id"], "cancelled", worker_id=worker)
    assert done["status"] == "cancelled"
    assert done["completed_at"] is not None
    assert done["error"]
    hb = (await as_alice.patch(f"{P}/workers/{worker}")).json()
    assert hb["cancel_requested"] == []


async def test_heartbeat_lists_only_own_cancel_requests(as_alice, as_bob, flow) -> None:
    a = await flow.job(as_alice, name="A")
    b = await flow.job(as_bob, name="B")
    ta = await flow.submit(as_alice, a["full_name"])
    tb = await flow.submit(as_alice, b["full_name"])
    tc = await flow.submit(as_alice, a["full_name"])
    await flow.claim(as_alice, a["worker_id"])
    await flow.claim(as_alice, a["worker_id"])
    await flow.claim(as_bob, b["worker_id"])
    for tid in (ta["id"], tb["id"]):
        assert (await _cancel(as_alice, tid)).status_code == 200
    hb_a = (await as_alice.patch(f"{P}/workers/{a['worker_id']}")).json()
    hb_b = (await as_bob.patch(f"{P}/workers/{b['worker_id']}")).json()
    assert hb_a["cancel_requested"] == [ta["id"]]
    assert hb_b["cancel_requested"] == [tb["id"]]
    assert (await flow.task(as_alice, tc["id"]))["cancel_requested"] is False


async def test_worker_may_still_complete_after_cancel_request(as_alice, flow) -> None:
    _, worker, t = await flow.claimed(as_alice, running=True)
    await _cancel(as_alice, t["id"])
    done = await flow.move(as_alice, t["id"], "completed", worker_id=worker, result=1)
    assert done["status"] == "completed"


async def test_only_submitter_or_superuser_may_cancel(
    as_alice, as_bob, as_admin, flow, problem
) -> None:
    job = await flow.job(as_bob)  # bob owns the worker, alice submits
    t = await flow.submit(as_alice, job["full_name"])
    before = await flow.task(as_alice, t["id"])
    problem(await _cancel(as_bob, t["id"]), 403, "forbidden")
    assert await flow.task(as_alice, t["id"]) == before
    assert (await _cancel(as_admin, t["id"])).json()["status"] == "cancelled"
    t2 = await flow.submit(as_alice, job["full_name"])
    await flow.claim(as_bob, job["worker_id"])
    problem(await _cancel(as_bob, t2["id"]), 403, "forbidden")
    assert (await flow.task(as_alice, t2["id"]))["cancel_requested"] is False
    assert (await _cancel(as_admin, t2["id"])).json()["cancel_requested"] is True


@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
async def test_cancel_terminal_task_is_409(as_alice, flow, problem, final) -> None:
    _, worker, t = await flow.claimed(as_alice, running=True)
    await flow.move(as_alice, t["id"], final, worker_id=worker)
    before = await flow.task(as_alice, t["id"])
    problem(await _cancel(as_alice, t["id"]), 409, "invalid-task-transition")
    assert await flow.task(as_alice, t["id"]) == before


async def test_cancel_unknown_task(as_alice, problem) -> None:
    problem(await _cancel(as_alice, "00000000-0000-4000-8000-000000000000"), 404, "task-not-found")
    problem(await _cancel(as_alice, "nope"), 422, "validation-error")
