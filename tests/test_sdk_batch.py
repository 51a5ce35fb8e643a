"""The client SDK's batch calls against the real server: ``submit_many`` and ``update_tasks``.

Every test runs on SQLite and on PostgreSQL (``backend``). Submitters and the hand-driven
worker are ``JobManager``s in the test process; the HTTP requests they send are recorded
through an ``httpx`` event hook where the wire matters.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from zndraw_joblib_client import ClaimedTask, Extension, JobManager, TaskStatus
from zndraw_joblib_core import (
    MAX_CLAIM_BATCH,
    MAX_PAGE_LIMIT,
    MAX_SUBMIT_BATCH,
    InvalidPayload,
    TaskResponse,
)

pytestmark = pytest.mark.slow

ROOM = "lab"
WAIT = 60.0  # generous: the suite runs on loaded two-core machines


class Scale(Extension):
    """A job whose payload has typed fields (so the registered JSON Schema checks them)."""

    category = "modifiers"
    value: int
    label: str = ""

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        return {"scaled": self.value * 3}


JOB = Scale.job_full_name(ROOM)


class Clients:
    """Builds JobManagers for a live server; each records its HTTP exchanges."""

    def __init__(self, server: Any, stack: ExitStack) -> None:
        self.server = server
        self.stack = stack
        self.exchanges: dict[str, list[httpx.Response]] = {}

    def __call__(self, email: str, name: str | None = None) -> JobManager:
        seen = self.exchanges.setdefault(name or email, [])

        def record(response: httpx.Response) -> None:
            seen.append(response)

        http = self.stack.enter_context(
            httpx.Client(base_url=self.server.url, event_hooks={"response": [record]})
        )
        token = self.server.token(email)
        return self.stack.enter_context(JobManager(client=http, token=token))


@pytest.fixture
def clients(server: Any) -> Iterator[Clients]:
    """``clients(email, name=None)``: a JobManager of that user (recorded under ``name``)."""
    with ExitStack() as stack:
        yield Clients(server, stack)


def _batch_posts(responses: list[httpx.Response]) -> list[httpx.Response]:
    path = f"/v1/joblib/rooms/{ROOM}/jobs/{JOB}/tasks"
    return [r for r in responses if r.request.method == "POST" and r.request.url.path == path]


def _total(manager: JobManager, status: TaskStatus | None = None) -> int:
    return manager.list_tasks(ROOM, job_name=JOB, status=status, limit=0).total


def _all_tasks(manager: JobManager, status: TaskStatus | None = None) -> list[TaskResponse]:
    """Every task of the job on the server (page by page)."""
    tasks: list[TaskResponse] = []
    while True:
        page = manager.list_tasks(
            ROOM, job_name=JOB, status=status, limit=MAX_PAGE_LIMIT, offset=len(tasks)
        )
        tasks.extend(page.items)
        if not page.items or len(tasks) >= page.total:
            return tasks


def _drain(worker: JobManager, submitter: JobManager, count: int, **loop: Any) -> None:
    """Run ``worker``'s loop (``loop``: its options) until ``count`` tasks completed."""
    worker.start(**loop)
    try:
        deadline = time.monotonic() + WAIT
        while _total(submitter, TaskStatus.COMPLETED) < count:
            assert time.monotonic() < deadline, "the worker did not finish the tasks"
            time.sleep(0.05)
    finally:
        worker.stop(timeout=WAIT)


def _payloads(count: int, start: int = 0) -> list[Scale | dict[str, Any]]:
    """Extension instances and plain dicts, alternating; ``value`` is the position."""
    return [
        Scale(value=i, label=f"p{i}") if i % 2 else {"value": i, "label": f"p{i}"}
        for i in range(start, start + count)
    ]


def test_submit_many_creates_tasks_in_order_and_a_worker_drains_them(clients: Clients) -> None:
    worker, submitter = clients("alice@example.com"), clients("bob@x.org", "submitter")
    worker.register(Scale, room=ROOM)
    count = 2500

    tasks = submitter.submit_many(Scale, ROOM, _payloads(count), job_room=ROOM, max_attempts=2)

    assert len(tasks) == count
    assert len({t.id for t in tasks}) == count
    assert [t.payload for t in tasks] == [{"value": i, "label": f"p{i}"} for i in range(count)]
    assert {t.status for t in tasks} == {TaskStatus.PENDING}
    assert [t.queue_position for t in tasks] == list(range(1, count + 1))
    assert {(t.job_name, t.room_id, t.max_attempts) for t in tasks} == {(JOB, ROOM, 2)}
    # chunks of MAX_SUBMIT_BATCH, one request each, each with its own Idempotency-Key
    exchanges = clients.exchanges["submitter"]
    posts = _batch_posts(exchanges)
    sizes = [len(json.loads(r.request.content)["items"]) for r in posts]
    assert sizes == [MAX_SUBMIT_BATCH, MAX_SUBMIT_BATCH, count - 2 * MAX_SUBMIT_BATCH]
    assert [r.status_code for r in posts] == [202, 202, 202]
    keys = [r.request.headers.get("idempotency-key") for r in posts]
    assert None not in keys
    assert len(set(keys)) == 3
    assert len(exchanges) == len(posts)  # nothing else was sent

    # the server holds exactly these tasks, pending
    assert _total(submitter) == count
    assert _total(submitter, TaskStatus.PENDING) == count

    # a hand-driven worker drains the queue with batch claims and minimal batch updates
    claimed_ids: list[uuid.UUID] = []
    deadline = time.monotonic() + WAIT
    while len(claimed_ids) < count:
        assert time.monotonic() < deadline, f"only {len(claimed_ids)} of {count} claimed"
        claimed = worker.claim(max_tasks=MAX_CLAIM_BATCH, wait=1)
        assert len(claimed) <= MAX_CLAIM_BATCH
        claimed_ids.extend(c.task_id for c in claimed)
        running = worker.update_tasks(
            [{"task_id": c.task_id, "status": "running"} for c in claimed], minimal=True
        )
        done = worker.update_tasks(
            [
                {"task_id": c.task_id, "status": "completed", "result": c.extension.run(c)}
                for c in claimed
            ],
            minimal=True,
        )
        for answer in (running, done):
            assert [o.task_id for o in answer.items] == [c.task_id for c in claimed]
            assert all(o.ok and o.task is None and o.problem is None for o in answer.items), [
                o.problem for o in answer.items if not o.ok
            ]
    assert worker.claim() == []
    assert len(claimed_ids) == len(set(claimed_ids)) == count  # each claimed exactly once
    assert set(claimed_ids) == {t.id for t in tasks}

    assert _total(submitter, TaskStatus.COMPLETED) == count
    assert _total(submitter, TaskStatus.PENDING) == 0
    final = _all_tasks(submitter)
    assert sorted(t.id for t in final) == sorted(t.id for t in tasks)
    for task in final:
        assert task.status is TaskStatus.COMPLETED
        assert task.result == {"scaled": task.payload["value"] * 3}
        assert task.attempt == 1
        assert task.worker_id == worker.worker_id


def test_an_invalid_payload_refuses_the_whole_batch(clients: Clients) -> None:
    owner, submitter = clients("alice@example.com"), clients("bob@x.org", "submitter")
    owner.register(Scale, room=ROOM)
    submitter.submit_many(JOB, ROOM, _payloads(3))  # by name
    assert _total(submitter) == 3

    payloads = _payloads(700, start=3)
    payloads[350] = {"value": "three hundred fifty", "label": "bad"}  # value must be an integer
    with pytest.raises(InvalidPayload) as caught:
        submitter.submit_many(Scale, ROOM, payloads, job_room=ROOM)
    assert caught.value.extras.get("item") == 350
    assert caught.value.extras.get("errors"), caught.value.extras
    assert "items[350]" in str(caught.value.detail)
    (post,) = _batch_posts(clients.exchanges["submitter"])[1:]
    assert post.status_code == 422
    assert _total(submitter) == 3  # none of the 699 valid ones was created

    payloads[350] = {"value": 353}
    assert len(submitter.submit_many(Scale, ROOM, payloads, job_room=ROOM)) == 700
    assert _total(submitter) == 703


def test_repeating_an_idempotency_key_returns_the_same_tasks(clients: Clients) -> None:
    owner, submitter = clients("alice@example.com"), clients("bob@x.org", "submitter")
    owner.register(Scale, room=ROOM)
    count = MAX_SUBMIT_BATCH + 50  # two chunks

    first = submitter.submit_many(
        Scale, ROOM, _payloads(count), job_room=ROOM, idempotency_key="k1"
    )
    again = submitter.submit_many(
        Scale, ROOM, _payloads(count), job_room=ROOM, idempotency_key="k1"
    )
    assert [t.id for t in again] == [t.id for t in first]
    assert [t.payload for t in again] == [t.payload for t in first]
    assert _total(submitter) == count
    statuses = [r.status_code for r in _batch_posts(clients.exchanges["submitter"])]
    assert statuses == [202, 202, 200, 200]
    # another key is another batch
    other = submitter.submit_many(Scale, ROOM, _payloads(2), job_room=ROOM, idempotency_key="k2")
    assert not {t.id for t in other} & {t.id for t in first}
    before = _total(submitter)
    assert before == count + 2

    # chunks are separate transactions: a refused second chunk keeps the first one, and the
    # same call repeated with the same key after the fix creates only the missing tasks
    payloads = _payloads(count)
    payloads[MAX_SUBMIT_BATCH + 10] = {"value": None}
    with pytest.raises(InvalidPayload) as caught:
        submitter.submit_many(Scale, ROOM, payloads, job_room=ROOM, idempotency_key="k3")
    assert caught.value.extras.get("item") == 10  # the index within the refused request
    assert _total(submitter) == before + MAX_SUBMIT_BATCH
    payloads[MAX_SUBMIT_BATCH + 10] = {"value": MAX_SUBMIT_BATCH + 10}
    resumed = submitter.submit_many(Scale, ROOM, payloads, job_room=ROOM, idempotency_key="k3")
    assert [t.payload["value"] for t in resumed] == list(range(count))
    assert len({t.id for t in resumed} - {t.id for t in first} - {t.id for t in other}) == count
    assert _total(submitter) == before + count  # only the 50 missing ones were added
    assert [r.status_code for r in _batch_posts(clients.exchanges["submitter"])][-2:] == [200, 202]


def test_update_tasks_minimal_answers_each_entry_and_applies_only_the_valid_ones(
    clients: Clients,
) -> None:
    worker = clients("alice@example.com", "worker")
    rival = clients("alice@example.com", "rival")  # the same user, another worker
    submitter = clients("bob@x.org")
    worker.register(Scale, room=ROOM)
    rival.register(Scale, room=ROOM)
    ids = {t.id for t in submitter.submit_many(Scale, ROOM, _payloads(5), job_room=ROOM)}
    a, b, c = (t.task_id for t in worker.claim(max_tasks=3, wait=10))
    (d,) = (t.task_id for t in rival.claim(max_tasks=1, wait=10))
    (e,) = ids - {a, b, c, d}  # still pending
    missing = uuid.uuid4()

    answer = worker.update_tasks(
        [
            {"task_id": a, "status": "running"},
            {"task_id": d, "status": "running"},  # held by the rival worker
            {"task_id": e, "status": "running"},  # pending: held by nobody
            {"task_id": b, "status": "completed", "result": {"x": 1}},  # claimed -> completed
            {"task_id": missing, "status": "running"},
            {"task_id": a, "status": "completed", "result": {"scaled": 0}},  # after entry 0
            {"task_id": c, "status": "running", "message": "go"},
        ],
        minimal=True,
    )

    patch = [r for r in clients.exchanges["worker"] if r.request.method == "PATCH"][-1]
    assert patch.request.headers.get("prefer") == "return=minimal"
    assert patch.headers.get("preference-applied") == "return=minimal"
    outcomes = answer.items
    assert [o.task_id for o in outcomes] == [a, d, e, b, missing, a, c]
    assert [o.ok for o in outcomes] == [True, False, False, False, False, True, True]
    for outcome in outcomes:
        if outcome.ok:
            assert outcome.task is None
            assert outcome.problem is None
        else:
            assert outcome.task is None
            assert outcome.problem is not None
    problems = [(o.problem.type.rsplit("/", 1)[-1], o.problem.status) for o in outcomes[1:5]]
    assert problems == [
        ("lease-lost", 409),
        ("lease-lost", 409),
        ("invalid-task-transition", 409),
        ("task-not-found", 404),
    ]

    state = {t: submitter.get_task(t) for t in (a, b, c, d, e)}
    assert state[a].status is TaskStatus.COMPLETED
    assert state[a].result == {"scaled": 0}
    assert state[b].status is TaskStatus.CLAIMED
    assert state[b].result is None
    assert state[c].status is TaskStatus.RUNNING
    assert state[c].message == "go"
    assert state[d].status is TaskStatus.CLAIMED
    assert state[d].worker_id == rival.worker_id
    assert state[e].status is TaskStatus.PENDING
    assert state[e].worker_id is None

    # without minimal, applied outcomes carry the task
    (full,) = rival.update_tasks([{"task_id": d, "status": "running"}]).items
    assert full.ok
    assert full.task is not None
    assert full.task.status is TaskStatus.RUNNING
    assert full.task.id == d


def test_short_tasks_claimed_together_report_together(clients: Clients) -> None:
    """The worker loop's reports of tasks finishing together go in one request.

    ``gather_seconds`` is generous here, so the loop surely waits for the claim's other
    tasks however loaded the machine is; it stops waiting as soon as all of them finished.
    """
    worker, submitter = clients("alice@example.com", "worker"), clients("bob@x.org")
    worker.register(Scale, room=ROOM)
    tasks = submitter.submit_many(Scale, ROOM, _payloads(4), job_room=ROOM)

    _drain(worker, submitter, len(tasks), concurrency=4, gather_seconds=30.0)

    reports = [r for r in clients.exchanges["worker"] if r.request.method == "PATCH"]
    (batch,) = reports  # one request carried every report (and the next claim)
    assert batch.request.url.path == "/v1/joblib/tasks"
    body = json.loads(batch.request.content)
    assert sorted(item["task_id"] for item in body["items"]) == sorted(str(t.id) for t in tasks)
    assert {item["status"] for item in body["items"]} == {"completed"}
    assert "claim_next" in body
    assert all(o["ok"] for o in batch.json()["items"])
    for task in _all_tasks(submitter):
        assert task.result == {"scaled": task.payload["value"] * 3}


def test_heartbeats_while_batches_drain_answer_no_server_error(clients: Clients) -> None:
    """Heartbeats racing the loop's batch reports (each with the next claim) never fail.

    On PostgreSQL a heartbeat that waited for a task a batch held, while holding the
    worker's row the batch's claim then beat, deadlocked with it (one of the two answered
    500 and was retried).
    """
    worker, submitter = clients("alice@example.com", "worker"), clients("bob@x.org")
    worker.register(Scale, room=ROOM)
    tasks = submitter.submit_many(Scale, ROOM, _payloads(400), job_room=ROOM)

    _drain(worker, submitter, len(tasks), concurrency=8, heartbeat_interval=0.005)

    exchanges = clients.exchanges["worker"]
    beats = [r for r in exchanges if r.request.url.path.startswith("/v1/joblib/workers/")]
    assert len(beats) > 10  # they did race the batches
    assert [(r.request.method, r.status_code) for r in exchanges if r.status_code >= 500] == []
