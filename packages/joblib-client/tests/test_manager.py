"""JobManager requests: login, registration, submit, claim, update, listings, wait."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from zndraw_joblib_client import (
    Category,
    ClaimedTask,
    Extension,
    InvalidPayload,
    InvalidTaskTransition,
    JobManager,
    JobNotFound,
    LoginFailed,
    ServiceUnavailable,
    TaskStatus,
    UnexpectedResponse,
    UnknownJob,
)
from zndraw_joblib_client.extension import job_full_name


class Greet(Extension):
    category = "modifiers"
    name: str = "world"

    def run(self, task=None, **kwargs):
        return {"greeting": f"Hello, {self.name}!"}


class Measure(Extension):
    category = Category.ANALYSIS
    steps: int = 1

    def run(self, task=None, **kwargs):
        return self.steps


GREET = "@global:modifiers:Greet"


def test_construction_sends_nothing(server):
    client = httpx.Client(transport=httpx.MockTransport(server.handle), base_url="http://x")
    JobManager(client=client, email="a@b.c", password="pw")
    JobManager("http://127.0.0.1:1", token="t")
    assert server.requests == []


def test_constructor_needs_exactly_one_target():
    with pytest.raises(ValueError):
        JobManager()
    with pytest.raises(ValueError):
        JobManager("http://x", client=httpx.Client())
    with pytest.raises(ValueError):
        JobManager("http://x", email="only@mail")


def test_full_names():
    assert Greet.job_full_name() == GREET
    assert job_full_name(Measure, "room1") == "room1:analysis:Measure"


def test_lazy_login_with_form_then_bearer(server, make_manager):
    server.users["me@x.org"] = "secret"
    manager = make_manager(token=None, email="me@x.org", password="secret")
    manager.list_workers()
    login, listing = server.requests
    assert login.path == "/auth/jwt/login"
    assert login.headers["content-type"] == "application/x-www-form-urlencoded"
    assert login.body == {"username": "me@x.org", "password": "secret"}
    assert "authorization" not in login.headers
    assert listing.headers["authorization"] == "Bearer token-me@x.org"
    manager.list_workers()
    assert len(server.seen("POST", "/auth/jwt/login")) == 1


def test_bad_credentials_raise_login_failed(server, make_manager):
    manager = make_manager(token=None, email="me@x.org", password="nope")
    with pytest.raises(LoginFailed):
        manager.list_workers()


def test_register_option_creates_the_account(server, make_manager):
    manager = make_manager(token=None, email="new@x.org", password="pw", register=True)
    assert manager.login() == "token-new@x.org"
    (reg,) = server.seen("POST", "/auth/register")
    assert reg.body == {"email": "new@x.org", "password": "pw"}
    assert len(server.seen("POST", "/auth/jwt/login")) == 2


def test_expired_token_triggers_one_new_login(server, make_manager):
    server.users["me@x.org"] = "secret"
    manager = make_manager(token=None, email="me@x.org", password="secret")
    manager.list_workers()
    server.tokens.discard("token-me@x.org")
    server.fail("POST", "/auth/jwt/login", httpx.Response(200, json={"access_token": "fresh"}))
    server.tokens.add("fresh")
    manager.list_workers()
    assert server.requests[-1].headers["authorization"] == "Bearer fresh"


def test_register_reuses_one_worker(server, make_manager):
    manager = make_manager()
    job = manager.register(Greet)
    manager.register(Measure, room="room1")
    assert len(server.seen("POST", "/v1/joblib/workers")) == 1
    puts = server.seen("PUT")
    assert [p.path for p in puts] == [
        "/v1/joblib/rooms/@global/jobs",
        "/v1/joblib/rooms/room1/jobs",
    ]
    assert puts[0].body == {
        "category": "modifiers",
        "name": "Greet",
        "schema": Greet.model_json_schema(),
        "worker_id": str(manager.worker_id),
    }
    assert puts[1].body["category"] == "analysis"
    assert {p.body["worker_id"] for p in puts} == {str(manager.worker_id)}
    assert job.full_name == GREET
    assert GREET in manager
    assert manager[GREET] is Greet
    assert sorted(manager) == [GREET, "room1:analysis:Measure"]
    assert len(manager) == 2


def test_register_as_decorator_returns_the_class(server, make_manager):
    manager = make_manager()

    @manager.register(room="room2")
    class Local(Extension):
        category = "selections"

        def run(self, task=None, **kwargs):
            return None

    assert Local.__name__ == "Local"
    assert "room2:selections:Local" in manager


def test_submit_body_and_headers(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    task = manager.submit(
        Greet(name="Ada"),
        "room1",
        priority=5,
        run_after=when,
        max_attempts=3,
        timeout_seconds=60,
        idempotency_key="k1",
    )
    (sent,) = server.seen("POST", r"/v1/joblib/rooms/room1/tasks/.*")
    assert sent.path == f"/v1/joblib/rooms/room1/tasks/{GREET}"
    assert sent.body == {
        "payload": {"name": "Ada"},
        "priority": 5,
        "run_after": "2030-01-02T03:04:05Z",
        "max_attempts": 3,
        "timeout_seconds": 60.0,
    }
    assert sent.headers["idempotency-key"] == "k1"
    assert task.status is TaskStatus.PENDING
    again = manager.submit(GREET, "room1", payload={"name": "Ada"}, idempotency_key="k1")
    assert again.id == task.id
    assert len(server.tasks) == 1


def test_submit_minimal_body(server, make_manager):
    manager = make_manager(idempotent_submits=False)
    manager.register(Greet)
    manager.submit(GREET, "room1", payload={"name": "Bo"})
    (sent,) = server.seen("POST", r"/v1/joblib/rooms/room1/tasks/.*")
    assert sent.body == {"payload": {"name": "Bo"}}
    assert "idempotency-key" not in sent.headers


BATCH = rf"/v1/joblib/rooms/room1/jobs/{GREET}/tasks"


def test_submit_many_path_body_and_headers(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    tasks = manager.submit_many(
        Greet,
        "room1",
        [Greet(name="Ada"), {"name": "Bo"}],
        priority=5,
        run_after=when,
        max_attempts=3,
        timeout_seconds=60,
    )
    (sent,) = server.seen("POST", r"/v1/joblib/rooms/.*")
    assert sent.path == f"/v1/joblib/rooms/room1/jobs/{GREET}/tasks"
    options = {
        "priority": 5,
        "run_after": "2030-01-02T03:04:05Z",
        "max_attempts": 3,
        "timeout_seconds": 60.0,
    }
    assert sent.body == {
        "items": [{"payload": {"name": "Ada"}, **options}, {"payload": {"name": "Bo"}, **options}]
    }
    uuid.UUID(sent.headers["idempotency-key"])  # a fresh key by default
    assert [t.payload for t in tasks] == [{"name": "Ada"}, {"name": "Bo"}]
    assert all(t.status is TaskStatus.PENDING and t.job_name == GREET for t in tasks)


def test_submit_many_minimal_body(server, make_manager):
    manager = make_manager(idempotent_submits=False)
    manager.register(Greet)
    manager.submit_many(GREET, "room1", [{"name": "Bo"}, {}])
    (sent,) = server.seen("POST", BATCH)
    assert sent.body == {"items": [{"payload": {"name": "Bo"}}, {"payload": {}}]}
    assert "idempotency-key" not in sent.headers


def test_submit_many_job_from_an_instance_and_job_room(server, make_manager):
    manager = make_manager()
    manager.register(Measure, room="room1")
    tasks = manager.submit_many(Measure(steps=9), "room1", [Measure(steps=2)], job_room="room1")
    (sent,) = server.seen("POST", r"/v1/joblib/rooms/.*")
    assert sent.path == "/v1/joblib/rooms/room1/jobs/room1:analysis:Measure/tasks"
    assert sent.body == {"items": [{"payload": {"steps": 2}}]}
    assert tasks[0].payload == {"steps": 2}


def test_submit_many_empty_sends_nothing(server, make_manager):
    manager = make_manager()
    assert manager.submit_many(GREET, "room1", []) == []
    assert manager.submit_many(Greet, "room1", iter(())) == []
    assert server.requests == []


def test_submit_many_chunks_in_order_with_distinct_keys(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    tasks = manager.submit_many(GREET, "room1", ({"name": str(i)} for i in range(2500)))
    sent = server.seen("POST", BATCH)
    assert [len(s.body["items"]) for s in sent] == [1000, 1000, 500]
    assert sent[1].body["items"][0] == {"payload": {"name": "1000"}}
    keys = [s.headers["idempotency-key"] for s in sent]
    assert len(set(keys)) == 3
    assert [t.payload["name"] for t in tasks] == [str(i) for i in range(2500)]
    assert len({t.id for t in tasks}) == len(server.tasks) == 2500


@pytest.mark.parametrize(("count", "sizes"), [(1000, [1000]), (1001, [1000, 1])])
def test_submit_many_chunk_boundary(server, make_manager, count, sizes):
    manager = make_manager()
    manager.register(Greet)
    assert len(manager.submit_many(GREET, "room1", [{}] * count)) == count
    assert [len(s.body["items"]) for s in server.seen("POST", BATCH)] == sizes


def test_submit_many_caller_key_per_chunk_and_repeat(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    payloads = [{"name": str(i)} for i in range(1500)]
    first = manager.submit_many(GREET, "room1", payloads, idempotency_key="batch")
    keys = [s.headers["idempotency-key"] for s in server.seen("POST", BATCH)]
    assert keys == ["batch:0", "batch:1"]
    again = manager.submit_many(GREET, "room1", payloads, idempotency_key="batch")
    assert [t.id for t in again] == [t.id for t in first]
    assert len(server.tasks) == 1500


def test_submit_many_problem_is_the_core_exception(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    with pytest.raises(InvalidPayload, match=r"items\[1\]"):
        manager.submit_many(GREET, "room1", [{"name": "Ada"}, {"bogus": 1}, {"name": "Bo"}])
    assert server.tasks == {}
    with pytest.raises(JobNotFound):
        manager.submit_many("@global:modifiers:Nope", "room1", [{}])


def test_submit_many_later_chunk_refused_then_resumed(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    payloads: list[dict[str, object]] = [{"name": str(i)} for i in range(1500)]
    payloads[1200] = {"bogus": 1}
    with pytest.raises(InvalidPayload) as info:
        manager.submit_many(GREET, "room1", payloads, idempotency_key="k")
    assert "chunk 2 of 2 (payloads 1000 to 1499)" in info.value.__notes__[0]
    assert len(server.tasks) == 1000
    payloads[1200] = {"name": "1200"}
    tasks = manager.submit_many(GREET, "room1", payloads, idempotency_key="k")
    assert [t.payload["name"] for t in tasks] == [str(i) for i in range(1500)]
    assert len(server.tasks) == 1500


def test_submit_many_retries_transient_failures_with_the_same_key(server, make_manager, sleeps):
    manager = make_manager()
    manager.register(Greet)
    server.fail("POST", BATCH, 503)
    tasks = manager.submit_many(GREET, "room1", [{"name": "Ada"}])
    first, retry = server.seen("POST", BATCH)
    assert first.headers["idempotency-key"] == retry.headers["idempotency-key"]
    assert len(sleeps) == 1
    assert [t.id for t in tasks] == [uuid.UUID(i) for i in server.tasks]


def test_submit_many_without_key_is_not_retried(server, make_manager):
    manager = make_manager(idempotent_submits=False)
    manager.register(Greet)
    server.fail("POST", BATCH, 503)
    with pytest.raises(ServiceUnavailable):
        manager.submit_many(GREET, "room1", [{"name": "Ada"}])
    assert len(server.seen("POST", BATCH)) == 1


def test_submit_many_refuses_wrong_payloads_before_sending(server, make_manager):
    manager = make_manager()
    with pytest.raises(ValueError, match="Measure"):
        manager.submit_many(Greet, "room1", [Greet(), Measure()])
    with pytest.raises(ValueError, match="Measure"):
        manager.submit_many(GREET, "room1", [Measure()])
    with pytest.raises(TypeError):
        manager.submit_many(GREET, "room1", {"name": "Ada"})
    with pytest.raises(TypeError):
        manager.submit_many(GREET, "room1", [["name", "Ada"]])
    assert server.requests == []


def test_submit_many_answer_of_the_wrong_length(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    server.fail("POST", BATCH, httpx.Response(202, json={"items": []}))
    with pytest.raises(UnexpectedResponse):
        manager.submit_many(GREET, "room1", [{}])


def test_claim_body_and_typed_extension(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    server.add_task(GREET, {"name": "Ada"})
    server.add_task(GREET, {"name": "Bo"})
    claimed = manager.claim(max_tasks=5, wait=3)
    (sent,) = server.seen("POST", "/v1/joblib/tasks/claim")
    assert sent.body == {"worker_id": str(manager.worker_id), "max_tasks": 5}
    assert sent.headers["prefer"] == "wait=3"
    assert [c.extension.name for c in claimed] == ["Ada", "Bo"]
    first = claimed[0]
    assert isinstance(first, ClaimedTask)
    assert first.job_name == GREET
    assert first.room_id == "room1"
    assert first.attempt == 1
    assert manager.claim() == []
    assert "prefer" not in server.seen("POST", "/v1/joblib/tasks/claim")[-1].headers


def test_claimed_task_of_unknown_job(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    server.add_task(GREET, {})
    del manager._registry[GREET]
    (claimed,) = manager.claim()
    with pytest.raises(UnknownJob):
        _ = claimed.extension


def test_update_bodies_always_name_the_worker(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    server.add_task(GREET, {})
    (claimed,) = manager.claim()
    wid = str(manager.worker_id)
    manager.update_task(claimed.task_id, status="running")
    claimed.progress(0.25, "a quarter")
    done = manager.update_task(claimed.task_id, status=TaskStatus.COMPLETED, result={"x": [1]})
    bodies = [s.body for s in server.seen("PATCH", r"/v1/joblib/tasks/.*")]
    assert bodies == [
        {"status": "running", "worker_id": wid},
        {"worker_id": wid, "progress": 0.25, "message": "a quarter"},
        {"status": "completed", "worker_id": wid, "result": {"x": [1]}},
    ]
    assert done.result == {"x": [1]}
    with pytest.raises(InvalidTaskTransition):
        manager.update_task(claimed.task_id, status="running")


def test_batch_update(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    a = server.add_task(GREET, {})
    b = server.add_task(GREET, {})
    manager.claim(max_tasks=1)
    answer = manager.update_tasks(
        [{"task_id": a, "status": "running"}, {"task_id": b, "status": "running"}]
    )
    (sent,) = server.seen("PATCH", "/v1/joblib/tasks")
    wid = str(manager.worker_id)
    assert sent.body == [
        {"task_id": a, "status": "running", "worker_id": wid},
        {"task_id": b, "status": "running", "worker_id": wid},
    ]
    assert [item.ok for item in answer.items] == [True, False]
    assert answer.items[1].problem is not None
    assert answer.items[1].problem.type == "/v1/problems/lease-lost"
    assert "prefer" not in sent.headers


def test_batch_update_minimal_sends_prefer(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    a = server.add_task(GREET, {})
    manager.claim(max_tasks=1)
    answer = manager.update_tasks([{"task_id": a, "status": "running"}], minimal=True)
    (sent,) = server.seen("PATCH", "/v1/joblib/tasks")
    assert sent.headers["prefer"] == "return=minimal"
    assert [item.ok for item in answer.items] == [True]


def test_cancel_and_heartbeat_report_cancel_requested(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    pending = server.add_task(GREET, {})
    assert manager.cancel(pending).status is TaskStatus.CANCELLED
    held = server.add_task(GREET, {})
    manager.claim()
    assert manager.cancel(held).cancel_requested is True
    beat = manager.heartbeat()
    assert beat.cancel_requested == [uuid.UUID(held)]
    assert server.seen("POST", r"/v1/joblib/tasks/.*/cancel")[0].path.endswith("/cancel")


def test_listings_and_pages(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    for _ in range(3):
        server.add_task(GREET, {})
    page = manager.list_tasks("room1", status="pending", limit=2, offset=1)
    assert (page.total, page.limit, page.offset, len(page.items)) == (3, 2, 1, 2)
    sent = server.seen("GET", "/v1/joblib/rooms/room1/tasks")[-1]
    assert sent.params == {"status": ["pending"], "limit": ["2"], "offset": ["1"]}
    by_job = manager.list_tasks("room1", job_name=GREET)
    assert by_job.total == 3
    assert server.requests[-1].path == f"/v1/joblib/rooms/room1/jobs/{GREET}/tasks"
    assert manager.list_jobs("room1").items[0].full_name == GREET
    assert manager.get_job("room1", GREET).name == "Greet"
    assert manager.list_workers("room1").total == 1
    assert server.requests[-1].path == "/v1/joblib/rooms/room1/workers"
    assert manager.list_workers().items[0].id == manager.worker_id


def test_wait_long_polls_until_terminal(server, make_manager, sleeps):
    manager = make_manager()
    manager.register(Greet)
    task_id = server.add_task(GREET, {})
    states = iter(["claimed", "running", "running", "completed"])
    server.on_get_task = lambda task: task.update(status=next(states))
    done = manager.wait(task_id, poll=20)
    assert done.status is TaskStatus.COMPLETED
    gets = server.seen("GET", r"/v1/joblib/tasks/.*")
    assert len(gets) == 4
    assert all(g.headers["prefer"] == "wait=20" for g in gets)
    assert sleeps == []


def test_wait_for_change_returns_on_the_first_change(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    task_id = server.add_task(GREET, {})
    first = manager.get_task(task_id)
    states = iter(["pending", "pending", "claimed"])
    server.on_get_task = lambda task: task.update(status=next(states))
    changed = manager.wait(task_id, wait_for="change", since=first)
    assert changed.status is TaskStatus.CLAIMED
    assert server.requests[-1].params == {"wait_for": ["change"]}


def test_wait_without_server_long_poll_falls_back_to_polling(server, make_manager, sleeps):
    server.long_poll = False
    manager = make_manager()
    manager.register(Greet)
    task_id = server.add_task(GREET, {})
    states = iter(["pending", "running", "failed"])
    server.on_get_task = lambda task: task.update(status=next(states))
    assert manager.wait(task_id).status is TaskStatus.FAILED
    assert len(sleeps) == 2


def test_wait_timeout_returns_latest_state(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    task_id = server.add_task(GREET, {})
    assert manager.wait(task_id, timeout=0).status is TaskStatus.PENDING


def test_disconnect_deletes_the_worker_once(server, make_manager):
    manager = make_manager()
    manager.register(Greet)
    wid = manager.worker_id
    manager.disconnect()
    manager.disconnect()
    (sent,) = server.seen("DELETE")
    assert sent.path == f"/v1/joblib/workers/{wid}"
    assert manager.worker_id is None
    assert len(manager) == 0


def test_context_manager_disconnects(server, make_manager):
    with make_manager() as manager:
        manager.register(Greet)
    assert len(server.seen("DELETE")) == 1
    assert server.workers == {}


def test_extension_schema_refuses_unknown_fields_unless_opted_out():
    from pydantic import ConfigDict, ValidationError

    assert Greet.model_json_schema()["additionalProperties"] is False
    with pytest.raises(ValidationError, match="nme"):
        Greet.model_validate({"nme": "Ada"})

    class Lenient(Greet):
        model_config = ConfigDict(extra="ignore")

    assert "additionalProperties" not in Lenient.model_json_schema()
    assert Lenient.model_validate({"nme": "Ada"}).name == Greet().name
