"""Two queues in one process keep their own hints and caches (nothing process-global)."""

from __future__ import annotations

import uuid

import pytest

from zndraw_joblib_server import JobLibSettings, create_app
from zndraw_joblib_server.testing import api_client, running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

pytestmark = pytest.mark.conformance  # run in every mode by the conformance session

P = "/v1/joblib"


async def test_two_apps_in_one_process_share_no_hints_or_names(
    app, settings: JobLibSettings, alice, as_alice, flow, backend
) -> None:
    other = create_app(settings, auth_settings(), sweeper=False)
    async with running(other):
        ours = app.state.joblib_queue.database.caches
        theirs = other.state.joblib_queue.database.caches
        assert ours is not theirs

        job = await flow.job(as_alice)
        task = await flow.submit(as_alice, job["full_name"])
        for _ in range(2):  # the second claim goes by the worker's hint on PostgreSQL
            await flow.claim(as_alice, job["worker_id"])
        assert job["id"] in {str(k) for k in ours.job_names}
        if backend == "postgres":  # hints are kept for claims outside a transaction only
            assert set(ours.claim_hints) == {uuid.UUID(job["worker_id"])}
        assert not theirs.job_names
        assert not theirs.claim_hints

        # The other app reads the same database and names the job from its own look-up.
        async with api_client(other, alice) as client:
            resp = await client.get(f"{P}/tasks/{task['id']}")
        assert resp.status_code == 200
        assert resp.json()["job_name"] == job["full_name"]
        assert job["id"] in {str(k) for k in theirs.job_names}
        assert not theirs.claim_hints
