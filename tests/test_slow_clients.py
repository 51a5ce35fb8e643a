"""A real ``serve`` process against hostile clients: body limits, slow clients, shutdown."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer, database_url

TIMEOUTS = {
    "ZNDRAW_JOBLIB_HEADER_TIMEOUT_SECONDS": "1",
    "ZNDRAW_JOBLIB_BODY_TIMEOUT_SECONDS": "1",
    "ZNDRAW_JOBLIB_MAX_BODY_BYTES": "100000",
}
WAIT = 15  # seconds a test waits for the server to act (the timeouts above are 1 s)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A ``serve`` process on SQLite with short client timeouts (the database plays no
    part in these limits; one process serves the module's tests)."""
    tmp = tmp_path_factory.mktemp("slow")
    server = LiveServer(database_url("sqlite", tmp), tmp / "server.log", extra_env=TIMEOUTS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _connect(server: Any) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or ``WAIT`` seconds pass: fails)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data  # closed with unread input: what was sent before still counts
        if not chunk:
            return data
        data += chunk


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


class TestBodyLimits:
    def test_declared_huge_register_body_is_refused_unread(self, live: Any) -> None:
        with _connect(live) as sock:
            sock.sendall(
                b"POST /auth/register HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n"
            )
            answer = _read_all(sock)
        assert _status(answer) == 413, answer[:200]
        assert b"application/problem+json" in answer
        assert b"payload-too-large" in answer

    def test_streamed_register_body_is_cut_off(self, live: Any) -> None:
        def chunks() -> Any:
            for _ in range(100):
                yield b'{"email": "' + b"a" * 10_000

        resp = httpx.post(
            f"{live.url}/auth/register",
            content=chunks(),
            headers={"content-type": "application/json"},
            timeout=WAIT,
        )
        assert resp.status_code == 413, resp.text

    def test_queue_body_is_not_read_without_a_token(self, live: Any) -> None:
        with _connect(live) as sock:
            sock.sendall(
                b"POST /v1/joblib/rooms/lab/tasks/lab:modifiers:Rotate HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 50000\r\n\r\n"
            )  # the body never comes: the answer must not wait for it
            sock.settimeout(0.9)  # below the body timeout: the answer is the 401 itself
            answer = sock.recv(65536)
        assert _status(answer) == 401, answer[:200]


class TestSlowClients:
    def test_stalled_body_is_answered_408(self, live: Any) -> None:
        token = live.token("slow@example.com")
        with _connect(live) as sock:
            sock.sendall(
                b"POST /v1/joblib/rooms/lab/tasks/lab:modifiers:Rotate HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"payload"'
            )
            answer = _read_all(sock)
        assert _status(answer) == 408, answer[:300]
        assert b"request-timeout" in answer

    def test_stalled_register_body_is_answered_408(self, live: Any) -> None:
        with _connect(live) as sock:
            sock.sendall(
                b"POST /auth/register HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n0123456789"
            )
            answer = _read_all(sock)
        assert _status(answer) == 408, answer[:300]

    def test_half_sent_head_is_closed(self, live: Any) -> None:
        with _connect(live) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            answer = _read_all(sock)
        assert answer == b"" or _status(answer) == 408, answer[:300]

    def test_silent_connection_is_closed(self, live: Any) -> None:
        with _connect(live) as sock:
            answer = _read_all(sock)  # closed in time, not hanging (a recv timeout fails)
        assert answer == b"" or _status(answer) == 408, answer[:300]

    def test_huge_head_is_refused(self, live: Any) -> None:
        with _connect(live) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            for i in range(200):
                try:
                    sock.sendall(f"X-Filler-{i}: ".encode() + b"a" * 1000 + b"\r\n")
                except OSError:
                    break
            answer = _read_all(sock)
        assert _status(answer) in (400, 431), answer[:300]

    def test_normal_requests_still_work(self, live: Any) -> None:
        assert httpx.get(f"{live.url}/health", timeout=WAIT).status_code == 200


class TestShutdown:
    def test_ctrl_c_answers_waiting_long_polls_503(
        self, backend: str, tmp_path: Path, server_factory: Any
    ) -> None:
        live = server_factory(database_url(backend, tmp_path))
        token = live.admin_token()
        headers = {"Authorization": f"Bearer {token}"}
        base = f"{live.url}/v1/joblib"
        job = httpx.put(
            f"{base}/rooms/lab/jobs",
            json={"category": "modifiers", "name": "Rotate", "schema": {}},
            headers=headers,
            timeout=WAIT,
        ).json()
        pending = httpx.post(
            f"{base}/rooms/lab/tasks/lab:modifiers:Rotate", json={}, headers=headers
        ).json()
        answers: dict[str, httpx.Response] = {}

        def claim() -> None:
            answers["claim"] = httpx.post(
                f"{base}/tasks/claim",
                json={"worker_id": job["worker_id"]},
                headers={**headers, "Prefer": "wait=50"},
                timeout=WAIT * 4,
            )

        def read() -> None:
            answers["read"] = httpx.get(
                f"{base}/tasks/{pending['id']}",
                headers={**headers, "Prefer": "wait=50"},
                timeout=WAIT * 4,
            )

        first = httpx.post(
            f"{base}/tasks/claim", json={"worker_id": job["worker_id"]}, headers=headers
        )
        assert first.json()["task"]["id"] == pending["id"]
        threads = [threading.Thread(target=claim), threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # both requests are waiting now
        assert live.process is not None
        live.process.send_signal(signal.SIGINT)
        for thread in threads:
            thread.join(WAIT * 4)
        live.process.wait(WAIT)
        log = live.log_path.read_text()
        for name in ("claim", "read"):
            resp = answers[name]
            assert resp.status_code == 503, (name, resp.text)
            assert resp.headers["retry-after"]
            assert resp.headers["content-type"].startswith("application/problem+json")
        assert "Traceback" not in log, log
        assert "KeyboardInterrupt" not in log, log
