"""The worker loop end to end against the fake server."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from zndraw_joblib_client import Extension, Retry, TaskCancelled, Unauthorized, WorkerNotFound

GREET = "@global:modifiers:Greet"
FAST = {"heartbeat_interval": 0.01, "claim_wait": 1, "poll_interval": 0.01}


class Greet(Extension):
    category = "modifiers"
    name: str = "world"

    def run(self, task=None, **kwargs):
        if self.name == "boom":
            raise RuntimeError("it exploded")
        if self.name == "later":
            raise Retry("not now")
        if self.name == "nope":
            raise TaskCancelled("gave up")
        return {"greeting": f"Hello, {self.name}!", **kwargs}


class Slow(Extension):
    """Runs until cancelled (or released)."""

    category = "modifiers"
    started: bool = False

    def run(self, task=None, **kwargs):
        assert task is not None
        task.progress(0.1, "started")
        while True:
            task.check_cancelled()
            time.sleep(0.002)


GATES: dict[str, threading.Event] = {}


def gate(task_id: str) -> threading.Event:
    return GATES.setdefault(str(task_id), threading.Event())


class Gate(Extension):
    """Runs until the test opens its gate."""

    category = "analysis"

    def run(self, task=None, **kwargs):
        gate(task.task_id).wait(10)
        return "done"


def finished(server, task_id):
    return lambda: server.tasks[task_id]["status"] in {"completed", "failed", "cancelled"}


def updates(server, task_id):
    """The updates sent for the task (without the next claim a report may carry)."""
    seen = server.seen("PATCH", f"/v1/joblib/tasks/{task_id}")
    return [{k: v for k, v in s.body.items() if k != "claim_next"} for s in seen]


def test_completed_with_result(server, make_manager, until):
    manager = make_manager()
    manager.register(Greet)
    task_id = server.add_task(GREET, {"name": "Ada"})
    manager.start(**FAST, run_kwargs={"extra": 1})
    until(finished(server, task_id))
    manager.stop(timeout=5)
    wid = str(server.tasks[task_id]["worker_id"])
    assert updates(server, task_id) == [
        {"status": "running", "worker_id": wid},
        {
            "status": "completed",
            "worker_id": wid,
            "result": {"greeting": "Hello, Ada!", "extra": 1},
        },
    ]


def test_failure_reports_exception_and_traceback(server, make_manager, until):
    manager = make_manager()
    manager.register(Greet)
    task_id = server.add_task(GREET, {"name": "boom"})
    manager.start(**FAST)
    until(finished(server, task_id))
    manager.stop(timeout=5)
    task = server.tasks[task_id]
    assert task["status"] == "failed"
    assert task["error"].startswith("RuntimeError: it exploded")
    assert "Traceback (most recent call last)" in task["error"]
    assert task["retry"] is None


def test_long_errors_are_truncated(server, make_manager, until):
    class Loud(Extension):
        category = "modifiers"

        def run(self, task=None, **kwargs):
            raise ValueError("x" * 100_000)

    manager = make_manager()
    manager.register(Loud)
    task_id = server.add_task("@global:modifiers:Loud", {})
    manager.start(**FAST, max_error_bytes=2048)
    until(finished(server, task_id))
    manager.stop(timeout=5)
    error = server.tasks[task_id]["error"]
    assert len(error.encode()) <= 2048
    assert error.startswith("ValueError: xxx")
    assert "truncated" in error


def test_retry_and_cancelled_outcomes(server, make_manager, until):
    manager = make_manager()
    manager.register(Greet)
    later = server.add_task(GREET, {"name": "later"})
    nope = server.add_task(GREET, {"name": "nope"})
    bad = server.add_task(GREET, {"name": 42})
    manager.start(**FAST)
    for task_id in (later, nope, bad):
        until(finished(server, task_id))
    manager.stop(timeout=5)
    assert updates(server, later)[-1] == {
        "status": "failed",
        "worker_id": server.tasks[later]["worker_id"],
        "error": "not now",
        "retry": True,
    }
    assert server.tasks[nope]["status"] == "cancelled"
    assert server.tasks[nope]["error"] == "gave up"
    assert server.tasks[bad]["status"] == "failed"
    assert "ValidationError" in server.tasks[bad]["error"]


def test_cancellation_is_delivered_by_heartbeat(server, make_manager, until):
    manager = make_manager()
    manager.register(Slow)
    task_id = server.add_task("@global:modifiers:Slow", {})
    manager.start(**FAST)
    until(lambda: server.tasks[task_id]["message"] == "started")
    manager.cancel(task_id)
    until(finished(server, task_id))
    manager.stop(timeout=5)
    assert server.tasks[task_id]["status"] == "cancelled"
    beats = server.seen("PATCH", r"/v1/joblib/workers/.*")
    assert beats


def test_graceful_stop_finishes_running_task_then_deletes_worker(server, make_manager, until):
    manager = make_manager()
    manager.register(Gate)
    task_id = server.add_task("@global:analysis:Gate", {})
    manager.start(**FAST)
    until(lambda: server.tasks[task_id]["status"] == "running")
    stopper = threading.Thread(target=manager.stop, kwargs={"timeout": 10})
    stopper.start()
    until(lambda: manager._loop is None or manager._loop._stop.is_set())
    assert server.tasks[task_id]["status"] == "running"
    gate(task_id).set()
    stopper.join(10)
    manager.disconnect()
    assert server.tasks[task_id]["status"] == "completed"
    assert server.workers == {}
    claims_after_stop = server.seen("POST", "/v1/joblib/tasks/claim")
    server.add_task("@global:analysis:Gate", {})
    assert server.seen("POST", "/v1/joblib/tasks/claim") == claims_after_stop


def test_forced_stop_releases_running_task(server, make_manager, until):
    manager = make_manager()
    manager.register(Gate)
    task_id = server.add_task("@global:analysis:Gate", {})
    manager.start(**FAST)
    until(lambda: server.tasks[task_id]["status"] == "running")
    manager.stop(timeout=5, force=True)
    last = updates(server, task_id)[-1]
    assert last["status"] == "failed"
    assert last["retry"] is True
    gate(task_id).set()


def test_serve_in_context_manager_exit_deletes_worker(server, make_manager, until):
    with make_manager() as manager:
        manager.register(Greet)
        manager.start(**FAST)
        task_id = server.add_task(GREET, {})
        until(finished(server, task_id))
    assert server.workers == {}
    assert len(server.seen("DELETE")) == 1


def test_unauthorized_stops_the_blocking_loop(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    server.tokens.clear()
    with pytest.raises(Unauthorized):
        manager.serve(**FAST, install_signal_handlers=False)


def test_lost_worker_is_recreated_and_jobs_registered_again(server, make_manager, until):
    manager = make_manager()
    manager.register(Greet)
    manager.register(Gate, room="room1")
    old = manager.worker_id
    server.reset_database()
    manager.start(**FAST)
    until(lambda: manager.worker_id != old and len(server.jobs) == 2)
    task_id = server.add_task(GREET, {"name": "again"})
    until(finished(server, task_id))
    manager.stop(timeout=5)
    assert server.tasks[task_id]["status"] == "completed"
    assert len(server.seen("POST", "/v1/joblib/workers")) == 2
    assert {p.body["worker_id"] for p in server.seen("PUT")[2:]} == {str(manager.worker_id)}


def test_worker_refused_again_right_after_recovery_stops_the_loop(server, make_manager, caplog):
    manager = make_manager()
    manager.register(Greet)
    lost = httpx.Response(
        404,
        json={"type": "/v1/problems/worker-not-found", "title": "Not Found", "status": 404},
        headers={"content-type": "application/problem+json"},
    )
    server.fail("POST", "/v1/joblib/tasks/claim", lost, lost, lost)
    with pytest.raises(WorkerNotFound):
        manager.serve(**FAST, install_signal_handlers=False)
    assert len(server.seen("POST", "/v1/joblib/workers")) == 2  # one recovery, not a loop
    stopped = [r for r in caplog.records if "worker stopped:" in r.getMessage()]
    assert len(stopped) == 1
    assert not stopped[0].exc_info


def test_loop_survives_a_server_outage(server, make_manager, until, sleeps):
    manager = make_manager()
    manager.register(Greet)
    down = [httpx.ConnectError("down")] * 10
    server.fail("POST", "/v1/joblib/tasks/claim", *down)
    manager.start(**FAST)
    task_id = server.add_task(GREET, {"name": "after"})
    until(finished(server, task_id))
    manager.stop(timeout=5)
    assert server.tasks[task_id]["status"] == "completed"
    assert not [f for f in server.failures if f[1] == "/v1/joblib/tasks/claim"]


def test_final_report_is_retried_through_errors(server, make_manager, until):
    manager = make_manager()
    manager.register(Greet)
    task_id = server.add_task(GREET, {"name": "x"})
    server.fail("PATCH", f"/v1/joblib/tasks/{task_id}", "pass", *[503] * 6)
    manager.start(**FAST)
    until(finished(server, task_id))
    manager.stop(timeout=5)
    assert server.tasks[task_id]["status"] == "completed"
    assert len(updates(server, task_id)) == 8


def test_concurrency_starts_claimed_tasks_in_one_batch(server, make_manager, until):
    manager = make_manager()
    manager.register(Gate)
    ids = [server.add_task("@global:analysis:Gate", {}) for _ in range(3)]
    manager.start(**FAST, concurrency=3)
    until(lambda: all(server.tasks[t]["status"] == "running" for t in ids))
    (batch,) = server.seen("PATCH", "/v1/joblib/tasks")
    assert [item["task_id"] for item in batch.body] == ids
    assert server.seen("POST", "/v1/joblib/tasks/claim")[0].body["max_tasks"] == 3
    for t in ids:
        gate(t).set()
    for t in ids:
        until(finished(server, t))
    manager.stop(timeout=5)
    assert all(server.tasks[t]["result"] == "done" for t in ids)


def _signal_when(predicate, until, *then):
    def later():
        until(predicate)
        for action in then:
            action()

    thread = threading.Thread(target=later, daemon=True)
    thread.start()
    return thread


def test_sigint_stops_serve_after_the_running_task(server, make_manager, until):
    # (a shell starting the tests in the background leaves SIGINT ignored, not the default)
    before = signal.getsignal(signal.SIGINT)
    manager = make_manager()
    manager.register(Gate)
    task_id = server.add_task("@global:analysis:Gate", {})
    helper = _signal_when(
        lambda: server.tasks[task_id]["status"] == "running",
        until,
        lambda: os.kill(os.getpid(), signal.SIGINT),
        lambda: until(lambda: manager._loop is not None and manager._loop._stop.is_set()),
        lambda: gate(task_id).set(),
    )
    manager.serve(**FAST)
    helper.join(5)
    assert server.tasks[task_id]["status"] == "completed"
    assert server.workers == {}
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_second_sigint_releases_the_running_task(server, make_manager, until):
    manager = make_manager()
    manager.register(Gate)
    task_id = server.add_task("@global:analysis:Gate", {})
    helper = _signal_when(
        lambda: server.tasks[task_id]["status"] == "running",
        until,
        lambda: os.kill(os.getpid(), signal.SIGTERM),
        lambda: until(lambda: manager._loop is not None and manager._loop._stop.is_set()),
        lambda: os.kill(os.getpid(), signal.SIGINT),
    )
    manager.serve(**FAST)
    helper.join(5)
    gate(task_id).set()
    last = updates(server, task_id)[-1]
    assert (last["status"], last["retry"]) == ("failed", True)
    assert server.workers == {}


@pytest.mark.parametrize("batch_answer", [503, 405])
def test_batch_start_failure_falls_back_to_single_updates(
    server, make_manager, until, batch_answer
):
    manager = make_manager()
    manager.register(Greet)
    ids = [server.add_task(GREET, {"name": f"n{i}"}) for i in range(2)]
    server.fail("PATCH", "/v1/joblib/tasks", batch_answer)
    manager.start(**FAST, concurrency=2)
    for t in ids:
        until(finished(server, t))
    manager.stop(timeout=5)
    assert [server.tasks[t]["status"] for t in ids] == ["completed", "completed"]
    for t in ids:
        assert updates(server, t)[0]["status"] == "running"


def test_idle_worker_sends_no_heartbeats_while_its_claims_reach_the_server(
    server, make_manager, until
):
    manager = make_manager()
    manager.register(Greet)
    manager.start(heartbeat_interval=0.01, claim_wait=0.05, poll_interval=0.01)
    until(lambda: len(server.seen("POST", r"/v1/joblib/tasks/claim")) >= 5)
    manager.stop(timeout=5)
    assert server.seen("PATCH", r"/v1/joblib/workers/.*") == []


def test_idle_worker_heartbeats_when_claims_stall(server, make_manager, until):
    manager = make_manager()
    manager.register(Greet)
    manager.start(
        heartbeat_interval=0.01, claim_wait=0.05, poll_interval=0.01, idle_heartbeat_after=0
    )
    until(lambda: len(server.seen("PATCH", r"/v1/joblib/workers/.*")) >= 2)
    manager.stop(timeout=5)


# -- a server that takes start and claim_next: one request per task ----------------------

CLAIM = "/v1/joblib/tasks/claim"


def test_one_request_per_task_in_steady_state(server, make_manager, until):
    server.lean = True
    manager = make_manager()
    manager.register(Greet)
    ids = [server.add_task(GREET, {"name": str(n)}) for n in range(5)]
    manager.start(**FAST)
    for task_id in ids:
        until(finished(server, task_id))
    manager.stop(timeout=5)
    assert [server.tasks[t]["result"]["greeting"] for t in ids] == [
        f"Hello, {n}!" for n in range(5)
    ]
    requests = [(r.method, r.path, r.body) for r in server.requests]
    last = max(i for i, (m, p, _) in enumerate(requests) if m == "PATCH" and ids[-1] in p)
    before = requests[: last + 1]
    # one claim to begin with; every other task came with the previous task's report
    assert [m for m, p, _ in before if p == CLAIM] == ["POST"]
    (claim,) = [b for _, p, b in before if p == CLAIM]
    assert claim["start"] is True  # the first claim also started its task
    reports = [(p, b) for m, p, b in before if m == "PATCH"]
    assert [p.rsplit("/", 1)[1] for p, _ in reports] == ids  # no separate start
    assert all(b["status"] == "completed" and b["claim_next"]["start"] for _, b in reports)


def test_free_slots_claim_together_and_reports_carry_claims(server, make_manager, until):
    server.lean = True
    manager = make_manager()
    manager.register(Gate)
    ids = [server.add_task("@global:analysis:Gate", {}) for _ in range(5)]
    manager.start(**FAST, concurrency=3)
    until(lambda: sum(server.tasks[t]["status"] == "running" for t in ids) == 3)
    first = server.seen("POST", CLAIM)[0].body
    assert first["max_tasks"] == 3
    assert first["start"] is True
    for task_id in ids:
        gate(task_id).set()
    for task_id in ids:
        until(finished(server, task_id))
    manager.stop(timeout=5)
    assert all(server.tasks[t]["result"] == "done" for t in ids)
    patched = [r.body for r in server.requests if r.method == "PATCH"]
    entries = []
    for body in patched:
        entries += body if isinstance(body, list) else body.get("items", [body])
    assert sorted(e.get("status") for e in entries) == ["completed"] * 5  # no start, no repeat


def test_a_server_refusing_start_gets_the_two_step_protocol(server, make_manager, until):
    server.lean = True
    refusal = httpx.Response(
        422,
        json={"type": "/v1/problems/validation-error", "title": "x", "status": 422},
        headers={"content-type": "application/problem+json"},
    )
    server.fail("POST", CLAIM, refusal)
    manager = make_manager()
    manager.register(Greet)
    task_id = server.add_task(GREET, {"name": "Ada"})
    manager.start(**FAST)
    until(finished(server, task_id))
    manager.stop(timeout=5)
    assert server.tasks[task_id]["status"] == "completed"
    claims = server.seen("POST", CLAIM)
    assert "start" in claims[0].body
    assert all("start" not in c.body for c in claims[1:])
    updates = [r.body for r in server.seen("PATCH", f"/v1/joblib/tasks/{task_id}")]
    assert [u["status"] for u in updates] == ["running", "completed"]
    assert all("claim_next" not in u for u in updates)
