"""ZNDRAW_JOBLIB_LOG_FORMAT=json: one JSON line per event, with request ids, no payloads."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from zndraw_joblib_server.logging_setup import JsonFormatter


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"fast_lane": request.param, "log_format": "json"}


@pytest.fixture
def lines() -> Any:
    """Every record of the process, formatted as the JSON formatter writes it."""
    out: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.name.startswith("httpx"):  # the test's client, not the server
                out.append(self.format(record))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(old)


async def test_requests_are_logged_as_json_with_their_id(as_alice, flow, lines) -> None:
    job = await flow.job(as_alice)
    lines.clear()
    secret = "hunter2-payload-value"
    resp = await as_alice.post(
        f"/v1/joblib/rooms/lab/tasks/{job['full_name']}?note={secret}",
        json={"payload": {"password": secret}},
        headers={"X-Request-ID": "req-42.a_b"},
    )
    assert resp.status_code == 202, resp.text
    assert resp.headers["x-request-id"] == "req-42.a_b"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    [access] = [r for r in records if r["logger"] == "zndraw_joblib_server.access"]
    assert access["request_id"] == "req-42.a_b"
    assert access["method"] == "POST"
    assert access["path"] == f"/v1/joblib/rooms/lab/tasks/{job['full_name']}"
    assert access["status"] == 202
    assert access["level"] == "info"
    assert access["duration_ms"] >= 0
    assert not [
        line for line in lines if secret in line or as_alice.headers["authorization"][7:] in line
    ]


async def test_an_unusable_request_id_is_replaced(as_alice, lines) -> None:
    resp = await as_alice.get("/v1/joblib/workers", headers={"X-Request-ID": 'a b"}{'})
    rid = resp.headers["x-request-id"]
    assert len(rid) == 32
    assert int(rid, 16) >= 0
    assert json.loads(lines[-1])["request_id"] == rid


def test_formatter_keeps_extras_and_exceptions() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("once",), None)
        import sys

        record.exc_info = sys.exc_info()
    record.job = "lab:modifiers:A"
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed once"
    assert out["job"] == "lab:modifiers:A"
    assert "ValueError: bad" in out["exception"]
