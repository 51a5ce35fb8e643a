"""Error mapping and retries of the request layer, seen through JobManager."""

from __future__ import annotations

import uuid

import httpx
import pytest

from zndraw_joblib_client import (
    BadRequest,
    ConnectionFailed,
    Forbidden,
    JobNotFound,
    LeaseLost,
    NotFound,
    ProblemError,
    RetryPolicy,
    ServiceUnavailable,
    TaskNotFound,
    Unauthorized,
    WorkerNotFound,
)

TASK = r"/v1/joblib/tasks/[^/]+"


def test_problem_json_becomes_core_exception(server, make_manager):
    manager = make_manager()
    with pytest.raises(JobNotFound) as info:
        manager.submit("room1:modifiers:Missing", "room1", payload={})
    assert info.value.detail == "no job room1:modifiers:Missing"
    with pytest.raises(TaskNotFound):
        manager.get_task(uuid.uuid4())


def test_lease_lost_problem_maps_to_lease_lost(server, make_manager):
    manager = make_manager()
    manager.register(_greet())
    task_id = server.add_task("@global:modifiers:Greet", {})
    other = str(uuid.uuid4())
    server.tasks[task_id]["worker_id"] = other
    with pytest.raises(LeaseLost):
        manager.update_task(task_id, status="running")


def test_plain_fastapi_errors_map_by_status(server, make_manager):
    manager = make_manager(token="wrong")
    with pytest.raises(Unauthorized) as info:
        manager.list_jobs("room1")
    assert info.value.detail == "Unauthorized"

    manager = make_manager()
    server.fail("GET", r"/v1/joblib/rooms/room1/jobs", 403)
    with pytest.raises(Forbidden):
        manager.list_jobs("room1")
    server.fail("GET", r"/v1/joblib/rooms/room1/jobs", 404)
    with pytest.raises(NotFound) as not_found:
        manager.list_jobs("room1")
    assert not isinstance(not_found.value, JobNotFound)
    server.fail("GET", r"/v1/joblib/rooms/room1/jobs", 418)
    with pytest.raises(ProblemError) as teapot:
        manager.list_jobs("room1")
    assert teapot.value.http_status == 418


def test_validation_error_detail_list_is_kept(server, make_manager):
    manager = make_manager()
    errors = [{"loc": ["body", "x"], "msg": "bad", "type": "value_error"}]
    server.fail("GET", r"/v1/joblib/workers", httpx.Response(422, json={"detail": errors}))
    with pytest.raises(ProblemError) as info:
        manager.list_workers()
    assert info.value.http_status == 422
    assert info.value.extras["errors"] == errors


def test_get_is_retried_on_5xx_and_connection_errors(server, make_manager, sleeps):
    manager = make_manager()
    server.fail("GET", r"/v1/joblib/workers", 503, httpx.ReadTimeout("slow"), 500)
    page = manager.list_workers()
    assert page.total == 0
    assert len(server.seen("GET", r"/v1/joblib/workers")) == 4
    assert len(sleeps) == 3


def test_retries_are_bounded(server, make_manager, sleeps):
    manager = make_manager(retry=RetryPolicy(attempts=3, base_delay=0, jitter=0))
    server.fail("GET", r"/v1/joblib/workers", 503, 503, 503, 503)
    with pytest.raises(ServiceUnavailable):
        manager.list_workers()
    assert len(server.seen("GET", r"/v1/joblib/workers")) == 3
    server.failures.clear()
    server.fail("GET", r"/v1/joblib/workers", *[httpx.ConnectError("down")] * 3)
    with pytest.raises(ConnectionFailed):
        manager.list_workers()


def test_retry_after_is_honoured(server, make_manager, sleeps):
    manager = make_manager()
    server.fail("GET", r"/v1/joblib/workers", httpx.Response(429, headers={"Retry-After": "7"}))
    manager.list_workers()
    assert sleeps == [7.0]


def test_backoff_grows_exponentially():
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = RetryPolicy(base_delay=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1) <= 1.5 for _ in range(50))


def test_4xx_is_not_retried(server, make_manager, sleeps):
    manager = make_manager()
    server.fail("GET", r"/v1/joblib/workers", 400)
    with pytest.raises(BadRequest):
        manager.list_workers()
    assert len(server.seen("GET", r"/v1/joblib/workers")) == 1
    assert sleeps == []


def test_post_without_idempotency_key_is_not_retried_on_5xx(server, make_manager):
    manager = make_manager(idempotent_submits=False)
    manager.register(_greet())
    server.fail("POST", r"/v1/joblib/rooms/room1/tasks/.*", 502)
    with pytest.raises(ProblemError):
        manager.submit("@global:modifiers:Greet", "room1", payload={})
    assert len(server.seen("POST", r"/v1/joblib/rooms/room1/tasks/.*")) == 1


def test_post_is_retried_when_the_connection_never_opened(server, make_manager):
    manager = make_manager(idempotent_submits=False)
    manager.register(_greet())
    server.fail("POST", r"/v1/joblib/rooms/room1/tasks/.*", httpx.ConnectError("refused"))
    task = manager.submit("@global:modifiers:Greet", "room1", payload={})
    assert task.status == "pending"
    server.fail("POST", r"/v1/joblib/rooms/room1/tasks/.*", httpx.ReadError("reset"))
    with pytest.raises(ConnectionFailed):
        manager.submit("@global:modifiers:Greet", "room1", payload={})


def test_submit_with_idempotency_key_is_retried_and_not_duplicated(server, make_manager):
    manager = make_manager()
    manager.register(_greet())
    server.fail("POST", r"/v1/joblib/rooms/room1/tasks/.*", 503)
    task = manager.submit("@global:modifiers:Greet", "room1", payload={})
    sent = server.seen("POST", r"/v1/joblib/rooms/room1/tasks/.*")
    assert len(sent) == 2
    keys = {s.headers["idempotency-key"] for s in sent}
    assert len(keys) == 1
    assert len(server.tasks) == 1
    assert next(iter(server.tasks)) == str(task.id)


def _greet():
    from zndraw_joblib_client import Extension

    class Greet(Extension):
        category = "modifiers"
        name: str = "world"

        def run(self, task=None, **kwargs):
            return {"greeting": f"Hello, {self.name}!"}

    return Greet


def test_worker_not_found_problem(server, make_manager):
    manager = make_manager()
    manager.create_worker()
    server.reset_database()
    with pytest.raises(WorkerNotFound):
        manager.heartbeat()


def test_headers_hook_is_called_for_every_attempt_and_per_call_headers_win(server, make_manager):
    calls = []

    def hook():
        calls.append(1)
        return {"Lock-Token": f"lock-{len(calls)}", "Idempotency-Key": "from-the-hook"}

    manager = make_manager(headers=hook)
    server.fail("GET", r"/v1/joblib/rooms/room1/jobs", 503)
    manager.list_jobs("room1")
    sent = server.seen("GET", r"/v1/joblib/rooms/room1/jobs")
    assert [r.headers["Lock-Token"] for r in sent] == ["lock-1", "lock-2"]  # one per attempt
    manager.register(_greet())
    manager.submit("@global:modifiers:Greet", "room1", payload={}, idempotency_key="mine")
    (submit,) = server.seen("POST", r"/v1/joblib/rooms/room1/tasks/.*")
    assert submit.headers["Idempotency-Key"] == "mine"


def test_token_wins_over_an_authorization_header_of_the_hook(server, make_manager):
    manager = make_manager(headers={"authorization": "Bearer stale"})
    assert manager.list_jobs("room1").total == 0
    (sent,) = server.seen("GET", r"/v1/joblib/rooms/room1/jobs")
    assert sent.headers.get_list("authorization") == ["Bearer good-token"]
