"""The dashboard's page and its state endpoint (GET /v1/joblib/dashboard/state)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.requests import Request

from zndraw_joblib_core import Unauthorized
from zndraw_joblib_server import JobQueue, get_current_user
from zndraw_joblib_server.dashboard import Dashboard
from zndraw_joblib_server.testing import api_client, running

P = "/v1/joblib"
STATE = "/v1/joblib/dashboard/state"


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"fast_lane": request.param}


async def test_page_is_served_with_its_login_config(anonymous) -> None:
    resp = await anonymous.get("/joblib/")
    assert resp.status_code == 200
    assert "text/html" in resp.headers["content-type"]
    config = resp.text.split('<script id="config" type="application/json">')[1].split("<")[0]
    assert json.loads(config) == {"api": P, "state": STATE, "login": "/auth/jwt/login"}
    js = await anonymous.get("/joblib/static/app.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert (await anonymous.get("/joblib/static/secret.py")).status_code == 404


async def test_state_needs_a_login(anonymous, problem) -> None:
    problem(await anonymous.get(STATE), 401)


async def test_state_shows_jobs_workers_tasks_and_charts(as_alice, as_bob, flow) -> None:
    job = await flow.job(as_alice)
    name, worker = job["full_name"], job["worker_id"]
    done = await flow.submit(as_alice, name, payload={"x": 1})
    other = await flow.submit(as_bob, name)
    await flow.claim(as_alice, worker)
    await flow.move(as_alice, done["id"], "running", worker_id=worker, progress=0.25)

    state = (await as_alice.get(STATE)).json()
    assert state["rooms"] == ["@global", "lab"]
    [j] = state["jobs"]
    assert (j["full_name"], j["workers"], j["pending"], j["active"]) == (name, 1, 1, 1)
    [w] = state["workers"]
    assert (w["id"], w["jobs"], w["tasks"], w["stale"]) == (worker, [name], [done["id"]], False)
    tasks = {t["id"]: t for t in state["tasks"]}
    assert tasks[done["id"]]["progress"] == 0.25
    assert tasks[done["id"]]["payload"] == '{"x": 1}'
    assert tasks[done["id"]]["can_cancel"] is True
    assert tasks[other["id"]]["can_cancel"] is False  # bob's task
    assert sum(state["charts"]["depth"]) >= 1
    assert len(state["charts"]["completed"]) == 60

    # Bob sees the tasks but not alice's worker, and cannot remove it.
    bobs = (await as_bob.get(STATE)).json()
    assert bobs["workers"] == []
    assert {t["id"] for t in bobs["tasks"]} == {done["id"], other["id"]}


async def test_filters(as_alice, flow, problem) -> None:
    job = await flow.job(as_alice)
    other_job = await flow.job(as_alice, "lab2", "Other")
    a = await flow.submit(as_alice, job["full_name"])
    b = await flow.submit(as_alice, other_job["full_name"], room="lab2")
    await as_alice.post(f"{P}/tasks/{a['id']}/cancel")

    def ids(resp: Any) -> set[str]:
        assert resp.status_code == 200, resp.text
        return {t["id"] for t in resp.json()["tasks"]}

    assert ids(await as_alice.get(STATE, params={"room": "lab2"})) == {b["id"]}
    assert ids(await as_alice.get(STATE, params={"job": job["full_name"]})) == {a["id"]}
    assert ids(await as_alice.get(STATE, params={"status": "cancelled"})) == {a["id"]}
    assert ids(await as_alice.get(STATE, params={"status": "pending", "room": "lab"})) == set()
    problem(await as_alice.get(STATE, params={"status": "bogus"}), 422)
    problem(await as_alice.get(STATE, params={"limit": 0}), 422)


async def test_a_retry_is_marked(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    first = await flow.submit(as_alice, job["full_name"], payload={"n": 3})
    await as_alice.post(f"{P}/tasks/{first['id']}/cancel")
    headers = {"Idempotency-Key": f"retry-{first['id']}"}
    again = await flow.submit(as_alice, job["full_name"], payload={"n": 3}, headers=headers)
    tasks = {t["id"]: t for t in (await as_alice.get(STATE)).json()["tasks"]}
    assert tasks[again["id"]]["retry_of"] == first["id"]
    assert tasks[first["id"]]["retry_of"] is None
    assert tasks[first["id"]]["can_retry"] is True
    assert tasks[again["id"]]["can_retry"] is False


async def test_state_long_poll_wakes_on_a_change(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    seq = (await as_alice.get(STATE)).json()["seq"]
    waiting = asyncio.create_task(as_alice.get(STATE, params={"since": seq, "wait": 20}))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    task = await flow.submit(as_alice, job["full_name"])
    resp = await asyncio.wait_for(waiting, 10)
    assert resp.json()["seq"] > seq
    assert task["id"] in {t["id"] for t in resp.json()["tasks"]}


async def test_a_host_mounts_it_behind_its_own_session(settings, alice) -> None:
    """A host without the login form: its own authentication decides (here a cookie)."""
    from zndraw_joblib_server.testing import test_auth_settings as auth_settings

    queue = JobQueue(settings, sweeper=False)
    dashboard = Dashboard.attach(queue)
    app = FastAPI(lifespan=queue.lifespan)
    app.state.auth_settings = auth_settings()
    queue.include_in(app)
    dashboard.include_in(app, prefix="/ops/queue", login_url=None)

    async def host_session(request: Request) -> Any:
        if request.cookies.get("session") != "ok":
            raise Unauthorized("Sign in first.")
        return SimpleNamespace(id=alice.id, is_superuser=False)

    app.dependency_overrides[get_current_user] = host_session
    async with running(app), api_client(app) as client:
        page = await client.get("/ops/queue/")
        assert '"login": null' in page.text
        assert (await client.get(STATE)).status_code == 401
        client.cookies.set("session", "ok")
        resp = await client.get(STATE)
        assert resp.status_code == 200, resp.text
        assert resp.json()["user"]["id"] == str(alice.id)
