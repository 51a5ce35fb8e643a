"""Worker processes under stress: signals, crashes, server restarts, many workers at once.

Workers run ``JobManager.serve()`` (``drivers/sdk_worker.py``) or the ``zndraw-joblib worker``
command in their own processes; the server is the reference app under uvicorn. Every test runs
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from zndraw_joblib_client import JobManager, JobNotFound, TaskStatus
from zndraw_joblib_core import TaskResponse

pytestmark = pytest.mark.slow

WAIT = 60.0
EXTENSIONS = Path(__file__).resolve().parent / "drivers" / "extensions.py"


def _until(manager: JobManager, task_id: Any, status: TaskStatus) -> TaskResponse:
    """Follow a task (short change long-polls) until it reaches ``status``."""
    deadline = time.monotonic() + WAIT
    task = manager.get_task(task_id)
    while task.status is not status:
        assert time.monotonic() < deadline, f"task never became {status}: {task!r}"
        assert not task.status.is_terminal, f"task ended as {task.status}: {task.error}"
        task = manager.wait(task_id, 5, wait_for="change", since=task, poll=2)
    return task


def _wait_for_job(manager: JobManager, room: str, name: str, proc: Any) -> None:
    """Wait until a worker serves job ``name`` (for the command, which writes no ready file)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert proc.process.poll() is None, proc.log()
        try:
            if manager.get_job(room, name).workers:
                return
        except JobNotFound:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{name} never got a worker:\n{proc.log()}")


def _slow(seconds: float) -> dict[str, Any]:
    return {"seconds": seconds}


@pytest.mark.parametrize("runner", ["sdk", "cli"])
def test_sigterm_lets_the_running_task_finish_and_deletes_the_worker(
    server: Any, worker_procs: Any, runner: str
) -> None:
    token = server.token("alice@example.com")
    if runner == "sdk":
        proc = worker_procs.sdk(server.url, token, "lab", "Slow", heartbeat=0.5)
        proc.wait_ready()
    else:
        proc = worker_procs.cli(
            server.url,
            token,
            f"{EXTENSIONS}:Slow",
            "--room",
            "lab",
            "--heartbeat",
            "0.5",
            "--claim-wait",
            "5",
        )
    with JobManager(server.url, token=server.token("bob@x.org")) as client:
        _wait_for_job(client, "lab", "lab:modifiers:Slow", proc)
        task = client.submit("lab:modifiers:Slow", "lab", payload=_slow(3))
        running = _until(client, task.id, TaskStatus.RUNNING)
        worker_id = running.worker_id
        assert worker_id is not None

        proc.process.send_signal(signal.SIGTERM)
        assert proc.wait_exit(WAIT) == 0, proc.log()

        done = client.get_task(task.id)  # already final: the worker reported before exiting
        assert done.status is TaskStatus.COMPLETED, done.error
        assert done.attempt == 1
        assert done.result["slept"] == 3
        assert worker_id not in {w.id for w in client.list_workers().items}
        assert client.list_workers("lab").total == 0
    assert len(worker_procs.executions("done")) == 1


def test_sigkilled_worker_task_is_rerun_once_by_another_worker_and_fenced(
    short_lease_server: Any, worker_procs: Any
) -> None:
    server = short_lease_server  # worker timeout and lease: 3 s; sweeper every 0.5 s
    token = server.token("alice@example.com")
    first = worker_procs.sdk(server.url, token, "lab", "Slow", heartbeat=0.5)
    dead_worker = first.wait_ready()
    with JobManager(server.url, token=server.token("bob@x.org")) as client:
        payload = {"seconds": 120, "retry_seconds": 1}  # long only on the first attempt
        task = client.submit("lab:modifiers:Slow", "lab", payload=payload, max_attempts=3)
        running = _until(client, task.id, TaskStatus.RUNNING)
        assert str(running.worker_id) == dead_worker
        # RUNNING is reported before run() starts: wait for the extension's own start marker
        deadline = time.monotonic() + WAIT
        while not worker_procs.executions("start"):
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.05)
        first.process.kill()
        first.wait_exit(10)

        second = worker_procs.sdk(server.url, token, "lab", "Slow", heartbeat=0.5)
        live_worker = second.wait_ready()
        done = client.wait(task.id, timeout=WAIT)
        assert done.status is TaskStatus.COMPLETED, done.error
        assert done.attempt == 2
        assert str(done.worker_id) == live_worker
        assert done.result["attempt"] == 2

        # the dead worker's late report (same user, its own worker id) is fenced off
        late = httpx.patch(
            f"{server.url}/v1/joblib/tasks/{task.id}",
            json={"status": "completed", "worker_id": dead_worker, "result": {"late": True}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert late.status_code == 409, late.text
        assert late.json()["type"].endswith("/lease-lost")
        after = client.get_task(task.id)
        assert after.result == done.result
        assert after.worker_id == done.worker_id
        assert dead_worker not in {str(w.id) for w in client.list_workers().items}

    finished = [(t, a) for t, a, _ in worker_procs.executions("done")]
    assert finished == [(str(task.id), 2)]  # completed exactly once
    started = sorted(a for t, a, _ in worker_procs.executions("start") if t == str(task.id))
    assert started == [1, 2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_worker_reconnects_after_a_server_restart(
    server: Any, worker_procs: Any, sig: signal.Signals
) -> None:
    token = server.token("alice@example.com")
    proc = worker_procs.sdk(server.url, token, "lab", "Double,Slow", heartbeat=0.5)
    proc.wait_ready()
    submitter_token = server.token("bob@x.org")
    with JobManager(server.url, token=submitter_token) as client:
        before = client.submit("lab:modifiers:Double", "lab", payload={"value": 1})
        assert client.wait(before.id, timeout=WAIT).status is TaskStatus.COMPLETED
        in_flight = client.submit("lab:modifiers:Slow", "lab", payload=_slow(3))
        _until(client, in_flight.id, TaskStatus.RUNNING)

    server.stop(sig)  # while the worker runs a task
    time.sleep(1)  # the worker sees connection errors for a while
    server.start()  # same port, same database

    with JobManager(server.url, token=submitter_token) as client:
        after = client.submit("lab:modifiers:Double", "lab", payload={"value": 21})
        done = client.wait(after.id, timeout=WAIT)
        assert done.status is TaskStatus.COMPLETED, done.error
        assert done.result["doubled"] == 42
        assert done.result["pid"] == proc.process.pid
        # the task that ran through the outage was reported once the server was back
        survived = client.wait(in_flight.id, timeout=WAIT)
        assert survived.status is TaskStatus.COMPLETED, survived.error
        assert survived.attempt == 1
    assert proc.process.poll() is None, proc.log()


def test_second_sigterm_releases_the_running_task(server: Any, worker_procs: Any) -> None:
    token = server.token("alice@example.com")
    proc = worker_procs.sdk(server.url, token, "lab", "Slow", heartbeat=0.5)
    worker_id = proc.wait_ready()
    with JobManager(server.url, token=server.token("bob@x.org")) as client:
        task = client.submit("lab:modifiers:Slow", "lab", payload=_slow(120), max_attempts=2)
        _until(client, task.id, TaskStatus.RUNNING)
        proc.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the signal handlers run in the main thread between bytecodes
        proc.process.send_signal(signal.SIGTERM)
        assert proc.wait_exit(WAIT) == 0, proc.log()
        released = client.get_task(task.id)
        assert released.status is TaskStatus.PENDING, released
        assert released.worker_id is None
        assert released.attempt == 1
        assert "shut down" in (released.error or "")
        assert worker_id not in {str(w.id) for w in client.list_workers().items}


def test_four_worker_processes_share_one_queue(server: Any, worker_procs: Any) -> None:
    token = server.token("alice@example.com")
    procs = [worker_procs.sdk(server.url, token, "lab", "Double", heartbeat=2) for _ in range(4)]
    worker_ids = {p.wait_ready() for p in procs}
    assert len(worker_ids) == 4
    with JobManager(server.url, token=server.token("bob@x.org")) as client:
        tasks = [
            client.submit("lab:modifiers:Double", "lab", payload={"value": i}) for i in range(100)
        ]
        results = [client.wait(t.id, timeout=WAIT) for t in tasks]
        for i, done in enumerate(results):
            assert done.status is TaskStatus.COMPLETED, done.error
            assert done.result["doubled"] == 2 * i
            assert done.attempt == 1
        assert client.list_tasks("lab", status="completed", limit=0).total == 100

    runs = Counter(t for t, _, _ in worker_procs.executions("done"))
    assert set(runs) == {str(t.id) for t in tasks}
    assert set(runs.values()) == {1}  # each task ran exactly once
    by_worker = Counter(str(done.worker_id) for done in results)
    assert set(by_worker) <= worker_ids
    assert len(by_worker) > 1, by_worker
    by_pid = Counter(done.result["pid"] for done in results)
    assert len(by_pid) == len(by_worker)
    for proc in procs:
        assert proc.process.poll() is None, proc.log()


def test_paused_worker_drops_its_lost_task_and_carries_on(
    short_lease_server: Any, worker_procs: Any
) -> None:
    """SIGSTOP a worker past the worker timeout: its task is released; after SIGCONT the
    worker's late report is refused (lease lost), it re-creates its worker and runs the task
    again, and only that second attempt is recorded."""
    server = short_lease_server
    token = server.token("alice@example.com")
    proc = worker_procs.sdk(server.url, token, "lab", "Slow", heartbeat=0.5)
    first_worker = proc.wait_ready()
    with JobManager(server.url, token=server.token("bob@x.org")) as client:
        task = client.submit(
            "lab:modifiers:Slow", "lab", payload={"seconds": 4, "retry_seconds": 0.5}
        )
        _until(client, task.id, TaskStatus.RUNNING)
        proc.process.send_signal(signal.SIGSTOP)
        try:
            released = _until(client, task.id, TaskStatus.PENDING)
            assert released.attempt == 1
            assert "heartbeat" in (released.error or "") or "lease" in (released.error or "")
        finally:
            proc.process.send_signal(signal.SIGCONT)
        done = client.wait(task.id, timeout=WAIT)
        assert done.status is TaskStatus.COMPLETED, done.error
        assert done.attempt == 2
        assert done.result["attempt"] == 2
        assert done.result["pid"] == proc.process.pid
        assert str(done.worker_id) != first_worker  # the worker was re-created
        assert proc.process.poll() is None, proc.log()
    starts = sorted(a for t, a, _ in worker_procs.executions("start") if t == str(task.id))
    assert starts == [1, 2]
