"""Hostile job schemas and payloads: no fetches, no 500s, bounded answers, a free event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from zndraw_joblib_server.testing import hostile_jobs, many_patterns_schema

P = "/v1/joblib"


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Every test runs with the fast lane on and off (and a short validation budget)."""
    return {"fast_lane": request.param, "validation_timeout_seconds": 1.0}


async def _register(client: httpx.AsyncClient, schema: Any, name: str = "J") -> httpx.Response:
    body = {"category": "modifiers", "name": name, "schema": schema}
    return await client.put(f"{P}/rooms/lab/jobs", json=body)


def _nested(depth: int, leaf: Any = None) -> dict[str, Any]:
    schema: dict[str, Any] = {} if leaf is None else leaf
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "http://127.0.0.1:9/schema.json"},
        {"$ref": "file:///etc/hostname"},
        {"properties": {"a": {"$ref": "other.json#/x"}}},
        {"$defs": {"d": {"$dynamicRef": "https://example.com/s"}}},
        {"$schema": "http://127.0.0.1:9/meta.json"},
        {"$id": "http://127.0.0.1:9/root.json", "$ref": "#/$defs/missing"},
    ],
)
async def test_non_local_references_are_refused(as_alice, problem, schema) -> None:
    resp = await _register(as_alice, schema)
    problem(resp, 422, "invalid-schema")
    assert (await as_alice.get(f"{P}/rooms/lab/jobs")).json()["total"] == 0


async def test_local_references_still_work(as_alice, flow, problem) -> None:
    schema = {
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/point"}},
        "$defs": {"point": {"type": "array", "items": {"type": "number"}, "maxItems": 3}},
    }
    job = (await _register(as_alice, schema)).json()
    await flow.submit(as_alice, job["full_name"], payload={"p": [1, 2]})
    resp = await as_alice.post(
        f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {"p": [1, "x"]}}
    )
    body = problem(resp, 422, "invalid-payload")
    assert body["errors"] == [{"path": "/p/1", "message": '"x" is not of type "number"'}]


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"definitions": {"a": {"$ref": "#/definitions/a"}}, "$ref": "#/definitions/a"},
        {
            "$defs": {"t": {"type": "object", "properties": {"c": {"$ref": "#/$defs/t"}}}},
            "$ref": "#/$defs/t",
        },
    ],
)
async def test_recursive_schemas_never_answer_500(as_alice, schema) -> None:
    resp = await _register(as_alice, schema)
    assert resp.status_code in (201, 422), resp.text
    if resp.status_code == 201:
        name = resp.json()["full_name"]
        payload = {"c": {"c": {"c": {}}}}
        sub = await as_alice.post(f"{P}/rooms/lab/tasks/{name}", json={"payload": payload})
        assert sub.status_code in (202, 422), sub.text


@pytest.mark.parametrize("depth", [70, 150])
async def test_deep_schemas_are_refused(as_alice, problem, depth) -> None:
    body = problem(await _register(as_alice, _nested(depth)), 422)
    assert body["type"].endswith("invalid-schema") or body["type"].endswith("validation-error")


async def test_schema_limits(as_alice, problem) -> None:
    big_enum = {"type": "object", "properties": {"e": {"enum": list(range(1_001))}}}
    assert "enum" in problem(await _register(as_alice, big_enum), 422, "invalid-schema")["detail"]
    wide = {"type": "object", "examples": [0] * 25_000}
    problem(await _register(as_alice, wide), 422, "invalid-schema")
    # References that multiply: each level refers to the one below twice.
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)}
    defs["d30"] = {"type": "integer"}
    bomb = {"$defs": defs, "$ref": "#/$defs/d0"}
    detail = problem(await _register(as_alice, bomb), 422, "invalid-schema")["detail"]
    assert "expand" in detail


async def test_422_lists_a_bounded_number_of_short_errors(as_alice, problem) -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"xs": {"type": "array", "items": {"type": "integer"}}},
    }
    job = (await _register(as_alice, schema)).json()
    url = f"{P}/rooms/lab/tasks/{job['full_name']}"
    unknown = {f"key{i}": 0 for i in range(15_000)}
    resp = await as_alice.post(url, json={"payload": unknown})
    assert len(resp.content) < 10_000
    body = problem(resp, 422, "invalid-payload")
    assert body["errors"][0]["path"] == "/"
    assert len(body["errors"][0]["message"]) <= 500
    resp = await as_alice.post(url, json={"payload": {"xs": ["x"] * 200}})
    body = problem(resp, 422, "invalid-payload")
    assert len(body["errors"]) == 50
    assert body["error_count"] == 200
    assert body["errors"][0] == {"path": "/xs/0", "message": '"x" is not of type "integer"'}


async def test_unauthenticated_submit_is_401_before_payload_validation(
    as_alice, anonymous, problem
) -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 1}}}
    job = (await _register(as_alice, schema)).json()
    resp = await anonymous.post(
        f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {"s": "long"}}
    )
    problem(resp, 401)


async def test_hostile_schemas_and_payloads_do_not_stall_other_requests(
    as_alice, client_for, alice, problem
) -> None:
    """Hostile submits and registrations run off the event loop: other requests go on.

    The recursive payload uses up the whole validation budget (1 s here); had it been
    validated on the loop, a probe would have waited that long. The bound is half the
    budget, far from scheduling noise; how short the probes stay is measured by
    ``benchmarks/bench.py`` (``hostile``), not asserted here.
    """
    inputs = hostile_jobs()
    jobs = {n: (await _register(as_alice, schema, n)).json() for n, (schema, _) in inputs.items()}
    payloads = {name: payload for name, (_, payload) in inputs.items()}
    answers: dict[str, httpx.Response] = {}

    async def hostile(client: httpx.AsyncClient) -> None:
        for name in ("redos", "recursive", "unique"):
            url = f"{P}/rooms/lab/tasks/{jobs[name]['full_name']}"
            answers[name] = await client.post(url, json={"payload": payloads[name]})
        items = [{"payload": payloads["enum"]}] * 1_000
        answers["enum"] = await client.post(
            f"{P}/rooms/lab/jobs/{jobs['enum']['full_name']}/tasks", json={"items": items}
        )
        answers["register"] = await _register(client, many_patterns_schema(), "Big")

    async with client_for(alice) as other, client_for(None) as prober:
        await prober.get("/health/live")
        task = asyncio.create_task(hostile(other))
        worst = 0.0
        while not task.done():
            start = time.perf_counter()
            assert (await prober.get("/health/live")).status_code == 200
            worst = max(worst, time.perf_counter() - start)
            await asyncio.sleep(0.005)
        await task
    assert worst < 0.5, f"/health/live took {worst * 1000:.0f} ms during hostile requests"
    problem(answers["redos"], 422, "invalid-payload")
    detail = problem(answers["recursive"], 422, "invalid-payload")["detail"]
    assert "longer than" in detail
    assert answers["unique"].status_code == 202, answers["unique"].text
    enum_answer = problem(answers["enum"], 422, "invalid-payload")
    assert enum_answer.get("item") == 0, enum_answer
    assert answers["register"].status_code == 201, answers["register"].text
