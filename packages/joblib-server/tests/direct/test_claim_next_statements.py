"""An update's ``claim_next`` looks for work once: a wait goes on from that look."""

from __future__ import annotations

P = "/v1/joblib"


async def _complete(as_alice, flow, statements, prefer: dict[str, str]) -> int:
    _job, worker, task = await flow.claimed(as_alice, running=True)
    statements.clear()
    resp = await as_alice.patch(
        f"{P}/tasks/{task['id']}",
        json={"status": "completed", "worker_id": worker, "claim_next": {"worker_id": worker}},
        headers=prefer,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["claimed"]["tasks"] == []
    return len(statements.on())


async def test_a_waiting_claim_next_does_not_claim_twice(as_alice, flow, statements) -> None:
    """With ``Prefer: wait`` and nothing to claim, the only extra statement is the look
    for the next delayed task; the claim itself is not made again before the wait."""
    at_once = await _complete(as_alice, flow, statements, {})
    waited = await _complete(as_alice, flow, statements, {"Prefer": "wait=0.2"})
    assert waited == at_once + 1, statements
