"""The room access hook (``get_room_access``) is consulted by every endpoint touching a room."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from zndraw_joblib_server import Actor, get_room_access

P = "/v1/joblib"


class LockedRoom:
    """Everybody may read every room; only superusers may read or write room 'vault'."""

    async def can_read(self, actor: Actor, room_id: str) -> bool:
        return room_id != "vault" or actor.is_superuser

    async def can_write(self, actor: Actor, room_id: str) -> bool:
        return room_id != "vault" or actor.is_superuser


@pytest.fixture
async def vault(app: FastAPI, as_admin: httpx.AsyncClient, flow) -> dict:
    """A job and a task in room 'vault' (made by the superuser), with the policy installed."""
    app.dependency_overrides[get_room_access] = LockedRoom
    job = await flow.job(as_admin, "vault", "Secret")
    task = await flow.submit(as_admin, job["full_name"], "vault")
    return {"job": job, "task": task}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/rooms/vault/jobs", {"category": "modifiers", "name": "X", "schema": {}}),
        ("GET", "/rooms/vault/jobs", None),
        ("GET", "/rooms/vault/jobs/vault:modifiers:Secret", None),
        ("GET", "/rooms/vault/jobs/vault:modifiers:Secret/tasks", None),
        ("GET", "/rooms/vault/workers", None),
        ("GET", "/rooms/vault/tasks", None),
        ("POST", "/rooms/vault/tasks/vault:modifiers:Secret", {"payload": {}}),
        ("POST", "/rooms/vault/tasks/@global:modifiers:Anything", {"payload": {}}),
    ],
)
async def test_room_endpoints_refuse_what_the_policy_refuses(
    vault, as_alice: httpx.AsyncClient, as_admin: httpx.AsyncClient, problem, method, path, body
) -> None:
    before = (await as_admin.get(f"{P}/rooms/vault/tasks", params={"limit": 0})).json()["total"]
    resp = await as_alice.request(method, f"{P}{path}", json=body)
    problem(resp, 403, "forbidden")
    after = (await as_admin.get(f"{P}/rooms/vault/tasks", params={"limit": 0})).json()["total"]
    assert after == before
    jobs = (await as_admin.get(f"{P}/rooms/vault/jobs")).json()["items"]
    assert [j["name"] for j in jobs] == ["Secret"]


async def test_tasks_of_a_room_the_caller_may_not_read_are_not_found(
    vault, as_alice: httpx.AsyncClient, problem
) -> None:
    task_id = vault["task"]["id"]
    problem(await as_alice.get(f"{P}/tasks/{task_id}"), 404, "task-not-found")
    problem(await as_alice.post(f"{P}/tasks/{task_id}/cancel"), 404, "task-not-found")


async def test_the_policy_lets_permitted_callers_through(
    vault, as_admin: httpx.AsyncClient, as_alice: httpx.AsyncClient
) -> None:
    assert (await as_admin.get(f"{P}/tasks/{vault['task']['id']}")).status_code == 200
    assert (await as_alice.get(f"{P}/rooms/lab/jobs")).status_code == 200
