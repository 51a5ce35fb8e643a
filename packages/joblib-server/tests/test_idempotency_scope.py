"""Idempotency keys are the submitter's own and bound to the request body (issue 17 #9)."""

from __future__ import annotations

from typing import Any

import pytest

P = "/v1/joblib"
KEY = {"Idempotency-Key": "same-key"}


@pytest.fixture(params=[True, False], ids=["lane", "fastapi"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Submits are hot routes: check both request paths."""
    return {"fast_lane": request.param}


async def _total(client) -> int:
    page = (await client.get(f"{P}/rooms/lab/tasks", params={"limit": 0})).json()
    return int(page["total"])


async def test_single_submit_keys_are_per_user(as_alice, as_bob, as_admin, flow) -> None:
    job = await flow.job(as_admin, "@global")
    url = f"{P}/rooms/lab/tasks/{job['full_name']}"
    mine = await as_alice.post(url, json={"payload": {"a": 1}}, headers=KEY)
    assert mine.status_code == 202
    his = await as_bob.post(url, json={"payload": {"a": 1}}, headers=KEY)
    assert his.status_code == 202, his.text  # not alice's task
    assert his.json()["id"] != mine.json()["id"]
    again = await as_bob.post(url, json={"payload": {"a": 1}}, headers=KEY)
    assert again.status_code == 200
    assert again.json()["id"] == his.json()["id"]
    assert await _total(as_alice) == 2


@pytest.mark.parametrize(
    "changed",
    [{"payload": {"a": 2}}, {"priority": 5}, {"max_attempts": 7}, {"lease_seconds": 9.0}],
)
async def test_single_submit_key_with_another_body_is_409(
    as_alice, as_admin, flow, problem, changed
) -> None:
    job = await flow.job(as_admin, "@global")
    url = f"{P}/rooms/lab/tasks/{job['full_name']}"
    first = await as_alice.post(url, json={"payload": {"a": 1}}, headers=KEY)
    assert first.status_code == 202
    resp = await as_alice.post(url, json={"payload": {"a": 1}, **changed}, headers=KEY)
    problem(resp, 409, "idempotency-key-reused")
    assert await _total(as_alice) == 1
    task = await flow.task(as_alice, first.json()["id"])
    assert task["payload"] == {"a": 1}
    assert task["priority"] == 0


async def test_batch_keys_are_per_user_and_bound_to_the_body(
    as_alice, as_bob, as_admin, flow, problem
) -> None:
    job = await flow.job(as_admin, "@global")
    url = f"{P}/rooms/lab/jobs/{job['full_name']}/tasks"
    items = {"items": [{"payload": {"i": 0}}, {"payload": {"i": 1}}]}
    mine = await as_alice.post(url, json=items, headers=KEY)
    assert mine.status_code == 202
    ids = [t["id"] for t in mine.json()["items"]]
    repeat = await as_alice.post(url, json=items, headers=KEY)
    assert repeat.status_code == 200
    assert [t["id"] for t in repeat.json()["items"]] == ids
    his = await as_bob.post(url, json=items, headers=KEY)
    assert his.status_code == 202
    assert not set(ids) & {t["id"] for t in his.json()["items"]}
    other = {"items": [{"payload": {"i": 0}}, {"payload": {"i": 9}}]}
    problem(await as_alice.post(url, json=other, headers=KEY), 409, "idempotency-key-reused")
    more = {"items": [*items["items"], {"payload": {"i": 2}}]}
    problem(await as_alice.post(url, json=more, headers=KEY), 409, "idempotency-key-reused")
    fewer = {"items": [{"payload": {"i": 0}}]}
    problem(await as_alice.post(url, json=fewer, headers=KEY), 409, "idempotency-key-reused")
    assert await _total(as_alice) == 4
