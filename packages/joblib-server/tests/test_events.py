"""The event sink (app.state.joblib_event_sink)."""

from __future__ import annotations

import pytest

from zndraw_joblib_core import JobsChanged, TaskAvailable, TaskStatusChanged

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"


async def test_register_emits_jobs_changed(as_alice, as_admin, flow, events) -> None:
    await flow.job(as_alice, "lab")
    assert events == [JobsChanged(room_id="lab")]
    events.clear()
    await flow.job(as_admin, "@global", "G")
    assert events == [JobsChanged(room_id="@global")]


async def test_submit_emits_status_changed_and_available(as_alice, as_bob, flow, events) -> None:
    job = await flow.job(as_alice)
    events.clear()
    t = await flow.submit(as_bob, job["full_name"])
    kinds = {type(e) for e in events}
    assert kinds == {TaskStatusChanged, TaskAvailable}
    changed = next(e for e in events if isinstance(e, TaskStatusChanged))
    assert str(changed.task_id) == t["id"]
    assert changed.status == "pending"
    assert changed.room_id == "lab"
    assert changed.job_name == job["full_name"]
    available = next(e for e in events if isinstance(e, TaskAvailable))
    assert str(available.task_id) == t["id"]
    assert available.job_name == job["full_name"]


async def test_lifecycle_events(as_alice, flow, events) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    t = await flow.submit(as_alice, job["full_name"])
    await flow.claim(as_alice, worker)
    await flow.move(as_alice, t["id"], "running", worker_id=worker)
    await flow.patch(as_alice, t["id"], worker_id=worker, progress=0.5, message="half")
    await flow.move(as_alice, t["id"], "completed", worker_id=worker)
    statuses = [(e.status, e.progress) for e in events if isinstance(e, TaskStatusChanged)]
    assert statuses == [
        ("pending", None),
        ("claimed", None),
        ("running", None),
        ("running", 0.5),
        ("completed", 0.5),
    ]
    claimed = [e for e in events if isinstance(e, TaskStatusChanged)][1]
    assert str(claimed.worker_id) == worker
    assert claimed.attempt == 1


async def test_refused_request_emits_nothing(as_alice, as_bob, flow, events) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    events.clear()
    assert (await flow.patch(as_bob, t["id"], status="running")).status_code == 403
    assert (
        await as_bob.post(f"{P}/rooms/lab/tasks/lab:modifiers:Nope", json={})
    ).status_code == 404
    assert events == []


async def test_failing_sink_does_not_fail_the_request(app, as_alice, flow) -> None:
    calls = []

    async def broken(batch) -> None:
        calls.append(len(batch))
        raise RuntimeError("sink is down")

    app.state.joblib_event_sink = broken
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    claimed = await flow.claim(as_alice, job["worker_id"])
    assert claimed["id"] == t["id"]
    assert calls  # the sink was called and its failure swallowed
    assert (await flow.task(as_alice, t["id"]))["status"] == "claimed"
