"""A first end-to-end pass over the main flow."""

from __future__ import annotations

import httpx


async def test_submit_claim_complete(as_alice: httpx.AsyncClient, register) -> None:
    job = await register(room="lab", client=as_alice)
    worker = job["worker_id"]
    sub = await as_alice.post(f"/v1/joblib/rooms/lab/tasks/{job['full_name']}", json={})
    assert sub.status_code == 202
    claim = await as_alice.post("/v1/joblib/tasks/claim", json={"worker_id": worker})
    task = claim.json()["task"]
    assert task["id"] == sub.json()["id"]
    for status in ("running", "completed"):
        r = await as_alice.patch(
            f"/v1/joblib/tasks/{task['id']}", json={"status": status, "worker_id": worker}
        )
        assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
