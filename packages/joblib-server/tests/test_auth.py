"""Every endpoint needs an authenticated user: 401 problem without or with a bad token."""

from __future__ import annotations

import httpx
import jwt
import pytest

P = "/v1/joblib"


def _endpoints(worker: str, task: str, job: str) -> list[tuple[str, str, object]]:
    return [
        ("POST", "/workers", None),
        ("GET", "/workers", None),
        ("PATCH", f"/workers/{worker}", None),
        ("DELETE", f"/workers/{worker}", None),
        ("PUT", "/rooms/lab/jobs", {"category": "modifiers", "name": "New"}),
        ("GET", "/rooms/lab/jobs", None),
        ("GET", f"/rooms/lab/jobs/{job}", None),
        ("GET", "/rooms/lab/workers", None),
        ("POST", f"/rooms/lab/tasks/{job}", {"payload": {}}),
        ("GET", "/rooms/lab/tasks", None),
        ("GET", f"/rooms/lab/jobs/{job}/tasks", None),
        ("POST", "/tasks/claim", {"worker_id": worker}),
        ("GET", f"/tasks/{task}", None),
        ("PATCH", f"/tasks/{task}", {"status": "cancelled"}),
        ("PATCH", "/tasks", [{"task_id": task, "status": "cancelled"}]),
        ("POST", f"/tasks/{task}/cancel", None),
    ]


BAD_TOKENS = {
    "none": None,
    "garbage": "Bearer not-a-token",
    "empty": "Bearer ",
    "no-scheme": "just-some-text",
    "basic": "Basic YWxpY2U6cGFzc3dvcmQ=",
    "wrong-secret": "Bearer "
    + jwt.encode(
        {"sub": "00000000-0000-4000-8000-000000000000", "aud": ["fastapi-users:auth"]},
        "another-secret-another-secret-another",
        algorithm="HS256",
    ),
}


@pytest.mark.parametrize("token", list(BAD_TOKENS))
async def test_every_endpoint_401(app, as_alice, flow, problem, token) -> None:
    job = await flow.job(as_alice)
    task = await flow.submit(as_alice, job["full_name"])
    before = [
        (await as_alice.get(f"{P}/rooms/lab/tasks")).json(),
        (await as_alice.get(f"{P}/workers")).json(),
        (await as_alice.get(f"{P}/rooms/lab/jobs")).json(),
    ]
    headers = {} if BAD_TOKENS[token] is None else {"Authorization": BAD_TOKENS[token]}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as client:
        for method, path, body in _endpoints(job["worker_id"], task["id"], job["full_name"]):
            resp = await client.request(method, f"{P}{path}", json=body)
            assert resp.status_code == 401, (method, path, resp.text)
            problem(resp, 401, "unauthorized")
            # long-poll flavours too
            if (path.startswith("/tasks/") and method == "GET") or path == "/tasks/claim":
                resp = await client.request(
                    method, f"{P}{path}", json=body, headers={"Prefer": "wait=1"}
                )
                problem(resp, 401, "unauthorized")
    after = [
        (await as_alice.get(f"{P}/rooms/lab/tasks")).json(),
        (await as_alice.get(f"{P}/workers")).json(),
        (await as_alice.get(f"{P}/rooms/lab/jobs")).json(),
    ]
    assert after == before


async def test_anonymous_fixture_401(anonymous, problem) -> None:
    problem(await anonymous.get(f"{P}/workers"), 401, "unauthorized")
    problem(await anonymous.post(f"{P}/workers"), 401, "unauthorized")


async def test_a_token_for_a_real_user_works_everywhere(as_bob, flow) -> None:
    """Sanity check of the same endpoint list with a valid token (no 401 anywhere)."""
    job = await flow.job(as_bob)
    task = await flow.submit(as_bob, job["full_name"])
    for method, path, body in _endpoints(job["worker_id"], task["id"], job["full_name"])[::-1]:
        resp = await as_bob.request(method, f"{P}{path}", json=body)
        assert resp.status_code not in (401, 500), (method, path, resp.text)
