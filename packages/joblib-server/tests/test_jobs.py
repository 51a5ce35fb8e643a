"""Job registration, visibility, soft deletion and reactivation."""

from __future__ import annotations

import httpx
import pytest

P = "/v1/joblib"
SCHEMA_A = {"type": "object", "properties": {"angle": {"type": "number"}}}
SCHEMA_B = {"type": "object", "properties": {"axis": {"type": "string"}}}


async def _jobs(client: httpx.AsyncClient, room: str) -> dict:
    resp = await client.get(f"{P}/rooms/{room}/jobs")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_register_new_job_201_with_full_response(as_alice, alice) -> None:
    body = {"category": "modifiers", "name": "Rotate", "schema": SCHEMA_A}
    resp = await as_alice.put(f"{P}/rooms/lab/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["room_id"] == "lab"
    assert job["category"] == "modifiers"
    assert job["name"] == "Rotate"
    assert job["full_name"] == "lab:modifiers:Rotate"
    assert job["schema"] == SCHEMA_A
    assert job["worker_id"] is not None
    assert job["workers"] == [job["worker_id"]]
    # the created worker belongs to alice: she can heartbeat it
    hb = await as_alice.patch(f"{P}/workers/{job['worker_id']}")
    assert hb.status_code == 200


async def test_register_same_schema_again_is_200_and_links_the_new_worker(as_alice, flow) -> None:
    first = await flow.job(as_alice, schema=SCHEMA_A)
    body = {"category": "modifiers", "name": "Rotate", "schema": SCHEMA_A}
    again = await as_alice.put(f"{P}/rooms/lab/jobs", json=body)
    assert again.status_code == 200, again.text
    job = again.json()
    assert job["id"] == first["id"]
    assert job["worker_id"] != first["worker_id"]
    assert set(job["workers"]) == {first["worker_id"], job["worker_id"]}
    listing = await _jobs(as_alice, "lab")
    assert listing["total"] == 1


async def test_register_with_existing_worker_id_reuses_it(as_alice, flow) -> None:
    worker = await flow.worker(as_alice)
    a = await flow.job(as_alice, name="A", worker_id=worker)
    b = await flow.job(as_alice, name="B", worker_id=worker)
    assert a["worker_id"] == b["worker_id"] == worker
    again = await as_alice.put(
        f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "A", "worker_id": worker}
    )
    assert again.status_code == 200
    assert again.json()["workers"] == [worker]  # linked once, not twice
    workers = (await as_alice.get(f"{P}/workers")).json()
    assert workers["total"] == 1
    assert workers["items"][0]["id"] == worker
    assert workers["items"][0]["job_count"] == 2


async def test_register_different_schema_is_409_and_keeps_the_old_one(
    as_alice, as_bob, flow, problem
) -> None:
    await flow.job(as_alice, schema=SCHEMA_A)
    resp = await as_bob.put(
        f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "Rotate", "schema": SCHEMA_B}
    )
    problem(resp, 409, "schema-conflict")
    job = (await as_alice.get(f"{P}/rooms/lab/jobs/lab:modifiers:Rotate")).json()
    assert job["schema"] == SCHEMA_A
    assert len(job["workers"]) == 1
    # bob got no worker out of the refused registration
    assert (await as_bob.get(f"{P}/workers")).json()["total"] == 1


async def test_register_with_another_users_worker_is_404(as_alice, as_bob, flow, problem) -> None:
    alices = await flow.worker(as_alice)
    resp = await as_bob.put(
        f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "X", "worker_id": alices}
    )
    problem(resp, 404, "worker-not-found")
    assert (await as_bob.get(f"{P}/workers")).json()["total"] == 1  # no worker created


async def test_refused_registration_writes_no_job(as_alice, as_bob, flow, problem) -> None:
    """Nothing of a refused registration stays (on SQLite too: SAVEPOINT handling)."""
    alices = await flow.worker(as_alice)
    resp = await as_bob.put(
        f"{P}/rooms/lab/jobs",
        json={"category": "modifiers", "name": "X", "worker_id": alices, "schema": SCHEMA_A},
    )
    problem(resp, 404, "worker-not-found")
    assert (await _jobs(as_bob, "lab"))["total"] == 0
    # the refused registration must not block a later one with another schema
    resp = await as_alice.put(
        f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "X", "schema": SCHEMA_B}
    )
    assert resp.status_code == 201, resp.text


async def test_register_with_unknown_worker_is_404(as_alice, problem) -> None:
    resp = await as_alice.put(
        f"{P}/rooms/lab/jobs",
        json={
            "category": "modifiers",
            "name": "X",
            "worker_id": "00000000-0000-4000-8000-000000000000",
        },
    )
    problem(resp, 404, "worker-not-found")
    assert (await as_alice.get(f"{P}/workers")).json()["total"] == 0


async def test_global_job_needs_superuser(as_alice, as_admin, problem) -> None:
    body = {"category": "modifiers", "name": "G"}
    problem(await as_alice.put(f"{P}/rooms/@global/jobs", json=body), 403, "forbidden")
    assert (await _jobs(as_alice, "@global"))["total"] == 0
    assert (await as_alice.get(f"{P}/workers")).json()["total"] == 0
    ok = await as_admin.put(f"{P}/rooms/@global/jobs", json=body)
    assert ok.status_code == 201
    assert ok.json()["full_name"] == "@global:modifiers:G"


async def test_room_visibility(as_alice, as_bob, as_admin, flow, problem) -> None:
    await flow.job(as_admin, "@global", "G")
    await flow.job(as_alice, "lab", "L")
    await flow.job(as_bob, "other", "O")

    lab = await _jobs(as_bob, "lab")
    assert {j["full_name"] for j in lab["items"]} == {"@global:modifiers:G", "lab:modifiers:L"}
    glob = await _jobs(as_bob, "@global")
    assert [j["full_name"] for j in glob["items"]] == ["@global:modifiers:G"]
    other = await _jobs(as_alice, "other")
    assert {j["full_name"] for j in other["items"]} == {
        "@global:modifiers:G",
        "other:modifiers:O",
    }

    assert (await as_bob.get(f"{P}/rooms/lab/jobs/lab:modifiers:L")).status_code == 200
    assert (await as_bob.get(f"{P}/rooms/lab/jobs/@global:modifiers:G")).status_code == 200
    problem(await as_bob.get(f"{P}/rooms/lab/jobs/other:modifiers:O"), 404, "job-not-found")
    problem(await as_bob.get(f"{P}/rooms/@global/jobs/lab:modifiers:L"), 404, "job-not-found")
    problem(await as_bob.get(f"{P}/rooms/lab/jobs/lab:modifiers:Nope"), 404, "job-not-found")
    problem(await as_bob.get(f"{P}/rooms/lab/jobs/not-a-full-name"), 404, "job-not-found")
    # submitting from a room that cannot see the job is refused too
    resp = await as_bob.post(f"{P}/rooms/lab/tasks/other:modifiers:O", json={"payload": {}})
    problem(resp, 404, "job-not-found")
    assert (await flow.room_tasks(as_bob, "lab"))["total"] == 0


async def test_get_job_shows_schema_and_workers(as_alice, flow) -> None:
    job = await flow.job(as_alice, schema=SCHEMA_A)
    got = (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).json()
    assert got["id"] == job["id"]
    assert got["schema"] == SCHEMA_A
    assert got["workers"] == [job["worker_id"]]
    assert got["worker_id"] is None


async def test_room_workers_listing_follows_visibility(as_alice, as_bob, as_admin, flow) -> None:
    g = await flow.job(as_admin, "@global", "G")
    lab = await flow.job(as_alice, "lab", "L")
    other = await flow.job(as_bob, "other", "O")
    idle = await flow.worker(as_bob)  # serves nothing

    def ids(page: dict) -> set[str]:
        return {w["id"] for w in page["items"]}

    page = (await as_alice.get(f"{P}/rooms/lab/workers")).json()
    assert ids(page) == {g["worker_id"], lab["worker_id"]}
    assert page["total"] == 2
    page = (await as_alice.get(f"{P}/rooms/@global/workers")).json()
    assert ids(page) == {g["worker_id"]}
    page = (await as_alice.get(f"{P}/rooms/other/workers")).json()
    assert ids(page) == {g["worker_id"], other["worker_id"]}
    for item in page["items"]:
        assert item["job_count"] == 1
        assert item["last_heartbeat"]
    everyone = (await as_alice.get(f"{P}/workers")).json()
    assert ids(everyone) == {g["worker_id"], lab["worker_id"], other["worker_id"], idle}


async def test_soft_delete_on_last_worker_delete_and_reactivation(
    as_alice, as_bob, flow, problem
) -> None:
    job = await flow.job(as_alice, schema=SCHEMA_A)
    done = await flow.submit(as_alice, job["full_name"])
    assert (await flow.claim(as_alice, job["worker_id"]))["id"] == done["id"]
    await flow.move(as_alice, done["id"], "running", worker_id=job["worker_id"])
    await flow.move(as_alice, done["id"], "completed", worker_id=job["worker_id"])

    resp = await as_alice.delete(f"{P}/workers/{job['worker_id']}")
    assert resp.status_code == 204
    problem(await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}"), 404, "job-not-found")
    assert (await _jobs(as_alice, "lab"))["total"] == 0
    problem(
        await as_alice.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {}}),
        404,
        "job-not-found",
    )
    # task history is kept
    assert (await flow.task(as_alice, done["id"]))["status"] == "completed"
    assert (await flow.room_tasks(as_alice))["total"] == 1

    # only its owner (or a superuser) may take it up again: another user is refused
    body = {"category": "modifiers", "name": "Rotate", "schema": SCHEMA_B}
    problem(await as_bob.put(f"{P}/rooms/lab/jobs", json=body), 403, "forbidden")
    # re-registering by the owner (with a new schema) reactivates it: 201
    resp = await as_alice.put(f"{P}/rooms/lab/jobs", json=body)
    assert resp.status_code == 201, resp.text
    again = resp.json()
    assert again["id"] == job["id"]
    assert again["schema"] == SCHEMA_B
    assert again["workers"] == [again["worker_id"]]
    got = (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).json()
    assert got["schema"] == SCHEMA_B
    tasks = (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}/tasks")).json()
    assert [t["id"] for t in tasks["items"]] == [done["id"]]


async def test_job_with_pending_tasks_is_kept_when_its_last_worker_leaves(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    await flow.submit(as_alice, job["full_name"])
    assert (await as_alice.delete(f"{P}/workers/{job['worker_id']}")).status_code == 204
    got = await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")
    assert got.status_code == 200
    assert got.json()["workers"] == []
    # one worker leaving while another still serves the job keeps it too
    second = await flow.job(as_alice, name="Two")
    extra = await flow.job(as_alice, name="Two")
    assert (await as_alice.delete(f"{P}/workers/{second['worker_id']}")).status_code == 204
    got = (await as_alice.get(f"{P}/rooms/lab/jobs/{second['full_name']}")).json()
    assert got["workers"] == [extra["worker_id"]]


@pytest.mark.parametrize(
    ("room", "slug", "status"),
    [
        ("a@b", "invalid-room-id", 400),
        ("a:b", "invalid-room-id", 400),
        ("%20lab", "invalid-room-id", 400),
        ("@other", "invalid-room-id", 400),
    ],
)
async def test_register_invalid_room(as_admin, problem, room, slug, status) -> None:
    resp = await as_admin.put(
        f"{P}/rooms/{room}/jobs", json={"category": "modifiers", "name": "X"}
    )
    problem(resp, status, slug)
    assert (await as_admin.get(f"{P}/workers")).json()["total"] == 0


@pytest.mark.parametrize("name", ["a:b", "a/b", " lead", "trail ", "", "x" * 256, "ctl\x01"])
async def test_register_invalid_job_name(as_alice, problem, name) -> None:
    resp = await as_alice.put(f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": name})
    problem(resp, 400, "invalid-job-name")
    assert (await _jobs(as_alice, "lab"))["total"] == 0
    assert (await as_alice.get(f"{P}/workers")).json()["total"] == 0


async def test_register_invalid_category(as_alice, problem) -> None:
    resp = await as_alice.put(f"{P}/rooms/lab/jobs", json={"category": "weird", "name": "X"})
    body = problem(resp, 400, "invalid-category")
    assert "weird" in body["detail"]
    assert (await _jobs(as_alice, "lab"))["total"] == 0


@pytest.mark.parametrize(
    "schema",
    [{"type": "nonsense"}, {"properties": {"a": {"type": 5}}}, {"required": "a"}],
)
async def test_register_invalid_schema(as_alice, problem, schema) -> None:
    resp = await as_alice.put(
        f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "X", "schema": schema}
    )
    problem(resp, 422, "invalid-schema")
    assert (await _jobs(as_alice, "lab"))["total"] == 0


async def test_register_unknown_body_field_is_validation_error(as_alice, problem) -> None:
    resp = await as_alice.put(
        f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "X", "bogus": 1}
    )
    body = problem(resp, 422, "validation-error")
    assert body["errors"]
    assert (await _jobs(as_alice, "lab"))["total"] == 0


class TestCustomCategories:
    @pytest.fixture
    def settings_overrides(self) -> dict:
        return {"allowed_categories": ["custom"]}

    async def test_only_configured_categories(self, as_alice, problem) -> None:
        resp = await as_alice.put(f"{P}/rooms/lab/jobs", json={"category": "custom", "name": "X"})
        assert resp.status_code == 201
        resp = await as_alice.put(
            f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "X"}
        )
        problem(resp, 400, "invalid-category")
