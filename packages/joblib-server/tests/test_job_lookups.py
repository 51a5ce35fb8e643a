"""A submit may reuse an earlier request's look-up of its job, never a stale one.

Submits of one task use the job as the queue last looked it up, and insert the task only if
the job is still active and unchanged; otherwise they look it up again. These tests change
the job through a second app on the same database (another server process, as far as the
first app's caches go), so only the database can tell the first app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from zndraw_joblib_server import JobLibSettings, create_app
from zndraw_joblib_server.testing import api_client, create_user, running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

PREFIX = "/v1/joblib"
JOB = "lab:modifiers:Rotate"
NUMBER = {"type": "object", "properties": {"angle": {"type": "number"}}}
TEXT = {"type": "object", "properties": {"angle": {"type": "string"}}}


@pytest.fixture
async def second(settings: JobLibSettings) -> AsyncIterator[FastAPI]:
    """Another reference app on the same database (its own caches)."""
    application = create_app(settings, auth_settings(), sweeper=False)
    async with running(application):
        yield application


async def test_submits_see_a_job_deleted_and_registered_anew_elsewhere(
    app: FastAPI, second: FastAPI
) -> None:
    alice = await create_user(app, "alice@example.com")
    async with api_client(app, alice) as first, api_client(second, alice) as other:
        registered = await first.put(
            f"{PREFIX}/rooms/lab/jobs",
            json={"category": "modifiers", "name": "Rotate", "schema": NUMBER},
        )
        assert registered.status_code == 201, registered.text
        worker_id = registered.json()["worker_id"]
        task = await first.post(f"{PREFIX}/rooms/lab/tasks/{JOB}", json={"payload": {"angle": 1}})
        assert task.status_code == 202, task.text

        # Elsewhere: the task cancelled, the only worker gone, so the job is deleted.
        cancelled = await other.post(f"{PREFIX}/tasks/{task.json()['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        removed = await other.delete(f"{PREFIX}/workers/{worker_id}")
        assert removed.status_code == 204, removed.text
        gone = await first.post(f"{PREFIX}/rooms/lab/tasks/{JOB}", json={"payload": {"angle": 2}})
        assert gone.status_code == 404, gone.text
        assert gone.json()["type"].endswith("job-not-found")

        # Elsewhere again: registered anew, with another schema; the payloads follow it.
        again = await other.put(
            f"{PREFIX}/rooms/lab/jobs",
            json={"category": "modifiers", "name": "Rotate", "schema": TEXT},
        )
        assert again.status_code == 201, again.text
        refused = await first.post(
            f"{PREFIX}/rooms/lab/tasks/{JOB}", json={"payload": {"angle": 3}}
        )
        assert refused.status_code == 422, refused.text
        accepted = await first.post(
            f"{PREFIX}/rooms/lab/tasks/{JOB}", json={"payload": {"angle": "three"}}
        )
        assert accepted.status_code == 202, accepted.text
        listed = await other.get(f"{PREFIX}/rooms/lab/tasks")
    assert listed.status_code == 200, listed.text
    assert [t["payload"] for t in listed.json()["items"]] == [{"angle": "three"}, {"angle": 1}]


async def test_an_idempotent_repeat_is_answered_from_a_looked_up_job(
    app: FastAPI, second: FastAPI
) -> None:
    alice = await create_user(app, "alice@example.com")
    headers = {"Idempotency-Key": "k-1"}
    async with api_client(app, alice) as first, api_client(second, alice) as other:
        registered = await first.put(
            f"{PREFIX}/rooms/lab/jobs",
            json={"category": "modifiers", "name": "Rotate", "schema": NUMBER},
        )
        assert registered.status_code == 201, registered.text
        url = f"{PREFIX}/rooms/lab/tasks/{JOB}"
        made = await other.post(url, json={"payload": {"angle": 1}}, headers=headers)
        assert made.status_code == 202, made.text
        for _ in range(2):  # the second time from the look-up the first one kept
            repeat = await first.post(url, json={"payload": {"angle": 1}}, headers=headers)
            assert repeat.status_code == 200, repeat.text
            assert repeat.json()["id"] == made.json()["id"]
