"""Optional tracing: spans around submit, claim and update (any OpenTelemetry-like tracer)."""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI

from zndraw_joblib_server import JobQueue
from zndraw_joblib_server.testing import api_client, running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings
from zndraw_joblib_server.tracing import Tracing, tracer_if_installed

P = "/v1/joblib"


class Span:
    def __init__(self, name: str) -> None:
        self.name = name
        self.attributes: dict[str, Any] = {}

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


class Tracer:
    """Records spans the way OpenTelemetry's tracer API opens them."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    @contextmanager
    def start_as_current_span(self, name: str) -> Any:
        span = Span(name)
        self.spans.append(span)
        yield span


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"fast_lane": request.param}


async def test_submit_claim_and_update_run_in_spans(settings, alice) -> None:
    tracer = Tracer()
    queue = JobQueue(settings, sweeper=False)
    app = FastAPI(lifespan=queue.lifespan)
    app.state.auth_settings = auth_settings()
    queue.include_in(app)
    app.add_middleware(Tracing, tracer=tracer)
    async with running(app), api_client(app, alice) as client:
        worker = (await client.post(f"{P}/workers")).json()["id"]
        body = {"category": "modifiers", "name": "T", "schema": {}, "worker_id": worker}
        job = (await client.put(f"{P}/rooms/lab/jobs", json=body)).json()["full_name"]
        assert tracer.spans == []
        task = (await client.post(f"{P}/rooms/lab/tasks/{job}", json={"payload": {}})).json()
        claim = await client.post(f"{P}/tasks/claim", json={"worker_id": worker})
        assert claim.status_code == 200
        update = {"status": "running", "worker_id": worker}
        assert (await client.patch(f"{P}/tasks/{task['id']}", json=update)).status_code == 200
        await client.get(f"{P}/tasks/{task['id']}")
    assert [s.name for s in tracer.spans] == ["joblib.submit", "joblib.claim", "joblib.update"]
    assert [s.attributes["http.response.status_code"] for s in tracer.spans] == [202, 200, 200]
    assert all(task["id"] not in str(s.attributes) for s in tracer.spans)


def test_nothing_is_added_without_opentelemetry() -> None:
    installed = importlib.util.find_spec("opentelemetry") is not None
    assert (tracer_if_installed() is not None) == installed
