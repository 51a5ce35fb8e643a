"""Account routes of the reference app: strict user updates, password policy, closed
registration, login/registration rate limits, hashing off the event loop, deleted users."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi_users.password import PasswordHelper
from sqlalchemy import delete
from zndraw_auth import User

from zndraw_joblib_server.testing import api_client

P = "/v1/joblib"


def overrides(**values: Any) -> pytest.MarkDecorator:
    """Run the test with these settings (overrides the ``settings_overrides`` fixture)."""
    return pytest.mark.parametrize("settings_overrides", [values], ids=[""])


async def _register(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/auth/register", json={"email": email, "password": password})


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/auth/jwt/login", data={"username": email, "password": password})


# --- item 17: null in user updates -------------------------------------------------------


@pytest.mark.parametrize("field", ["email", "password", "is_active", "is_verified"])
async def test_patch_me_null_is_422(as_alice, field) -> None:
    before = (await as_alice.get("/users/me")).json()
    resp = await as_alice.patch("/users/me", json={field: None})
    assert resp.status_code == 422, resp.text
    assert (await as_alice.get("/users/me")).json() == before


@pytest.mark.parametrize("field", ["email", "is_active", "is_superuser", "is_verified"])
async def test_admin_patch_user_null_is_422(as_admin, alice, as_alice, field) -> None:
    resp = await as_admin.patch(f"/users/{alice.id}", json={field: None})
    assert resp.status_code == 422, resp.text
    me = (await as_alice.get("/users/me")).json()
    assert me["email"] == alice.email
    assert me["is_active"] is True


async def test_user_update_schema_has_no_null(app: FastAPI) -> None:
    async with api_client(app) as client:
        spec = (await client.get("/openapi.json")).json()
    props = spec["components"]["schemas"]["UserUpdate"]["properties"]
    assert "null" not in str(props), props


# --- item 20: password length and closed registration ------------------------------------


async def test_short_password_refused_on_register(anonymous, problem) -> None:
    resp = await _register(anonymous, "new@example.com", "short-123")  # 9 < 10
    body = problem(resp, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body", "password"]
    assert (await _login(anonymous, "new@example.com", "short-123")).status_code == 400
    assert (await _register(anonymous, "new@example.com", "long-enough-1")).status_code == 201


@overrides(min_password_length=20)
async def test_min_password_length_setting(anonymous, problem) -> None:
    problem(await _register(anonymous, "new@example.com", "nineteen-chars-1234"), 422)
    assert (
        await _register(anonymous, "new@example.com", "twenty-chars-1234567")
    ).status_code == 201


async def test_short_password_refused_on_change(anonymous, problem) -> None:
    assert (await _register(anonymous, "new@example.com", "long-enough-1")).status_code == 201
    token = (await _login(anonymous, "new@example.com", "long-enough-1")).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    problem(await anonymous.patch("/users/me", json={"password": "short"}, headers=auth), 422)
    assert (await _login(anonymous, "new@example.com", "long-enough-1")).status_code == 200


@overrides(allow_registration=False)
async def test_registration_can_be_closed(anonymous, app) -> None:
    resp = await _register(anonymous, "new@example.com", "long-enough-1")
    assert resp.status_code == 404
    assert (await _login(anonymous, "new@example.com", "long-enough-1")).status_code == 400
    spec = (await anonymous.get("/openapi.json")).json()
    assert "/auth/register" not in spec["paths"]


# --- item 8: rate limits, hashing off the loop -------------------------------------------


@overrides(login_rate_limit="3/minute")
async def test_login_rate_limited_per_address(app, anonymous, problem) -> None:
    for _ in range(3):
        assert (await _login(anonymous, "admin@example.com", "wrong-password")).status_code == 400
    resp = await _login(anonymous, "admin@example.com", "admin-password")
    body = problem(resp, 429, "too-many-requests")
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert body["retry_after"] == int(resp.headers["retry-after"])
    # another client address has its own budget
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 1)),
        base_url="http://testserver",
    )
    async with other:
        assert (await _login(other, "admin@example.com", "admin-password")).status_code == 200


@overrides(register_rate_limit="2/minute")
async def test_register_rate_limited(anonymous, problem) -> None:
    for i in range(2):
        assert (
            await _register(anonymous, f"u{i}@example.com", "long-enough-1")
        ).status_code == 201
    resp = await _register(anonymous, "u9@example.com", "long-enough-1")
    problem(resp, 429, "too-many-requests")
    assert int(resp.headers["retry-after"]) >= 1


async def test_password_hashing_runs_off_the_event_loop(anonymous, monkeypatch) -> None:
    on_loop: list[str] = []
    real_hash, real_verify = PasswordHelper.hash, PasswordHelper.verify_and_update

    def where(name: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        on_loop.append(name)

    def hash_(self: PasswordHelper, password: str) -> str:
        where("hash")
        return real_hash(self, password)

    def verify(self: PasswordHelper, plain: str, hashed: str) -> tuple[bool, str | None]:
        where("verify")
        return real_verify(self, plain, hashed)

    monkeypatch.setattr(PasswordHelper, "hash", hash_)
    monkeypatch.setattr(PasswordHelper, "verify_and_update", verify)
    assert (await _register(anonymous, "new@example.com", "long-enough-1")).status_code == 201
    resp = await _login(anonymous, "new@example.com", "long-enough-1")
    assert resp.status_code == 200
    assert (await _login(anonymous, "nobody@example.com", "long-enough-1")).status_code == 400
    auth = {"Authorization": f"Bearer {resp.json()['access_token']}"}
    resp = await anonymous.patch("/users/me", json={"password": "another-one-2"}, headers=auth)
    assert resp.status_code == 200, resp.text
    assert on_loop == []


# --- item 18: the token of a deleted user ------------------------------------------------


async def _delete_row(app: FastAPI, user_id: Any) -> None:
    async with app.state.session_maker() as session:
        await session.execute(delete(User).where(User.id == user_id))  # type: ignore[arg-type]
        await session.commit()


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {"fast_lane": True, "user_cache_seconds": 600},
        {"fast_lane": False, "user_cache_seconds": 600},
    ],
    ids=["lane", "no-lane"],
)
async def test_deleted_user_elsewhere_gets_401(app, alice, as_alice, flow, problem) -> None:
    """The user row vanishes (another process deleted it) while this one still caches it."""
    job = await flow.job(as_alice)
    assert (await as_alice.post(f"{P}/workers")).status_code == 201  # alice is cached now
    await _delete_row(app, alice.id)
    problem(await as_alice.post(f"{P}/workers"), 401, "unauthorized")
    resp = await as_alice.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {}})
    problem(resp, 401, "unauthorized")


@overrides(user_cache_seconds=600)
async def test_user_deleted_by_admin_gets_401(as_admin, alice, as_alice, problem) -> None:
    assert (await as_alice.post(f"{P}/workers")).status_code == 201
    assert (await as_admin.delete(f"/users/{alice.id}")).status_code == 204
    problem(await as_alice.post(f"{P}/workers"), 401, "unauthorized")
    problem(await as_alice.get(f"{P}/workers"), 401, "unauthorized")


@overrides(user_cache_seconds=600)
async def test_user_deactivated_by_admin_refused_at_once(
    as_admin, alice, as_alice, problem
) -> None:
    assert (await as_alice.post(f"{P}/workers")).status_code == 201
    resp = await as_admin.patch(f"/users/{alice.id}", json={"is_active": False})
    assert resp.status_code == 200
    problem(await as_alice.get(f"{P}/workers"), 401, "unauthorized")


async def test_login_with_a_nul_character_is_refused_not_500(anonymous) -> None:
    # PostgreSQL cannot store or compare text holding NUL: the lookup itself used to fail.
    resp = await _login(anonymous, "admin\x00@example.com", "admin-password")
    assert resp.status_code == 400, resp.text
    assert (await _login(anonymous, "admin@example.com", "admin-password")).status_code == 200
