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


async def _set_active(app, user_id, active: bool) -> None:
    from sqlalchemy import update
    from zndraw_auth import User

    async with app.state.session_maker() as session:
        await session.execute(update(User).where(User.id == user_id).values(is_active=active))
        await session.commit()


async def test_a_deactivated_user_is_refused_at_once_without_the_user_cache(
    app, alice, as_alice, problem
) -> None:
    app.state.joblib_settings = app.state.joblib_settings.model_copy(
        update={"user_cache_seconds": 0}
    )
    assert (await as_alice.get(f"{P}/workers")).status_code == 200
    await _set_active(app, alice.id, False)
    problem(await as_alice.get(f"{P}/workers"), 401, "unauthorized")
    problem(await as_alice.post(f"{P}/workers"), 401, "unauthorized")
    await _set_active(app, alice.id, True)
    assert (await as_alice.get(f"{P}/workers")).status_code == 200


async def test_a_deactivated_user_is_refused_once_the_cached_user_expires(
    app, alice, as_alice, problem
) -> None:
    import asyncio

    app.state.joblib_settings = app.state.joblib_settings.model_copy(
        update={"user_cache_seconds": 0.3}
    )
    assert (await as_alice.get(f"{P}/workers")).status_code == 200
    await _set_active(app, alice.id, False)
    await asyncio.sleep(0.4)
    problem(await as_alice.get(f"{P}/workers"), 401, "unauthorized")


async def test_a_token_naming_an_unknown_user_is_refused(app, problem) -> None:
    from zndraw_auth.users import get_jwt_strategy

    class _User:
        id = "00000000-0000-4000-8000-000000000000"

    strategy = get_jwt_strategy(app.state.auth_settings)
    token = await strategy.write_token(_User())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        problem(await client.get(f"{P}/workers"), 401, "unauthorized")


async def test_zndraw_auths_own_dependency_can_replace_get_current_user(
    app, as_alice, alice
) -> None:
    from zndraw_auth import current_user_scoped_session

    from zndraw_joblib_server import get_current_user

    app.dependency_overrides[get_current_user] = current_user_scoped_session
    try:
        resp = await as_alice.post(f"{P}/workers")
        assert resp.status_code == 201, resp.text
        listed = (await as_alice.get(f"{P}/workers")).json()["items"]
        assert [w["id"] for w in listed] == [resp.json()["id"]]
    finally:
        app.dependency_overrides.clear()
