"""The five listings: newest first, pagination, status filters, 422 problems."""

from __future__ import annotations

import asyncio

import pytest

P = "/v1/joblib"


async def _page(client, url: str, **params) -> dict:
    resp = await client.get(url, params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    return body


async def _check_paging(client, url: str, expected: list[str]) -> None:
    """``expected`` is the full newest-first list of ids the listing must show."""
    n = len(expected)
    page = await _page(client, url)
    assert [i.get("id") for i in page["items"]] == expected
    assert (page["total"], page["limit"], page["offset"]) == (n, 50, 0)
    page = await _page(client, url, limit=2, offset=1)
    assert [i.get("id") for i in page["items"]] == expected[1:3]
    assert (page["total"], page["limit"], page["offset"]) == (n, 2, 1)
    page = await _page(client, url, limit=0)
    assert page["items"] == []
    assert page["total"] == n
    page = await _page(client, url, offset=n + 5)
    assert page["items"] == []
    assert page["total"] == n
    page = await _page(client, url, limit=500)
    assert len(page["items"]) == n


async def test_jobs_listing(as_alice, as_admin, flow) -> None:
    ids = []
    for i, (room, client) in enumerate([("lab", as_alice), ("@global", as_admin)] * 2):
        ids.append((await flow.job(client, room, f"J{i}"))["id"])
        await asyncio.sleep(0.002)
    await flow.job(as_alice, "other", "Hidden")
    await _check_paging(as_alice, f"{P}/rooms/lab/jobs", ids[::-1])
    item = (await _page(as_alice, f"{P}/rooms/lab/jobs"))["items"][0]
    assert item["full_name"] == "@global:modifiers:J3"
    assert item["category"] == "modifiers"
    assert item["name"] == "J3"
    assert len(item["workers"]) == 1


async def test_workers_listings(as_alice, as_bob, flow) -> None:
    ids = []
    for i in range(4):
        client = as_alice if i % 2 else as_bob
        ids.append((await flow.job(client, "lab", f"J{i}"))["worker_id"])
    await flow.job(as_bob, "other", "Elsewhere")
    await _check_paging(as_alice, f"{P}/rooms/lab/workers", ids[::-1])
    everyone = await _page(as_alice, f"{P}/workers")
    assert everyone["total"] == 5
    assert [w["id"] for w in everyone["items"]][1:] == ids[::-1]


async def test_room_tasks_listing_and_status_filter(as_alice, as_bob, as_admin, flow) -> None:
    job = await flow.job(as_alice)
    glob = await flow.job(as_admin, "@global", "G")
    ids = []
    for i in range(5):
        name = job["full_name"] if i % 2 else glob["full_name"]
        ids.append((await flow.submit(as_bob if i % 2 else as_alice, name))["id"])
    await flow.submit(as_alice, glob["full_name"], "other")  # another room
    await _check_paging(as_alice, f"{P}/rooms/lab/tasks", ids[::-1])
    await as_alice.post(f"{P}/tasks/{ids[0]}/cancel")
    await as_alice.post(f"{P}/tasks/{ids[2]}/cancel")
    claimed = await flow.claim(as_alice, job["worker_id"])
    assert claimed["id"] == ids[1]
    page = await _page(as_alice, f"{P}/rooms/lab/tasks", status="cancelled")
    assert [t["id"] for t in page["items"]] == [ids[2], ids[0]]
    assert page["total"] == 2
    page = await _page(as_alice, f"{P}/rooms/lab/tasks", status="pending")
    assert [t["id"] for t in page["items"]] == [ids[4], ids[3]]
    assert [t["queue_position"] for t in page["items"]] == [1, 1]  # one per job
    page = await _page(as_alice, f"{P}/rooms/lab/tasks", status="claimed", limit=0)
    assert page["total"] == 1
    page = await _page(as_alice, f"{P}/rooms/lab/tasks", status="completed")
    assert page == {"items": [], "total": 0, "limit": 50, "offset": 0}
    other = await _page(as_alice, f"{P}/rooms/other/tasks")
    assert other["total"] == 1


async def test_job_tasks_listing(as_alice, as_admin, flow, problem) -> None:
    job = await flow.job(as_admin, "@global", "G")
    second = await flow.job(as_admin, "@global", "H")
    ids = []
    for _ in range(4):
        ids.append((await flow.submit(as_alice, job["full_name"]))["id"])
        await flow.submit(as_alice, second["full_name"])
    await flow.submit(as_alice, job["full_name"], "other")
    url = f"{P}/rooms/lab/jobs/{job['full_name']}/tasks"
    await _check_paging(as_alice, url, ids[::-1])
    await as_alice.post(f"{P}/tasks/{ids[1]}/cancel")
    page = await _page(as_alice, url, status="cancelled")
    assert [t["id"] for t in page["items"]] == [ids[1]]
    assert all(t["job_name"] == job["full_name"] for t in (await _page(as_alice, url))["items"])
    other = await _page(as_alice, f"{P}/rooms/other/jobs/{job['full_name']}/tasks")
    assert other["total"] == 1
    problem(
        await as_alice.get(f"{P}/rooms/lab/jobs/lab:modifiers:Nope/tasks"), 404, "job-not-found"
    )


LISTINGS = [
    "/rooms/lab/jobs",
    "/rooms/lab/workers",
    "/workers",
    "/rooms/lab/tasks",
    "/rooms/lab/jobs/@global:modifiers:Rotate/tasks",
]


BAD_PAGING = [
    {"limit": 501},
    {"limit": -1},
    {"limit": "ten"},
    {"offset": -1},
    {"offset": "x"},
    {"offset": 2**40},
]


@pytest.mark.parametrize("path", LISTINGS)
async def test_listing_out_of_range_is_422_problem(as_alice, register, problem, path) -> None:
    await register()
    for params in BAD_PAGING:
        resp = await as_alice.get(f"{P}{path}", params=params)
        body = problem(resp, 422, "validation-error")
        assert body["errors"]
        name = next(iter(params))
        assert any(name in e["loc"] for e in body["errors"]), (params, body)
    for params in ({"limit": 500}, {"limit": 0}, {"offset": 2**31 - 1}):
        assert (await as_alice.get(f"{P}{path}", params=params)).status_code == 200


@pytest.mark.parametrize("path", ["/rooms/lab/tasks", "/rooms/lab/jobs/@global:modifiers:R/tasks"])
async def test_bad_status_filter_is_422(as_alice, problem, path) -> None:
    problem(await as_alice.get(f"{P}{path}", params={"status": "done"}), 422, "validation-error")


@pytest.mark.parametrize(
    "path", ["/rooms/a@b/jobs", "/rooms/a@b/workers", "/rooms/a@b/tasks", "/rooms/a:b/tasks"]
)
async def test_listing_bad_room_is_400(as_alice, problem, path) -> None:
    problem(await as_alice.get(f"{P}{path}"), 400, "invalid-room-id")


async def test_default_limit_is_50(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    for _ in range(52):
        await flow.submit(as_alice, job["full_name"])
    page = await _page(as_alice, f"{P}/rooms/lab/tasks")
    assert len(page["items"]) == 50
    assert page["total"] == 52
    rest = await _page(as_alice, f"{P}/rooms/lab/tasks", offset=50)
    assert len(rest["items"]) == 2
    seen = {t["id"] for t in page["items"]} | {t["id"] for t in rest["items"]}
    assert len(seen) == 52
