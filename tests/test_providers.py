"""Providers over real HTTP: dispatch once, cache, long-poll, errors, workers that vanish.

The provider's "client" is either raw HTTP (a claim with ``providers: true`` and a result
upload), to see exactly what is dispatched, or the SDK in a worker process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (  # type: ignore[import-not-found]
    SECRET,
    LiveServer,
    database_url,
    free_port,
)

from zndraw_joblib_core import request_hash

API = "/v1/joblib"
DRIVERS = Path(__file__).parent / "drivers"


def _client(server: LiveServer | str, token: str) -> httpx.Client:
    url = server if isinstance(server, str) else server.url
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _register(
    client: httpx.Client, room: str = "r1", name: str = "p", **fields: Any
) -> dict[str, Any]:
    body = {"category": "demo", "name": name, "schema": {}, **fields}
    resp = client.put(f"{API}/rooms/{room}/providers", json=body)
    assert resp.status_code in (200, 201), resp.text
    return dict(resp.json())


def _claim_reads(client: httpx.Client, worker_id: str, wait: int = 0) -> list[dict[str, Any]]:
    headers = {"Prefer": f"wait={wait}"} if wait else {}
    resp = client.post(
        f"{API}/tasks/claim",
        json={"worker_id": worker_id, "providers": True},
        headers=headers,
        timeout=wait + 30,
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["provider_reads"])


def _upload(
    client: httpx.Client, provider_id: str, rhash: str, body: bytes, *, error: bool = False
) -> None:
    headers = {"X-Request-Hash": rhash}
    if error:
        headers["X-Result-Status"] = "error"
    resp = client.post(f"{API}/providers/{provider_id}/results", content=body, headers=headers)
    assert resp.status_code == 204, resp.text


class _Reader(threading.Thread):
    """One reader in its own thread."""

    def __init__(self, client: httpx.Client, path: str, wait: int = 30) -> None:
        super().__init__(daemon=True)
        self.client, self.path, self.wait = client, path, wait
        self.response: httpx.Response | None = None

    def run(self) -> None:
        self.response = self.client.get(
            self.path, headers={"Prefer": f"wait={self.wait}"}, timeout=self.wait + 30
        )


def _poll(check: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def owner(server: LiveServer) -> Iterator[httpx.Client]:
    with _client(server, server.token("owner@example.com")) as client:
        yield client


@pytest.fixture
def reader(server: LiveServer) -> Iterator[httpx.Client]:
    with _client(server, server.token("reader@example.com")) as client:
        yield client


def test_two_readers_one_dispatch_then_cache_hit(
    owner: httpx.Client, reader: httpx.Client
) -> None:
    provider = _register(owner)
    path = f"{API}/rooms/r1/providers/r1:demo:p?path=/data&depth=2"
    rhash = request_hash({"path": "/data", "depth": "2"})
    readers = [_Reader(reader, path), _Reader(reader, path)]
    for r in readers:
        r.start()
    reads = _poll(lambda: _claim_reads(owner, provider["worker_id"], wait=5))
    assert [(r["request_hash"], r["params"]) for r in reads] == [
        (rhash, {"path": "/data", "depth": "2"})
    ]
    assert reads[0]["provider_name"] == "r1:demo:p"
    _upload(owner, provider["id"], rhash, b'{"files": ["a", "b"]}')
    for r in readers:
        r.join(60)
        assert r.response is not None
        assert r.response.status_code == 200
        assert r.response.json() == {"files": ["a", "b"]}
        assert r.response.headers["preference-applied"] == "wait=30"
    # Both readers waited on one dispatch; nothing more is handed out.
    assert _claim_reads(owner, provider["worker_id"]) == []
    # A cache hit answers without dispatching.
    hit = reader.get(path)
    assert hit.status_code == 200
    assert hit.json() == {"files": ["a", "b"]}
    assert "preference-applied" not in hit.headers
    assert _claim_reads(owner, provider["worker_id"]) == []


def test_timeout_then_success_on_retry(owner: httpx.Client, reader: httpx.Client) -> None:
    provider = _register(owner)
    path = f"{API}/rooms/r1/providers/r1:demo:p?x=1"
    late = reader.get(path, headers={"Prefer": "wait=0"})
    assert late.status_code == 504
    assert late.headers["retry-after"] == "2"
    assert late.json()["type"] == "/v1/problems/provider-timeout"
    (read,) = _claim_reads(owner, provider["worker_id"])
    _upload(owner, provider["id"], read["request_hash"], b"[1, 2, 3]")
    again = reader.get(path, headers={"Prefer": "wait=0"})
    assert again.status_code == 200
    assert again.json() == [1, 2, 3]
    assert "preference-applied" not in again.headers  # a cache hit: nothing waited


def test_binary_result(owner: httpx.Client, reader: httpx.Client) -> None:
    provider = _register(owner, content_type="application/octet-stream")
    reading = _Reader(reader, f"{API}/rooms/r1/providers/r1:demo:p?frame=7")
    reading.start()
    (read,) = _poll(lambda: _claim_reads(owner, provider["worker_id"], wait=5))
    payload = bytes(range(256)) * 4
    _upload(owner, provider["id"], read["request_hash"], payload)
    reading.join(60)
    assert reading.response is not None
    assert reading.response.status_code == 200
    assert reading.response.headers["content-type"] == "application/octet-stream"
    assert reading.response.content == payload


def test_error_result_is_cached(owner: httpx.Client, reader: httpx.Client) -> None:
    provider = _register(owner)
    reading = _Reader(reader, f"{API}/rooms/r1/providers/r1:demo:p?path=/missing")
    reading.start()
    (read,) = _poll(lambda: _claim_reads(owner, provider["worker_id"], wait=5))
    problem = b'{"type": "about:blank", "title": "Not there", "status": 404, "detail": "gone"}'
    _upload(owner, provider["id"], read["request_hash"], problem, error=True)
    reading.join(60)
    assert reading.response is not None
    assert reading.response.status_code == 404
    assert reading.response.headers["content-type"] == "application/problem+json"
    assert reading.response.json()["detail"] == "gone"
    again = reader.get(f"{API}/rooms/r1/providers/r1:demo:p?path=/missing")
    assert again.status_code == 404
    assert again.json()["title"] == "Not there"
    assert _claim_reads(owner, provider["worker_id"]) == []


def test_registration_listing_and_ownership(
    server: LiveServer, owner: httpx.Client, reader: httpx.Client
) -> None:
    first = owner.put(
        f"{API}/rooms/r1/providers", json={"category": "demo", "name": "p", "schema": {}}
    )
    assert first.status_code == 201
    again = owner.put(
        f"{API}/rooms/r1/providers",
        json={"category": "demo", "name": "p", "worker_id": first.json()["worker_id"]},
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    stolen = reader.put(f"{API}/rooms/r1/providers", json={"category": "demo", "name": "p"})
    assert stolen.status_code == 403
    refused = owner.put(f"{API}/rooms/@global/providers", json={"category": "d", "name": "g"})
    assert refused.status_code == 403
    with _client(server, server.admin_token()) as admin:
        _register(admin, room="@global", name="g")
    listing = reader.get(f"{API}/rooms/r1/providers").json()
    assert {p["full_name"] for p in listing["items"]} == {"r1:demo:p", "@global:demo:g"}
    assert listing["total"] == 2
    other = reader.get(f"{API}/rooms/r2/providers").json()
    assert [p["full_name"] for p in other["items"]] == ["@global:demo:g"]
    info = reader.get(f"{API}/rooms/r1/providers/r1:demo:p/info")
    assert info.status_code == 200
    assert info.json()["content_type"] == "application/json"
    hidden = reader.get(f"{API}/rooms/r2/providers/r1:demo:p/info")
    assert hidden.json()["type"] == "/v1/problems/provider-not-found"
    assert reader.delete(f"{API}/providers/{first.json()['id']}").status_code == 403
    assert owner.delete(f"{API}/providers/{first.json()['id']}").status_code == 204
    assert reader.get(f"{API}/rooms/r1/providers").json()["total"] == 1


def test_parameters_are_validated(owner: httpx.Client, reader: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"index": {"type": "integer", "minimum": 0}, "path": {"type": "string"}},
        "required": ["index"],
        "additionalProperties": False,
    }
    _register(owner, schema=schema)
    path = f"{API}/rooms/r1/providers/r1:demo:p"
    bad = reader.get(f"{path}?index=-1", headers={"Prefer": "wait=0"})
    assert bad.status_code == 422
    assert bad.json()["type"] == "/v1/problems/invalid-payload"
    missing = reader.get(f"{path}?path=x", headers={"Prefer": "wait=0"})
    assert missing.status_code == 422
    ok = reader.get(f"{path}?index=3&path=007", headers={"Prefer": "wait=0"})
    assert ok.status_code == 504  # valid: dispatched, nobody answered yet
    bad_schema = owner.put(
        f"{API}/rooms/r1/providers",
        json={"category": "demo", "name": "q", "schema": {"$ref": "http://example.com/x"}},
    )
    assert bad_schema.status_code == 422
    assert bad_schema.json()["type"] == "/v1/problems/invalid-schema"


def test_only_the_owner_uploads(owner: httpx.Client, reader: httpx.Client) -> None:
    provider = _register(owner)
    rhash = request_hash({})
    resp = reader.post(
        f"{API}/providers/{provider['id']}/results",
        content=b"{}",
        headers={"X-Request-Hash": rhash},
    )
    assert resp.status_code == 403
    no_hash = owner.post(f"{API}/providers/{provider['id']}/results", content=b"{}")
    assert no_hash.status_code == 422


def _provider_worker(server_url: str, token: str, room: str, name: str, tmp_path: Path) -> Any:
    ready = tmp_path / f"ready-{name}"
    log = (tmp_path / f"provider-{name}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, str(DRIVERS / "provider_worker.py"), server_url, room, name, str(ready)],
        env={**os.environ, "ZNDRAW_JOBLIB_TOKEN": token},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _poll(lambda: ready.exists() and ready.read_text(), 120)
    return proc


def test_sdk_provider_end_to_end(server: LiveServer, tmp_path: Path) -> None:
    from zndraw_joblib_client import JobManager
    from zndraw_joblib_core import ProblemError

    token = server.token("sdk@example.com")
    proc = _provider_worker(server.url, token, "r1", "echo", tmp_path)
    try:
        with JobManager(server.url, token=server.token("sdk-reader@example.com")) as manager:
            answer = manager.read_provider("r1", "r1:demo:echo", {"text": "hi"}, timeout=60)
            assert answer == {"echo": "hi", "pid": proc.pid, "handler": "h"}
            with pytest.raises(ProblemError) as failed:
                manager.read_provider("r1", "r1:demo:echo", {"text": "x", "fail": True})
            assert failed.value.to_problem().type == "/v1/problems/provider-read-failed"
            assert "asked to fail" in str(failed.value.detail)
    finally:
        proc.kill()
        proc.wait(10)


def test_killed_worker_takes_its_provider_and_answers_readers(
    short_lease_server: LiveServer, tmp_path: Path
) -> None:
    token = short_lease_server.token("killed@example.com")
    proc = _provider_worker(short_lease_server.url, token, "r1", "mortal", tmp_path)
    with _client(short_lease_server, short_lease_server.token("waiting@example.com")) as reader:
        assert reader.get(f"{API}/rooms/r1/providers").json()["total"] == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # A read dispatched to the dead worker waits until the sweeper removes it.
        waiting = _Reader(reader, f"{API}/rooms/r1/providers/r1:demo:mortal?text=x", wait=30)
        waiting.start()
        waiting.join(60)
        assert waiting.response is not None
        assert waiting.response.status_code == 404, waiting.response.text
        assert waiting.response.json()["type"] == "/v1/problems/provider-not-found"
        assert reader.get(f"{API}/rooms/r1/providers").json()["total"] == 0


def test_read_on_one_process_answered_through_another(
    postgres_url: str, server_factory: Callable[..., LiveServer]
) -> None:
    first = server_factory(postgres_url)
    second = server_factory(postgres_url)
    with (
        _client(first, first.token("mp-owner@example.com")) as owner_a,
        _client(second, second.token("mp-owner@example.com")) as owner_b,
        _client(first, first.token("mp-reader@example.com")) as reader,
    ):
        provider = _register(owner_a)
        reading = _Reader(reader, f"{API}/rooms/r1/providers/r1:demo:p?k=v")
        reading.start()
        # The worker's claim waits on the other process; the read there wakes it.
        (read,) = _poll(lambda: _claim_reads(owner_b, provider["worker_id"], wait=10))
        _upload(owner_b, provider["id"], read["request_hash"], b'"from b"')
        reading.join(60)
        assert reading.response is not None
        assert reading.response.status_code == 200
        assert reading.response.json() == "from b"


class _ProviderHost:
    """tests/drivers/provider_host.py (a host with an @internal provider) under uvicorn."""

    def __init__(self, url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ZNDRAW_JOBLIB_DATABASE_URL": url, "ZNDRAW_AUTH_SECRET_KEY": SECRET}
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--app-dir", str(DRIVERS)),
                *("provider_host:app", "--port", str(self.port), "--log-level", "warning"),
            ],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:])
            try:
                return httpx.get(f"{self.url}/v1/joblib/workers", timeout=1).status_code > 0
            except httpx.HTTPError:
                return False

        _poll(up, 120)

    def token(self, email: str) -> str:
        httpx.post(f"{self.url}/auth/register", json={"email": email, "password": "pw123456"})
        resp = httpx.post(
            f"{self.url}/auth/jwt/login", data={"username": email, "password": "pw123456"}
        )
        return str(resp.json()["access_token"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


def test_internal_provider_served_in_the_server(backend: str, tmp_path: Path) -> None:
    host = _ProviderHost(database_url(backend, tmp_path), tmp_path / "host.log")
    try:
        with _client(host.url, host.token("internal@example.com")) as client:
            listing = client.get(f"{API}/rooms/any-room/providers").json()
            assert [p["full_name"] for p in listing["items"]] == ["@internal:filesystem:files"]
            assert listing["items"][0]["worker_id"] is None
            path = f"{API}/rooms/any-room/providers/@internal:filesystem:files"
            answer = client.get(f"{path}?path=docs")
            assert answer.status_code == 200
            assert answer.json() == {"listing": "docs", "calls": 1}
            cached = client.get(f"{path}?path=docs")
            assert cached.json() == {"listing": "docs", "calls": 1}
            failed = client.get(f"{path}?path=boom")
            assert failed.status_code == 502
            assert failed.json()["type"] == "/v1/problems/provider-read-failed"
            refused = client.put(
                f"{API}/rooms/@internal/providers", json={"category": "x", "name": "y"}
            )
            assert refused.status_code == 403
    finally:
        host.stop()


def test_waiting_read_follows_a_new_registration(
    owner: httpx.Client, reader: httpx.Client
) -> None:
    old = _register(owner)
    reading = _Reader(reader, f"{API}/rooms/r1/providers/r1:demo:p?q=1")
    reading.start()
    _poll(lambda: _claim_reads(owner, old["worker_id"], wait=5))  # dispatched to the old one
    new = _register(owner)  # the client came back with a new worker
    assert new["id"] == old["id"]
    assert new["worker_id"] != old["worker_id"]
    (read,) = _poll(lambda: _claim_reads(owner, new["worker_id"], wait=5))
    _upload(owner, new["id"], read["request_hash"], b'"moved"')
    reading.join(60)
    assert reading.response is not None
    assert reading.response.json() == "moved"


@pytest.mark.parametrize("cache", ["memory", "database"])
def test_cache_backends_dispatch_once_and_expire(
    backend: str, tmp_path: Path, server_factory: Callable[..., LiveServer], cache: str
) -> None:
    live = server_factory(
        database_url(backend, tmp_path),
        {
            "ZNDRAW_JOBLIB_PROVIDER_CACHE": cache,
            "ZNDRAW_JOBLIB_PROVIDER_RESULT_TTL_SECONDS": "1",
        },
    )
    with (
        _client(live, live.token("cache-owner@example.com")) as owner,
        _client(live, live.token("cache-reader@example.com")) as reader,
    ):
        provider = _register(owner, content_type="image/png")
        path = f"{API}/rooms/r1/providers/r1:demo:p?frame=1"
        readers = [_Reader(reader, path), _Reader(reader, path)]
        for r in readers:
            r.start()
        (read,) = _poll(lambda: _claim_reads(owner, provider["worker_id"], wait=5))
        _upload(owner, provider["id"], read["request_hash"], b"\x89PNG-bytes")
        for r in readers:
            r.join(60)
            assert r.response is not None
            assert r.response.content == b"\x89PNG-bytes"
            assert r.response.headers["content-type"] == "image/png"
        assert _claim_reads(owner, provider["worker_id"]) == []

        # Once the answer expired, a read goes to the worker again.
        def dispatched_again() -> list[dict[str, Any]]:
            reader.get(path, headers={"Prefer": "wait=0"})
            return _claim_reads(owner, provider["worker_id"])

        again = _poll(dispatched_again)
        assert [r["request_hash"] for r in again] == [read["request_hash"]]
