"""Hostile input is refused with a 4xx problem, and a bad stored row never breaks a read."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

P = "/v1/joblib"
JOB = "lab:modifiers:Rotate"
JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Every test runs with the fast lane on and off."""
    return {"fast_lane": request.param}


def deep(levels: int) -> Any:
    """A JSON value of ``levels`` nested objects."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


async def post_raw(client: httpx.AsyncClient, url: str, raw: str) -> httpx.Response:
    return await client.post(url, content=raw.encode(), headers=JSON_HEADERS)


class TestRefusedAtTheBoundary:
    async def test_deep_payload_is_refused_and_nothing_is_stored(
        self, as_admin, flow, problem
    ) -> None:
        await flow.job(as_admin)
        body = json.dumps({"payload": deep(600)})
        resp = await post_raw(as_admin, f"{P}/rooms/lab/tasks/{JOB}", body)
        assert "64 levels" in problem(resp, 422, "validation-error")["detail"]
        listing = await flow.room_tasks(as_admin)
        assert listing["total"] == 0

    async def test_payload_at_the_depth_limit_is_accepted(self, as_admin, flow) -> None:
        await flow.job(as_admin)
        await flow.submit(as_admin, JOB, payload=deep(63))  # 64 levels with the outer object
        listing = await flow.room_tasks(as_admin)
        assert listing["total"] == 1

    async def test_deep_batch_item_is_refused(self, as_admin, flow, problem) -> None:
        await flow.job(as_admin)
        body = json.dumps({"items": [{"payload": {}}, {"payload": deep(100)}]})
        resp = await post_raw(as_admin, f"{P}/rooms/lab/jobs/{JOB}/tasks", body)
        problem(resp, 422, "validation-error")
        assert (await flow.room_tasks(as_admin))["total"] == 0

    @pytest.mark.parametrize(
        "raw", ['{"payload": {"x": "\\ud800"}}', '{"payload": {"\\udfff": 1}}']
    )
    async def test_lone_surrogate_in_payload(self, as_admin, flow, problem, raw) -> None:
        await flow.job(as_admin)
        resp = await post_raw(as_admin, f"{P}/rooms/lab/tasks/{JOB}", raw)
        assert "surrogate" in problem(resp, 422, "validation-error")["detail"]

    async def test_paired_surrogates_are_text(self, as_admin, flow) -> None:
        await flow.job(as_admin)
        resp = await post_raw(
            as_admin, f"{P}/rooms/lab/tasks/{JOB}", '{"payload": {"x": "\\ud83d\\ude00"}}'
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["payload"] == {"x": "\U0001f600"}

    @pytest.mark.parametrize("field", ["message", "error", "result"])
    async def test_lone_surrogate_in_update(self, as_admin, flow, problem, field) -> None:
        _job, worker, task = await flow.claimed(as_admin, running=True)
        status = {"message": "running", "error": "failed", "result": "completed"}[field]
        raw = (
            json.dumps({"status": status, "worker_id": worker})[:-1] + f', "{field}": "\\ud800"}}'
        )
        url = f"{P}/tasks/{task['id']}"
        resp = await as_admin.patch(url, content=raw.encode(), headers=JSON_HEADERS)
        problem(resp, 422, "validation-error")
        batch = json.dumps([{"task_id": task["id"], "status": status, "worker_id": worker}])
        batch = batch[:-2] + f', "{field}": "\\ud800"}}]'
        resp = await as_admin.patch(f"{P}/tasks", content=batch.encode(), headers=JSON_HEADERS)
        assert resp.status_code in (200, 422), resp.text
        if resp.status_code == 200:
            assert resp.json()["items"][0]["ok"] is False
        assert (await flow.task(as_admin, task["id"]))["status"] == "running"

    async def test_deep_result_is_refused(self, as_admin, flow, problem) -> None:
        _job, worker, task = await flow.claimed(as_admin, running=True)
        resp = await flow.patch(
            as_admin, task["id"], status="completed", worker_id=worker, result=[deep(80)]
        )
        problem(resp, 422, "validation-error")

    async def test_deep_schema_is_refused(self, as_admin, problem) -> None:
        body = {"category": "modifiers", "name": "Deep", "schema": deep(100)}
        resp = await as_admin.put(f"{P}/rooms/lab/jobs", json=body)
        problem(resp, 422)

    @pytest.mark.parametrize("field", ["name", "category"])
    async def test_lone_surrogate_in_job_names(self, as_admin, problem, field) -> None:
        body = {"category": "modifiers", "name": "Rotate", "schema": {}}
        raw = json.dumps(body).replace(f'"{body[field]}"', f'"{body[field]}\\ud800"')
        resp = await as_admin.put(
            f"{P}/rooms/lab/jobs", content=raw.encode(), headers=JSON_HEADERS
        )
        assert resp.status_code in (400, 422), resp.text
        problem(resp, resp.status_code)

    @pytest.mark.parametrize(
        "run_after",
        [
            "9999-12-31T23:59:59-12:00",
            "0001-01-01T00:00:00+14:00",
            1e300,
            -1e300,
            "-999999-01-01T00:00:00Z",
            "+275760-09-13T00:00:00Z",
        ],
    )
    async def test_extreme_run_after(self, as_admin, flow, problem, run_after) -> None:
        await flow.job(as_admin)
        resp = await as_admin.post(
            f"{P}/rooms/lab/tasks/{JOB}", json={"payload": {}, "run_after": run_after}
        )
        problem(resp, 422, "validation-error")

    async def test_far_future_run_after_is_served(self, as_admin, flow) -> None:
        job = await flow.job(as_admin)
        task = await flow.submit(as_admin, JOB, run_after="9999-12-31T23:59:59Z")
        assert (await flow.task(as_admin, task["id"]))["run_after"].startswith("9999-12-31")
        assert await flow.claim(as_admin, job["worker_id"]) is None
        assert (await flow.room_tasks(as_admin))["total"] == 1


class TestBadStoredRows:
    """Rows written around the API (or before the checks) are answered with a marker."""

    async def _spoil(self, app: FastAPI, task_id: str, column: str, raw_json: str) -> None:
        async with app.state.session_maker() as session:
            await session.execute(
                text(f"UPDATE joblib_task SET {column} = :v WHERE id = :id"),
                {"v": raw_json, "id": _db_id(app.state.engine, task_id)},
            )
            await session.commit()

    async def test_listing_and_claim_batch_survive(
        self, app, as_admin, flow, backend, caplog
    ) -> None:
        job = await flow.job(as_admin)
        ids = [(await flow.submit(as_admin, JOB, payload={"i": i}))["id"] for i in range(3)]
        await self._spoil(app, ids[1], "payload", json.dumps(deep(400)))
        if backend == "sqlite":  # PostgreSQL's json type refuses a lone surrogate escape
            await self._spoil(app, ids[2], "payload", '{"x": "\\ud800"}')
        with caplog.at_level(logging.WARNING, logger="zndraw_joblib_server"):
            listing = await flow.room_tasks(as_admin)
            again = await flow.room_tasks(as_admin)
        by_id = {t["id"]: t for t in listing["items"]}
        assert by_id[ids[0]]["payload"] == {"i": 0}
        assert list(by_id[ids[1]]["payload"]) == ["$unrenderable"]
        if backend == "sqlite":
            assert list(by_id[ids[2]]["payload"]) == ["$unrenderable"]
        assert again["items"] == listing["items"]
        assert sum("cannot be rendered" in r.getMessage() for r in caplog.records) == (
            2 if backend == "sqlite" else 1
        )  # once per row, not per read
        assert (await flow.task(as_admin, ids[1]))["status"] == "pending"
        resp = await as_admin.post(
            f"{P}/tasks/claim", json={"worker_id": job["worker_id"], "max_tasks": 10}
        )
        assert resp.status_code == 200, resp.text
        claimed = {t["id"]: t for t in resp.json()["tasks"]}
        assert set(claimed) == set(ids)
        assert claimed[ids[0]]["payload"] == {"i": 0}

    async def test_bad_result_on_read(self, app, as_admin, flow, backend) -> None:
        _job, worker, task = await flow.claimed(as_admin, running=True)
        await flow.move(as_admin, task["id"], "completed", worker_id=worker, result={"ok": 1})
        bad = '"\\ud800"' if backend == "sqlite" else json.dumps(deep(300))
        await self._spoil(app, task["id"], "result", bad)
        read = await flow.task(as_admin, task["id"])
        assert list(read["result"]) == ["$unrenderable"]


def _db_id(engine: Any, task_id: str) -> Any:
    """The task id as the table stores it (SQLite: 32 hex digits; PostgreSQL: uuid)."""
    import uuid

    value = uuid.UUID(task_id)
    return value.hex if engine.dialect.name == "sqlite" else value


class TestNoRedirects:
    @pytest.mark.parametrize(
        "path", ["/health/", "/users/me/", f"{P}/workers/", f"{P}/rooms/lab/jobs/"]
    )
    async def test_trailing_slash_is_not_redirected(self, as_admin, path) -> None:
        resp = await as_admin.get(path, headers={"Host": "evil.example"})
        assert resp.status_code == 404, (resp.status_code, resp.headers)
        assert "location" not in resp.headers
        assert "evil.example" not in resp.text


class TestUnexpectedErrors:
    async def test_logged_once_truncated_and_answered_500(
        self, as_admin, flow, problem, caplog, monkeypatch
    ) -> None:
        from zndraw_joblib_server.services import tasks as task_service

        await flow.job(as_admin)
        task = await flow.submit(as_admin, JOB)

        def recurse(n: int) -> None:
            if n == 0:
                raise RuntimeError("boom " + "x" * 20_000)
            recurse(n - 1)

        async def broken(*_args: Any, **_kwargs: Any) -> Any:
            recurse(50)

        monkeypatch.setattr(task_service, "get_task", broken)
        with caplog.at_level(logging.ERROR):
            resp = await as_admin.get(f"{P}/tasks/{task['id']}")
        problem(resp, 500)
        records = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(records) == 1, [r.getMessage()[:80] for r in records]
        assert records[0].exc_info is None
        assert len(records[0].getMessage()) < 5_000
        assert "RuntimeError" in records[0].getMessage()
