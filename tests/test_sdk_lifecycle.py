"""The real client SDK against the real server: registration, tasks, results, cancellation.

Every test runs on SQLite and on PostgreSQL (``backend``). Workers that run extensions are
separate processes (``drivers/sdk_worker.py``); submitters and hand-driven workers use a
``JobManager`` in the test process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from zndraw_joblib_client import (
    Forbidden,
    InvalidTaskTransition,
    JobManager,
    JobNotFound,
    LeaseLost,
    TaskStatus,
)
from zndraw_joblib_core import TaskResponse

pytestmark = pytest.mark.slow

WAIT = 60.0  # generous: the suite runs on loaded two-core machines


def _until(
    manager: JobManager,
    task_id: Any,
    predicate: Callable[[TaskResponse], bool],
    timeout: float = WAIT,
) -> TaskResponse:
    """Follow a task with change long-polls until ``predicate`` holds (or it is terminal)."""
    deadline = time.monotonic() + timeout
    task = manager.get_task(task_id)
    while not predicate(task):
        left = deadline - time.monotonic()
        assert left > 0, f"task never reached the expected state; last seen {task!r}"
        assert not task.status.is_terminal, f"task ended as {task.status}: {task.error}"
        # short long-polls: a change made before the long-poll started is only seen when
        # it times out (see test_wait_for_change_sees_a_change_made_before_the_long_poll)
        task = manager.wait(task_id, left, wait_for="change", since=task, poll=2)
    return task


@pytest.fixture
def managers(server: Any) -> Iterator[Callable[..., JobManager]]:
    """``managers(email)`` builds a JobManager for that user (``admin`` for the superuser)."""
    made: list[JobManager] = []

    def make(email: str) -> JobManager:
        token = server.admin_token() if email == "admin" else server.token(email)
        manager = JobManager(server.url, token=token)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.__exit__(None, None, None)


def _extensions() -> Any:
    """The driver module's extension classes (imported by file path)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "_contract_driver_extensions"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "drivers" / "extensions.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ext = _extensions()


def test_register_global_as_admin_and_room_jobs_as_user(
    server: Any, managers: Callable[..., JobManager]
) -> None:
    admin, alice, bob = managers("admin"), managers("alice@example.com"), managers("bob@x.org")

    global_job = admin.register(ext.Double)
    assert global_job.full_name == "@global:modifiers:Double"
    assert global_job.room_id == "@global"
    assert admin.worker_id in global_job.workers

    room_job = alice.register(ext.Double, room="lab")
    assert room_job.full_name == "lab:modifiers:Double"
    assert room_job.workers == [alice.worker_id]
    again = alice.register(ext.Double, room="lab")  # idempotent: same job, same worker
    assert again.id == room_job.id
    assert again.workers == [alice.worker_id]
    alice.register(ext.Boom, room="lab")  # a second job reuses the client's one worker
    assert alice.get_job("lab", "lab:analysis:Boom").workers == [alice.worker_id]
    assert alice.get_job("lab", "lab:analysis:Boom").live_workers == 1

    with pytest.raises(Forbidden):
        bob.register(ext.Slow)  # @global needs a superuser

    visible = {job.full_name for job in bob.list_jobs("lab").items}
    assert {"@global:modifiers:Double", "lab:modifiers:Double", "lab:analysis:Boom"} <= visible
    served = {job.full_name: job.live_workers for job in bob.list_jobs("lab", live=True).items}
    assert served["lab:modifiers:Double"] == 1
    assert not visible & {job.full_name for job in bob.list_jobs("lab", live=False).items}
    elsewhere = {job.full_name for job in bob.list_jobs("kitchen").items}
    assert "@global:modifiers:Double" in elsewhere
    assert "lab:modifiers:Double" not in elsewhere
    with pytest.raises(JobNotFound):
        bob.get_job("kitchen", "lab:modifiers:Double")

    workers = {w.id for w in admin.list_workers().items}
    assert {admin.worker_id, alice.worker_id} <= workers
    lab_workers = {w.id: w.job_count for w in bob.list_workers("lab").items}
    assert lab_workers.get(alice.worker_id) == 2


def test_submit_claim_run_complete_by_hand(
    server: Any, managers: Callable[..., JobManager]
) -> None:
    """A hand-driven worker: claim, start, complete with a JSON result, fail, wait."""
    worker, submitter = managers("alice@example.com"), managers("bob@x.org")
    worker.register(ext.Double, room="lab")

    first = submitter.submit(ext.Double(value=21), "lab", job_room="lab")  # an instance
    second = submitter.submit("lab:modifiers:Double", "lab", payload={"value": 5})  # by name
    assert first.status is TaskStatus.PENDING
    assert first.job_name == second.job_name == "lab:modifiers:Double"
    assert second.payload == {"value": 5}

    (claimed,) = worker.claim(wait=10)
    assert claimed.task_id == first.id  # oldest first
    assert claimed.attempt == 1
    assert claimed.room_id == "lab"
    assert isinstance(claimed.extension, ext.Double)
    assert claimed.extension.value == 21
    running = worker.update_task(claimed.task_id, status="running")
    assert running.status is TaskStatus.RUNNING
    result = {"doubled": 42, "nested": {"list": [1, 2.5, None, "x"]}}
    worker.update_task(claimed.task_id, status="completed", result=result)

    done = submitter.wait(first.id, timeout=WAIT)
    assert done.status is TaskStatus.COMPLETED
    assert done.result == result
    assert done.worker_id == worker.worker_id
    assert done.completed_at is not None

    (claimed,) = worker.claim(wait=10)
    assert claimed.task_id == second.id
    worker.update_task(claimed.task_id, status="running")
    worker.update_task(claimed.task_id, status="failed", error="gave up")
    failed = submitter.wait(second.id, timeout=WAIT)
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "gave up"
    with pytest.raises(InvalidTaskTransition):
        worker.update_task(claimed.task_id, status="running", worker_id=None)
    assert worker.claim() == []


def test_worker_process_runs_completes_fails_retries_and_reports_progress(
    server: Any, managers: Callable[..., JobManager], worker_procs: Any
) -> None:
    token = server.token("alice@example.com")
    proc = worker_procs.sdk(server.url, token, "lab", "Double,Boom,Flaky,Steps", concurrency=2)
    worker_id = proc.wait_ready()
    client = managers("bob@x.org")

    doubled = client.submit(ext.Double(value=4), "lab", job_room="lab")
    boom = client.submit("lab:analysis:Boom", "lab", payload={"text": "kaput"})
    flaky = client.submit(ext.Flaky(fail_attempts=1), "lab", job_room="lab", max_attempts=3)
    steps = client.submit(ext.Steps(steps=4, pause=0.5), "lab", job_room="lab")

    seen: list[TaskResponse] = []

    def watch(task: TaskResponse) -> bool:
        seen.append(task)
        return task.status.is_terminal

    steps_done = _until(client, steps.id, watch)
    assert steps_done.status is TaskStatus.COMPLETED, steps_done.error
    assert steps_done.progress == 1.0
    assert steps_done.message == "step 4 of 4"
    assert steps_done.result == {"steps": 4}
    reported = [t.progress for t in seen if t.progress is not None]
    assert reported == sorted(reported)
    assert any(t.status is TaskStatus.RUNNING and t.progress for t in seen), seen

    done = client.wait(doubled.id, timeout=WAIT)
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result["doubled"] == 8
    assert done.result["attempt"] == 1
    assert str(done.worker_id) == worker_id == done.result["worker_id"]

    failed = client.wait(boom.id, timeout=WAIT)
    assert failed.status is TaskStatus.FAILED
    assert failed.result is None
    assert "Traceback (most recent call last)" in failed.error
    assert "ValueError: exploded: kaput" in failed.error
    assert "_explode" in failed.error  # the frame that raised
    assert failed.attempt == 1  # a plain failure is final

    retried = client.wait(flaky.id, timeout=WAIT)
    assert retried.status is TaskStatus.COMPLETED, retried.error
    assert retried.attempt == 2
    assert retried.result["attempt"] == 2
    starts = sorted(a for t, a, _ in worker_procs.executions("start") if t == str(flaky.id))
    assert starts == [1, 2]

    assert proc.process.poll() is None, proc.log()


def test_cancel_and_wait_long_poll_against_a_worker_process(
    server: Any, managers: Callable[..., JobManager], worker_procs: Any
) -> None:
    """Cancel a pending task (at once) and a running one (the extension sees it through the
    heartbeat and ends it ``cancelled``); ``wait()`` is one long-poll that returns on
    completion."""
    token = server.token("alice@example.com")
    proc = worker_procs.sdk(server.url, token, "lab", "Double,Spin,Slow", heartbeat=0.5)
    proc.wait_ready()
    client = managers("bob@x.org")

    # wait(): a single long-poll (the server honours Prefer: wait) answered on completion
    slow = client.submit(ext.Slow(seconds=2), "lab", job_room="lab")
    gets: list[httpx.Response] = []

    def record(response: httpx.Response) -> None:
        if response.request.method == "GET":
            gets.append(response)

    with httpx.Client(base_url=server.url, event_hooks={"response": [record]}) as http:
        watcher = JobManager(client=http, token=server.token("bob@x.org"))
        started = time.monotonic()
        done = watcher.wait(slow.id, poll=300)  # one long-poll, capped by the server (60 s)
        waited = time.monotonic() - started
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result["slept"] == 2
    assert len(gets) == 1, [g.headers for g in gets]
    assert "preference-applied" in gets[0].headers
    assert waited < 55, "the long-poll ran into its cap instead of returning on completion"

    later = datetime.now(UTC) + timedelta(hours=1)
    pending = client.submit(ext.Double(value=1), "lab", job_room="lab", run_after=later)
    cancelled = client.cancel(pending.id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert client.get_task(pending.id).status is TaskStatus.CANCELLED

    spin = client.submit(ext.Spin(limit=120), "lab", job_room="lab")
    _until(client, spin.id, lambda t: t.status is TaskStatus.RUNNING)
    requested = client.cancel(spin.id)
    assert requested.cancel_requested is True
    assert requested.status in (TaskStatus.RUNNING, TaskStatus.CANCELLED)

    final = client.wait(spin.id, timeout=WAIT)
    assert final.status is TaskStatus.CANCELLED
    # acknowledged by the extension (TaskCancelled from check_cancelled), not by the sweeper
    assert final.error == f"task {spin.id} was cancelled"
    assert final.result is None

    after = client.submit(ext.Double(value=3), "lab", job_room="lab")  # the worker goes on
    assert client.wait(after.id, timeout=WAIT).status is TaskStatus.COMPLETED
    assert proc.process.poll() is None, proc.log()


def test_heartbeats_keep_a_busy_worker_alive_past_the_worker_timeout(
    short_lease_server: Any, worker_procs: Any
) -> None:
    server = short_lease_server  # worker timeout and lease: 3 s
    token = server.token("alice@example.com")
    proc = worker_procs.sdk(server.url, token, "lab", "Slow", heartbeat=0.5)
    worker_id = proc.wait_ready()
    with JobManager(server.url, token=server.token("bob@x.org")) as client:
        task = client.submit(ext.Slow(seconds=6), "lab", job_room="lab")
        done = client.wait(task.id, timeout=WAIT)
        assert done.status is TaskStatus.COMPLETED, done.error
        assert done.attempt == 1
        assert done.result["worker_id"] == worker_id
        assert worker_id in {str(w.id) for w in client.list_workers().items}
    runs = [r for r in worker_procs.executions("start") if r[0] == str(task.id)]
    assert len(runs) == 1


def _claim_one(manager: JobManager, timeout: float = WAIT) -> Any:
    """Claim with short long-polls (each claim also refreshes the worker's heartbeat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claimed = manager.claim(wait=1)
        if claimed:
            return claimed[0]
    raise AssertionError("nothing to claim")


def test_a_stale_hand_driven_worker_gets_lease_lost(short_lease_server: Any) -> None:
    """A worker that stops heartbeating loses its task: its late updates raise LeaseLost
    (409, not 403) while the task is pending again and after another worker claimed it."""
    server = short_lease_server
    token = server.token("alice@example.com")
    with (
        JobManager(server.url, token=token) as stale,
        JobManager(server.url, token=token) as fresh,
    ):
        stale.register(ext.Double, room="lab")
        task = stale.submit(ext.Double(value=2), "lab", job_room="lab", max_attempts=2)
        (claimed,) = stale.claim(wait=10)
        stale.update_task(claimed.task_id, status="running")
        released = _until(stale, task.id, lambda t: t.status is TaskStatus.PENDING)
        assert released.worker_id is None
        assert released.attempt == 1
        with pytest.raises(LeaseLost):
            stale.update_task(claimed.task_id, status="completed", result={"late": True})

        fresh.register(ext.Double, room="lab")
        again = _claim_one(fresh)
        assert again.task_id == task.id
        assert again.attempt == 2
        with pytest.raises(LeaseLost):
            claimed.progress(0.5, "still here?")
        with pytest.raises(LeaseLost):
            stale.update_task(claimed.task_id, status="completed", result={"late": True})
        fresh.update_task(again.task_id, status="running")
        fresh.update_task(again.task_id, status="completed", result={"doubled": 4})
        done = fresh.wait(task.id, timeout=WAIT)
        assert done.result == {"doubled": 4}
        assert done.attempt == 2
        assert done.worker_id == fresh.worker_id


def test_wait_for_change_sees_a_change_made_before_the_long_poll(
    server_factory: Callable[[str], Any], tmp_path: Any
) -> None:
    server = server_factory(f"sqlite+aiosqlite:///{tmp_path / 'change.db'}")  # backend-neutral
    token = server.token("bob@x.org")
    with (
        JobManager(server.url, token=server.token("alice@example.com")) as worker,
        JobManager(server.url, token=token) as client,
    ):
        worker.register(ext.Double, room="lab")
        task = client.submit(ext.Double(value=1), "lab", job_room="lab")
        worker.claim(wait=10)  # pending -> claimed, before the watcher asks
        # The server answers at once, without waiting, for a version the caller has not seen.
        raw = httpx.get(
            f"{server.url}/v1/joblib/tasks/{task.id}",
            params={"wait_for": "change"},
            headers={
                "Authorization": f"Bearer {token}",
                "Prefer": "wait=30",
                "If-None-Match": f'"{task.version}"',
            },
            timeout=60,
        )
        assert raw.json()["status"] == "claimed"
        assert "preference-applied" not in raw.headers
        assert raw.headers["etag"] == f'"{raw.json()["version"]}"'
        seen = client.wait(task.id, 60, wait_for="change", since=task, poll=30)
        assert seen.status is TaskStatus.CLAIMED
