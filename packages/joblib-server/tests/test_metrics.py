"""GET /metrics: Prometheus counters match what happened, on both request paths."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from zndraw_joblib_server import create_app
from zndraw_joblib_server.testing import api_client, running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

P = "/v1/joblib"


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"fast_lane": request.param}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def tasks(found: dict, job: str, event: str) -> float:
    return found.get(("zndraw_joblib_tasks_total", (("event", event), ("job", job))), 0.0)


async def test_counters_match_a_run(anonymous, as_alice, flow) -> None:
    job = await flow.job(as_alice)
    name, worker = job["full_name"], job["worker_id"]
    done = await flow.submit(as_alice, name)
    failed = await flow.submit(as_alice, name, max_attempts=1)
    await flow.submit(as_alice, name)  # stays pending
    cancelled = await flow.submit(as_alice, name, priority=-5)
    retried = await flow.submit(as_alice, name, max_attempts=2, priority=-1)

    assert (await flow.claim(as_alice, worker))["id"] == done["id"]
    await flow.move(as_alice, done["id"], "running", worker_id=worker)
    await flow.move(as_alice, done["id"], "completed", worker_id=worker, result={"ok": 1})
    assert (await flow.claim(as_alice, worker))["id"] == failed["id"]
    await flow.move(as_alice, failed["id"], "running", worker_id=worker)
    await flow.move(as_alice, failed["id"], "failed", worker_id=worker, error="boom")
    resp = await as_alice.post(f"{P}/tasks/{cancelled['id']}/cancel")
    assert resp.status_code == 200, resp.text
    # The next by priority: fail it with a retry (requeued).
    claimed = await flow.claim(as_alice, worker)
    assert claimed is not None
    await flow.move(as_alice, claimed["id"], "running", worker_id=worker)
    await flow.move(as_alice, claimed["id"], "failed", worker_id=worker, error="again", retry=True)

    resp = await anonymous.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    found = samples(resp.text)
    assert tasks(found, name, "submitted") == 5
    assert tasks(found, name, "claimed") == 3
    assert tasks(found, name, "completed") == 1
    assert tasks(found, name, "failed") == 1
    assert tasks(found, name, "cancelled") == 1
    assert tasks(found, name, "requeued") == 1
    # Pending: the requeued one and the never-claimed one.
    assert found[("zndraw_joblib_queue_depth", (("job", name),))] == 2
    assert found[("zndraw_joblib_oldest_pending_seconds", (("job", name),))] >= 0
    assert found[("zndraw_joblib_workers_live", ())] == 1
    assert found[("zndraw_joblib_claim_seconds_count", ())] == 3
    assert found[("zndraw_joblib_wakeup_seconds_count", ())] == 3
    assert found[("zndraw_joblib_long_polls_waiting", ())] == 0
    assert found[("zndraw_joblib_database_errors_total", ())] == 0
    # Bounded labels: no task or user ids anywhere.
    for ident in (done["id"], failed["id"], retried["id"], worker):
        assert ident not in resp.text


async def test_registry_is_per_app(settings, anonymous, as_alice, flow) -> None:
    job = await flow.job(as_alice)
    await flow.submit(as_alice, job["full_name"])
    assert REGISTRY.get_sample_value("zndraw_joblib_tasks_total") is None
    other = create_app(settings, auth_settings(), sweeper=False)
    async with running(other), api_client(other) as client:
        found = samples((await client.get("/metrics")).text)
    assert tasks(found, job["full_name"], "submitted") == 0
    found = samples((await anonymous.get("/metrics")).text)
    assert tasks(found, job["full_name"], "submitted") == 1


async def test_job_labels_are_capped(app, anonymous, as_alice, flow) -> None:
    app.state.joblib_metrics.max_job_labels = 2
    for i in range(4):
        job = await flow.job(as_alice, name=f"J{i}")
        await flow.submit(as_alice, job["full_name"])
    found = samples((await anonymous.get("/metrics")).text)
    jobs = {dict(k[1])["job"] for k in found if k[0] == "zndraw_joblib_tasks_total"}
    assert jobs == {"lab:modifiers:J0", "lab:modifiers:J1", "other"}
    assert tasks(found, "other", "submitted") == 2


@pytest.mark.parametrize("settings_overrides", [{"metrics_token": "t" * 40}])
async def test_token_protects_metrics(anonymous, settings_overrides) -> None:
    resp = await anonymous.get("/metrics")
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    resp = await anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401
    resp = await anonymous.get("/metrics", headers={"Authorization": "Bearer " + "t" * 40})
    assert resp.status_code == 200
    assert "zndraw_joblib_queue_depth" in resp.text


@pytest.mark.parametrize("settings_overrides", [{"metrics": False}])
async def test_metrics_can_be_turned_off(anonymous, settings_overrides) -> None:
    assert (await anonymous.get("/metrics")).status_code == 404


async def test_sweeper_actions_are_counted(settings, alice) -> None:
    """The sweeper removes a silent worker; the metrics of its app count it."""
    fast = settings.model_copy(
        update={"sweeper_interval_seconds": 0.1, "worker_timeout_seconds": 0.3}
    )
    swept = create_app(fast, auth_settings(), sweeper=True)
    async with running(swept), api_client(swept, alice) as client:
        resp = await client.post(f"{P}/workers")
        assert resp.status_code == 201, resp.text
        worker = resp.json()["id"]
        for _ in range(100):  # until the sweeper removed it (at most ~10 s)
            if (await client.get(f"{P}/workers")).json()["total"] == 0:
                break
            await asyncio.sleep(0.1)
        found = samples((await client.get("/metrics")).text)
    key = ("zndraw_joblib_sweeper_actions_total", (("action", "workers_removed"),))
    assert found[key] == 1
    assert worker not in str(found)


async def test_database_errors_are_counted(settings, anonymous, as_alice) -> None:
    """A table gone: the requests that meet the error are counted (answered 500 or 503)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    other = create_async_engine(settings.database_url)
    async with other.begin() as conn:
        for table in ("provider_read", "provider_result", "provider", "worker_job_link"):
            await conn.execute(text(f"DROP TABLE joblib_{table}"))  # those naming a worker
        await conn.execute(text("DROP TABLE joblib_worker"))
    await other.dispose()
    for _ in range(2):
        assert (await as_alice.get(f"{P}/workers")).status_code in (500, 503)
    resp = await anonymous.get("/metrics")  # answers, though it cannot read the state
    assert resp.status_code == 200
    found = samples(resp.text)
    assert found[("zndraw_joblib_database_errors_total", ())] == 3  # 2 requests, 1 scrape
