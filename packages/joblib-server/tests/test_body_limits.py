"""Every body of the app is limited, and the queue reads one only from a known caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

P = "/v1/joblib"


pytestmark = pytest.mark.backends("sqlite")  # the database plays no part in these limits


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A small body limit; the fast lane on and off."""
    return {"fast_lane": request.param, "max_body_bytes": 10_000}


class Stream:
    """A request body sent in chunks, remembering how much of it was asked for."""

    def __init__(self, chunks: int, size: int = 1_000) -> None:
        self.chunks, self.size, self.sent = chunks, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.sent += 1
            yield b" " * self.size


@pytest.mark.parametrize(
    "path", ["/auth/register", "/auth/jwt/login", f"{P}/rooms/lab/tasks/lab:modifiers:Rotate"]
)
async def test_declared_length_over_the_limit_is_413(anonymous, problem, path) -> None:
    body = Stream(1)
    resp = await anonymous.post(
        path,
        content=body,
        headers={"content-type": "application/json", "content-length": "200000000"},
    )
    problem(resp, 413, "payload-too-large")
    assert body.sent == 0


async def test_streamed_register_body_is_cut_off(anonymous) -> None:
    body = Stream(1_000)
    resp = await anonymous.post(
        "/auth/register", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413, resp.text
    assert body.sent < 20


@pytest.mark.parametrize("token", [None, "not-a-token"])
async def test_queue_body_is_not_read_without_a_valid_token(anonymous, problem, token) -> None:
    body = Stream(5)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    for path, method in [
        (f"{P}/rooms/lab/tasks/lab:modifiers:Rotate", "POST"),
        (f"{P}/tasks/claim", "POST"),
        (f"{P}/rooms/lab/jobs", "PUT"),
        (f"{P}/tasks/00000000-0000-0000-0000-000000000000", "PATCH"),
    ]:
        resp = await anonymous.request(method, path, content=body, headers=headers)
        problem(resp, 401, "unauthorized")
    assert body.sent == 0


async def test_a_known_caller_within_the_limit_is_served(as_admin, flow) -> None:
    await flow.job(as_admin)
    await flow.submit(as_admin, "lab:modifiers:Rotate", payload={"x": "y" * 100})


async def test_streamed_queue_body_over_the_limit_is_413(as_admin, flow, problem) -> None:
    await flow.job(as_admin)
    body = Stream(1_000)
    resp = await as_admin.post(
        f"{P}/rooms/lab/tasks/lab:modifiers:Rotate",
        content=body,
        headers={"content-type": "application/json"},
    )
    problem(resp, 413, "payload-too-large")
    assert body.sent < 20
