"""Problem responses (RFC 9457), size limits, and inputs that must never produce a 500."""

from __future__ import annotations

import json

import pytest

P = "/v1/joblib"
UNKNOWN = "00000000-0000-4000-8000-00000000beef"


async def _counts(client) -> tuple[int, int, int]:
    jobs = (await client.get(f"{P}/rooms/lab/jobs", params={"limit": 0})).json()["total"]
    tasks = (await client.get(f"{P}/rooms/lab/tasks", params={"limit": 0})).json()["total"]
    workers = (await client.get(f"{P}/workers", params={"limit": 0})).json()["total"]
    return jobs, tasks, workers


async def test_every_core_problem_type(as_alice, as_bob, flow, problem) -> None:
    """One occurrence of each problem type, each leaving the counts unchanged."""
    job = await flow.job(as_alice, schema={"type": "object", "required": ["a"]})
    name = job["full_name"]
    t = await flow.submit(as_alice, name, payload={"a": 1})
    before = await _counts(as_alice)
    cases = [
        (as_alice.get(f"{P}/rooms/lab/jobs/lab:modifiers:Nope"), 404, "job-not-found"),
        (
            as_bob.put(
                f"{P}/rooms/lab/jobs",
                json={"category": "modifiers", "name": "Rotate", "schema": {"type": "string"}},
            ),
            409,
            "schema-conflict",
        ),
        (
            as_bob.put(f"{P}/rooms/lab/jobs", json={"category": "nope", "name": "X"}),
            400,
            "invalid-category",
        ),
        (as_alice.patch(f"{P}/workers/{UNKNOWN}"), 404, "worker-not-found"),
        (as_alice.get(f"{P}/tasks/{UNKNOWN}"), 404, "task-not-found"),
        (as_alice.patch(f"{P}/tasks/{t['id']}", json={"status": "completed"}), 403, "forbidden"),
        (as_alice.get(f"{P}/rooms/a@b/jobs"), 400, "invalid-room-id"),
        (
            as_bob.put(f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "a:b"}),
            400,
            "invalid-job-name",
        ),
        (as_bob.post(f"{P}/rooms/lab/tasks/{name}", json={"payload": {}}), 422, "invalid-payload"),
        (
            as_bob.put(
                f"{P}/rooms/lab/jobs",
                json={"category": "modifiers", "name": "S", "schema": {"type": 1}},
            ),
            422,
            "invalid-schema",
        ),
        (as_bob.post(f"{P}/tasks/claim", json={}), 422, "validation-error"),
        (as_bob.get(f"{P}/not-a-route"), 404, "not-found"),
        (as_bob.delete(f"{P}/tasks/claim"), 405, "method-not-allowed"),
    ]
    for call, status, slug in cases:
        body = problem(await call, status, slug)
        assert body["detail"]
        assert body["instance"].startswith(P)
    assert await _counts(as_alice) == before


async def test_invalid_task_transition_and_lease_lost_problems(as_alice, flow, problem) -> None:
    _, worker, t = await flow.claimed(as_alice)
    other = await flow.worker(as_alice)
    problem(
        await flow.patch(as_alice, t["id"], status="completed", worker_id=worker),
        409,
        "invalid-task-transition",
    )
    problem(
        await flow.patch(as_alice, t["id"], status="running", worker_id=other), 409, "lease-lost"
    )
    assert (await flow.task(as_alice, t["id"]))["status"] == "claimed"


async def test_problem_errors_list_every_field(as_alice, flow, problem) -> None:
    job = await flow.job(as_alice)
    resp = await as_alice.post(
        f"{P}/rooms/lab/tasks/{job['full_name']}",
        json={"priority": "x", "max_attempts": 0, "payload": 3},
    )
    body = problem(resp, 422, "validation-error")
    locs = {tuple(e["loc"]) for e in body["errors"]}
    assert {("body", "priority"), ("body", "max_attempts"), ("body", "payload")} <= locs
    assert all(e["msg"] and e["type"] for e in body["errors"])


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b"not json", "application/json"),
        (b"", "application/json"),
        (b"[]", "application/json"),
        (b"null", "application/json"),
        (b'{"payload": {}}', "text/plain"),
        (b"\xff\xfe\x00", "application/json"),
        (b'{"payload": {"a": 1}, "payload": 2}', "application/json"),
        (b'{"payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
    ],
)
async def test_malformed_bodies_are_422_not_500(as_alice, flow, problem, content, ctype) -> None:
    job = await flow.job(as_alice)
    before = await _counts(as_alice)
    resp = await as_alice.post(
        f"{P}/rooms/lab/tasks/{job['full_name']}", content=content, headers={"content-type": ctype}
    )
    assert resp.status_code in (400, 422), resp.text
    problem(resp, resp.status_code)
    assert await _counts(as_alice) == before


@pytest.mark.parametrize(
    "path",
    [
        "/rooms/%00/tasks",
        "/rooms/lab/jobs/lab:modifiers:%00",
        "/rooms/" + "x" * 300 + "/jobs",
        "/rooms/%20/jobs",
        "/rooms/lab/jobs/" + "a:" * 200,
        "/tasks/" + "f" * 40,
    ],
)
async def test_odd_paths_answer_problems(as_alice, path) -> None:
    resp = await as_alice.get(f"{P}{path}")
    assert 400 <= resp.status_code < 500
    assert resp.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_payload_number_is_refused(as_alice, flow, number) -> None:
    job = await flow.job(as_alice)
    resp = await as_alice.post(
        f"{P}/rooms/lab/tasks/{job['full_name']}",
        content=f'{{"payload": {{"x": {number}}}}}'.encode(),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 422


async def test_non_finite_result_is_refused(as_alice, flow) -> None:
    _, worker, t = await flow.claimed(as_alice, running=True)
    resp = await as_alice.patch(
        f"{P}/tasks/{t['id']}",
        content=json.dumps({"status": "completed", "worker_id": worker}).encode()[:-1]
        + b', "result": NaN}',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 422
    assert (await flow.task(as_alice, t["id"]))["status"] == "running"


async def test_non_finite_schema_is_refused(as_alice) -> None:
    resp = await as_alice.put(
        f"{P}/rooms/lab/jobs",
        content=b'{"category": "modifiers", "name": "X", "schema": {"maximum": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code in (400, 422)


@pytest.mark.parametrize("field", ["error", "message"])
async def test_nul_character_in_text_fields_is_not_500(as_alice, flow, field) -> None:
    _, worker, t = await flow.claimed(as_alice, running=True)
    body = {"worker_id": worker, field: "a\x00b"}
    if field == "error":
        body["status"] = "failed"
    resp = await flow.patch(as_alice, t["id"], **body)
    assert resp.status_code in (200, 422), resp.text


async def test_nul_character_inside_json_payload_is_fine(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    task = await flow.submit(as_alice, job["full_name"], payload={"k": "a\x00b"})
    assert (await flow.task(as_alice, task["id"]))["payload"] == {"k": "a\x00b"}


class TestSizeLimits:
    @pytest.fixture
    def settings_overrides(self) -> dict:
        return {
            "max_body_bytes": 4000,
            "max_payload_bytes": 300,
            "max_result_bytes": 200,
            "max_error_chars": 50,
            "max_message_chars": 20,
            "max_schema_bytes": 300,
        }

    async def test_body_over_max_body_bytes(self, as_alice, flow, problem) -> None:
        job = await flow.job(as_alice)
        before = await _counts(as_alice)
        resp = await as_alice.post(
            f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {"x": "y" * 5000}}
        )
        problem(resp, 413, "payload-too-large")
        # a streamed body without Content-Length is cut off too
        chunks = [b'{"payload": {"x": "', b"y" * 5000, b'"}}']

        async def stream():
            for chunk in chunks:
                yield chunk

        resp = await as_alice.post(
            f"{P}/rooms/lab/tasks/{job['full_name']}",
            content=stream(),
            headers={"content-type": "application/json"},
        )
        problem(resp, 413, "payload-too-large")
        assert await _counts(as_alice) == before

    async def test_payload_over_max_payload_bytes(self, as_alice, flow, problem) -> None:
        job = await flow.job(as_alice)
        ok = await flow.submit(as_alice, job["full_name"], payload={"x": "y" * 250})
        assert ok["status"] == "pending"
        before = await _counts(as_alice)
        resp = await as_alice.post(
            f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {"x": "y" * 400}}
        )
        body = problem(resp, 413, "payload-too-large")
        assert "payload" in body["detail"]
        assert await _counts(as_alice) == before

    async def test_result_over_max_result_bytes(self, as_alice, flow, problem) -> None:
        _, worker, t = await flow.claimed(as_alice, running=True)
        before = await flow.task(as_alice, t["id"])
        resp = await flow.patch(
            as_alice, t["id"], status="completed", worker_id=worker, result=["z" * 300]
        )
        problem(resp, 413, "payload-too-large")
        assert await flow.task(as_alice, t["id"]) == before
        done = await flow.move(
            as_alice, t["id"], "completed", worker_id=worker, result=["z" * 100]
        )
        assert done["result"] == ["z" * 100]

    async def test_error_over_max_error_chars(self, as_alice, flow, problem) -> None:
        _, worker, t = await flow.claimed(as_alice, running=True)
        before = await flow.task(as_alice, t["id"])
        resp = await flow.patch(
            as_alice, t["id"], status="failed", worker_id=worker, error="e" * 51
        )
        problem(resp, 413, "payload-too-large")
        assert await flow.task(as_alice, t["id"]) == before
        done = await flow.move(as_alice, t["id"], "failed", worker_id=worker, error="e" * 50)
        assert done["error"] == "e" * 50

    async def test_message_over_max_message_chars(self, as_alice, flow, problem) -> None:
        _, worker, t = await flow.claimed(as_alice, running=True)
        resp = await flow.patch(as_alice, t["id"], worker_id=worker, message="m" * 21)
        problem(resp, 413, "payload-too-large")
        assert (await flow.task(as_alice, t["id"]))["message"] is None

    async def test_schema_over_max_schema_bytes(self, as_alice, problem) -> None:
        schema = {"type": "object", "description": "d" * 400}
        resp = await as_alice.put(
            f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "X", "schema": schema}
        )
        problem(resp, 413, "payload-too-large")
        assert await _counts(as_alice) == (0, 0, 0)

    async def test_batch_update_over_body_limit(self, as_alice, flow, problem) -> None:
        _, _, t = await flow.claimed(as_alice, running=True)
        items = [{"task_id": t["id"], "message": "m"} for _ in range(100)]
        problem(await as_alice.patch(f"{P}/tasks", json=items), 413, "payload-too-large")
