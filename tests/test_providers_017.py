"""The provider behaviours zndraw-joblib 0.1.7's tests checked, against this server over HTTP.

Ported behaviour by behaviour (not the code): registration, listing, info, reads (504,
cache, coalescing, long-poll woken by an upload), deletion, uploads, worker cascade,
ownership and the category allow-list. What depended on Socket.IO itself is not here.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import LiveServer, database_url  # type: ignore[import-not-found]

from zndraw_joblib_core import request_hash

API = "/v1/joblib"
IMMEDIATE = {"Prefer": "wait=0"}
GLOBAL_READ = f"{API}/rooms/@global/providers/@global:filesystem:local"


def _client(server: LiveServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


@pytest.fixture
def admin(server: LiveServer) -> Iterator[httpx.Client]:
    with _client(server, server.admin_token()) as client:
        yield client


@pytest.fixture
def users(server: LiveServer) -> Iterator[Callable[[str], httpx.Client]]:
    made: list[httpx.Client] = []

    def user(name: str) -> httpx.Client:
        made.append(_client(server, server.token(f"{name}@example.com")))
        return made[-1]

    yield user
    for client in made:
        client.close()


def _register(client: httpx.Client, room: str = "@global", **overrides: Any) -> httpx.Response:
    body = {
        "category": "filesystem",
        "name": "local",
        "schema": {"path": {"type": "string", "default": "/"}},
        **overrides,
    }
    return client.put(f"{API}/rooms/{room}/providers", json=body)


def test_registration(admin: httpx.Client) -> None:
    first = _register(admin)
    assert first.status_code == 201
    data = first.json()
    assert (data["room_id"], data["full_name"]) == ("@global", "@global:filesystem:local")
    workers = [w["id"] for w in admin.get(f"{API}/workers").json()["items"]]
    assert data["worker_id"] in workers  # created for the registration
    again = _register(admin)
    assert again.status_code == 200
    assert again.json()["id"] == data["id"]
    assert _register(admin, name="s3-bucket").json()["id"] != data["id"]
    assert _register(admin, room="room-42").json()["id"] != data["id"]
    worker = admin.post(f"{API}/workers").json()["id"]
    assert _register(admin, name="other", worker_id=worker).json()["worker_id"] == worker


def test_listing_and_info(admin: httpx.Client) -> None:
    assert admin.get(f"{API}/rooms/@global/providers").json()["total"] == 0
    _register(admin)
    _register(admin, room="room-42", name="scoped")
    assert admin.get(f"{API}/rooms/@global/providers").json()["total"] == 1
    assert admin.get(f"{API}/rooms/room-42/providers").json()["total"] == 2
    assert admin.get(f"{API}/rooms/room-99/providers").json()["total"] == 1
    info = admin.get(f"{GLOBAL_READ}/info")
    assert info.status_code == 200
    assert info.json()["schema"] == {"path": {"type": "string", "default": "/"}}
    assert (
        admin.get(f"{API}/rooms/@global/providers/@global:filesystem:nope/info").status_code == 404
    )
    scoped = "room-42:filesystem:scoped/info"
    assert admin.get(f"{API}/rooms/room-42/providers/{scoped}").status_code == 200
    assert admin.get(f"{API}/rooms/room-99/providers/{scoped}").status_code == 404


def test_reads(admin: httpx.Client) -> None:
    provider_id = _register(admin).json()["id"]
    timeout = admin.get(GLOBAL_READ, params={"path": "/data"}, headers=IMMEDIATE)
    assert timeout.status_code == 504
    assert timeout.headers["content-type"] == "application/problem+json"
    assert "retry-after" in timeout.headers
    # in flight: a second read does not dispatch again and times out too
    assert admin.get(GLOBAL_READ, params={"path": "/data"}, headers=IMMEDIATE).status_code == 504
    missing = f"{API}/rooms/@global/providers/@global:filesystem:nope"
    assert admin.get(missing, params={"path": "/d"}, headers=IMMEDIATE).status_code == 404
    # an upload first, then the read is a cache hit (without Preference-Applied)
    rhash = request_hash({"path": "/x"})
    upload = admin.post(
        f"{API}/providers/{provider_id}/results",
        content=b'[{"name": "file.xyz", "size": 42}]',
        headers={"X-Request-Hash": rhash},
    )
    assert upload.status_code == 204
    hit = admin.get(GLOBAL_READ, params={"path": "/x"}, headers={"Prefer": "wait=5"})
    assert hit.status_code == 200
    assert hit.json() == [{"name": "file.xyz", "size": 42}]
    assert "preference-applied" not in hit.headers


def test_long_poll_woken_by_upload(admin: httpx.Client) -> None:
    provider = _register(admin, schema={}).json()
    provider_id, worker = provider["id"], provider["worker_id"]
    answers: list[httpx.Response] = []
    reading = threading.Thread(
        target=lambda: answers.append(
            admin.get(GLOBAL_READ, params={"path": "/data"}, headers={"Prefer": "wait=30"})
        )
    )
    reading.start()
    reads: list[Any] = []
    for _ in range(20):  # the read is handed to the worker's claim once it is in flight
        claim = admin.post(
            f"{API}/tasks/claim",
            json={"worker_id": worker, "providers": True},
            headers={"Prefer": "wait=5"},
        )
        reads = claim.json()["provider_reads"]
        if reads:
            break
    admin.post(
        f"{API}/providers/{provider_id}/results",
        content=b'{"files": ["a.xyz"]}',
        headers={"X-Request-Hash": reads[0]["request_hash"]},
    )
    reading.join(60)
    assert answers[0].status_code == 200
    assert answers[0].json() == {"files": ["a.xyz"]}
    assert "preference-applied" in answers[0].headers


def test_deletion_and_worker_cascade(admin: httpx.Client) -> None:
    provider = _register(admin).json()
    assert admin.delete(f"{API}/providers/{provider['id']}").status_code == 204
    assert admin.get(f"{API}/rooms/@global/providers").json()["total"] == 0
    assert admin.delete(f"{API}/providers/{uuid.uuid4()}").status_code == 404
    unknown = admin.post(
        f"{API}/providers/{uuid.uuid4()}/results",
        content=b"{}",
        headers={"X-Request-Hash": "abc"},
    )
    assert unknown.status_code == 404
    worker = _register(admin).json()["worker_id"]
    assert admin.get(f"{API}/rooms/@global/providers").json()["total"] == 1
    assert admin.delete(f"{API}/workers/{worker}").status_code == 204
    assert admin.get(f"{API}/rooms/@global/providers").json()["total"] == 0


def test_ownership(admin: httpx.Client, users: Callable[[str], httpx.Client]) -> None:
    alice, bob = users("alice"), users("bob")
    assert _register(alice).status_code == 403  # @global needs a superuser
    created = _register(alice, room="room-42", schema={})
    assert created.status_code == 201
    provider_id = created.json()["id"]
    assert bob.delete(f"{API}/providers/{provider_id}").status_code == 403
    foreign = bob.post(
        f"{API}/providers/{provider_id}/results",
        content=b"{}",
        headers={"X-Request-Hash": "abc"},
    )
    assert foreign.status_code == 403
    assert _register(bob, room="room-42", schema={}).status_code == 403
    assert _register(admin, room="room-42", schema={}).status_code == 200
    assert _register(admin, name="global-ok").status_code == 201


@pytest.mark.parametrize("allowed", [["frames"], ["filesystem"]])
def test_category_allow_list(
    backend: str, tmp_path: Any, server_factory: Callable[..., LiveServer], allowed: list[str]
) -> None:
    import json

    live = server_factory(
        database_url(backend, tmp_path),
        {"ZNDRAW_JOBLIB_ALLOWED_PROVIDER_CATEGORIES": json.dumps(allowed)},
    )
    with _client(live, live.admin_token()) as admin:
        answer = _register(admin)
        assert answer.status_code == (201 if "filesystem" in allowed else 400)
