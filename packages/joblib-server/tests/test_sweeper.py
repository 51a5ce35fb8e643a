"""The sweeper (sweep_once): stale workers, expired leases, timeouts, cancellations, orphans."""

from __future__ import annotations

import asyncio

import pytest

from zndraw_joblib_core import JobsChanged, TaskStatusChanged
from zndraw_joblib_server import SweepReport

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"


async def test_nothing_to_do(as_alice, flow, sweep) -> None:
    await flow.claimed(as_alice, running=True)
    report = await sweep()
    assert isinstance(report, SweepReport)
    assert report.changed is False
    assert (report.workers_removed, report.tasks_released) == (0, 0)
    assert (report.tasks_cancelled, report.jobs_deleted) == (0, 0)
    assert report.events == []


async def test_expired_lease_requeues_then_fails_on_last_attempt(as_alice, flow, sweep) -> None:
    _, worker, t = await flow.claimed(as_alice, lease_seconds=0.3, max_attempts=2)
    await flow.move(as_alice, t["id"], "running", worker_id=worker)
    await asyncio.sleep(0.5)
    report = await sweep()
    assert report.tasks_released == 1
    assert report.workers_removed == 0
    got = await flow.task(as_alice, t["id"])
    assert got["status"] == "pending"
    assert got["attempt"] == 1
    assert got["worker_id"] is None
    assert "lease" in got["error"]
    kinds = [(type(e), getattr(e, "status", None)) for e in report.events]
    assert (TaskStatusChanged, "pending") in kinds
    # the worker is still registered; a second sweep changes nothing
    assert (await sweep()).changed is False
    # second attempt, lease lost again: failed for good
    await asyncio.sleep(1.1)  # retry backoff (1 s)
    again = await flow.claim(as_alice, worker)
    assert again["attempt"] == 2
    await asyncio.sleep(0.5)
    report = await sweep()
    assert report.tasks_released == 1
    got = await flow.task(as_alice, t["id"])
    assert got["status"] == "failed"
    assert got["completed_at"] is not None
    assert "lease expired" in got["error"]


async def test_heartbeat_keeps_a_short_lease_alive(as_alice, flow, sweep) -> None:
    class_lease = 0.6
    _, worker, t = await flow.claimed(as_alice, lease_seconds=class_lease)
    for _ in range(3):
        await asyncio.sleep(0.3)
        assert (await as_alice.patch(f"{P}/workers/{worker}")).status_code == 200
    report = await sweep()
    assert report.tasks_released == 0
    assert (await flow.task(as_alice, t["id"]))["status"] == "claimed"


async def test_timeout_releases_running_task(as_alice, flow, sweep) -> None:
    _, worker, t = await flow.claimed(as_alice, timeout_seconds=0.3, max_attempts=1)
    assert t["timeout_seconds"] == 0.3
    # a claimed task that has not started is not timed out
    await asyncio.sleep(0.4)
    assert (await sweep()).tasks_released == 0
    await flow.move(as_alice, t["id"], "running", worker_id=worker)
    await asyncio.sleep(0.5)
    report = await sweep()
    assert report.tasks_released == 1
    got = await flow.task(as_alice, t["id"])
    assert got["status"] == "failed"
    assert "timed out" in got["error"]


class TestNoBackoff:
    @pytest.fixture
    def settings_overrides(self) -> dict:
        return {"retry_backoff_seconds": 0}

    async def test_timeout_requeues_with_attempts_left(self, as_alice, flow, sweep) -> None:
        _, worker, t = await flow.claimed(as_alice, timeout_seconds=0.3, running=True)
        await asyncio.sleep(0.5)
        assert (await sweep()).tasks_released == 1
        got = await flow.task(as_alice, t["id"])
        assert got["status"] == "pending"
        assert "timed out" in got["error"]
        again = await flow.claim(as_alice, worker)
        assert again["attempt"] == 2

    async def test_requeued_timed_out_task_gets_a_fresh_deadline(
        self, as_alice, flow, sweep
    ) -> None:
        _, worker, t = await flow.claimed(as_alice, timeout_seconds=0.3, running=True)
        await asyncio.sleep(0.5)
        assert (await sweep()).tasks_released == 1
        again = await flow.claim(as_alice, worker)
        assert again["id"] == t["id"]
        report = await sweep()
        assert report.tasks_released == 0
        got = await flow.task(as_alice, t["id"])
        assert got["status"] == "claimed"
        assert got["attempt"] == 2


class TestStaleWorkers:
    @pytest.fixture
    def settings_overrides(self) -> dict:
        return {"worker_timeout_seconds": 0.4}

    async def test_stale_worker_removed_and_tasks_released(
        self, as_alice, as_admin, flow, sweep
    ) -> None:
        job = await flow.job(as_alice)
        lively = (await flow.job(as_admin))["worker_id"]  # a superuser may serve it too
        t1 = await flow.submit(as_alice, job["full_name"], max_attempts=2)
        t2 = await flow.submit(as_alice, job["full_name"], max_attempts=1)
        await flow.claim(as_alice, job["worker_id"])
        await flow.claim(as_alice, job["worker_id"])
        await asyncio.sleep(0.5)
        assert (await as_admin.patch(f"{P}/workers/{lively}")).status_code == 200
        report = await sweep()
        assert report.workers_removed == 1
        assert report.tasks_released == 2
        workers = (await as_alice.get(f"{P}/workers")).json()
        assert [w["id"] for w in workers["items"]] == [lively]
        assert (await flow.task(as_alice, t1["id"]))["status"] == "pending"
        failed = await flow.task(as_alice, t2["id"])
        assert failed["status"] == "failed"
        assert "heartbeat" in failed["error"]
        # the job still has the superuser's worker: not deleted
        assert (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).status_code == 200
        assert any(isinstance(e, JobsChanged) for e in report.events)
        resp = await as_alice.patch(f"{P}/workers/{job['worker_id']}")
        assert resp.status_code == 404

    async def test_stale_worker_orphan_job_soft_deleted(self, as_alice, flow, sweep) -> None:
        job = await flow.job(as_alice)
        await asyncio.sleep(0.5)
        report = await sweep()
        assert report.workers_removed == 1
        resp = await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")
        assert resp.status_code == 404
        assert (await as_alice.get(f"{P}/rooms/lab/jobs")).json()["total"] == 0

    async def test_report_counts_jobs_deleted_with_stale_workers(
        self, as_alice, flow, sweep
    ) -> None:
        await flow.job(as_alice)
        await asyncio.sleep(0.5)
        report = await sweep()
        assert report.workers_removed == 1
        assert (await as_alice.get(f"{P}/rooms/lab/jobs")).json()["total"] == 0
        assert report.jobs_deleted == 1


class TestCancelGrace:
    @pytest.fixture
    def settings_overrides(self) -> dict:
        return {"cancel_grace_seconds": 0.3}

    async def test_unacknowledged_cancel_finished_by_sweeper(
        self, as_alice, flow, sweep, problem
    ) -> None:
        _, worker, t = await flow.claimed(as_alice, running=True)
        assert (await as_alice.post(f"{P}/tasks/{t['id']}/cancel")).status_code == 200
        assert (await sweep()).tasks_cancelled == 0  # still within the grace period
        await asyncio.sleep(0.5)
        report = await sweep()
        assert report.tasks_cancelled == 1
        assert report.tasks_released == 0
        got = await flow.task(as_alice, t["id"])
        assert got["status"] == "cancelled"
        assert got["completed_at"] is not None
        # the worker's later updates are refused
        resp = await flow.patch(as_alice, t["id"], status="completed", worker_id=worker)
        problem(resp, 409, "lease-lost")
        assert (await flow.task(as_alice, t["id"]))["status"] == "cancelled"
        hb = (await as_alice.patch(f"{P}/workers/{worker}")).json()
        assert hb["cancel_requested"] == []


async def test_orphan_job_with_finished_tasks_soft_deleted(as_alice, flow, sweep) -> None:
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"])
    assert (await as_alice.delete(f"{P}/workers/{job['worker_id']}")).status_code == 204
    assert (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).status_code == 200
    assert (await sweep()).jobs_deleted == 0  # a pending task keeps it
    await as_alice.post(f"{P}/tasks/{t['id']}/cancel")
    report = await sweep()
    assert report.jobs_deleted == 1
    assert any(isinstance(e, JobsChanged) and e.room_id == "lab" for e in report.events)
    assert (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).status_code == 404
    assert (await flow.task(as_alice, t["id"]))["status"] == "cancelled"


async def test_sweeper_events_reach_the_sink(as_alice, flow, sweep) -> None:
    _, _, t = await flow.claimed(as_alice, lease_seconds=0.2)
    await asyncio.sleep(0.4)
    seen: list = []

    async def sink(events) -> None:
        seen.extend(events)

    report = await sweep(sink)
    assert report.tasks_released == 1
    assert seen
    assert any(isinstance(e, TaskStatusChanged) and str(e.task_id) == t["id"] for e in seen)
