"""The worker loop's lean transport (``http.client``) against a scripted HTTP/1.1 server.

Keep-alive and reconnecting, retries, token refresh, timeouts, and errors mapped to the same
exceptions as the httpx transport's; which transport a ``JobManager``'s worker loop uses.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from zndraw_joblib_client import (
    ConnectionFailed,
    Forbidden,
    JobManager,
    LeaseLost,
    NotFound,
    ProblemError,
    RequestValidationFailed,
    RetryPolicy,
    ServiceUnavailable,
    Unauthorized,
    WorkerNotFound,
    _lean,
)
from zndraw_joblib_client._http import HttpSession
from zndraw_joblib_client._lean import LeanSession


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    close: bool = False  # close the connection after answering, without saying so
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int


class Scripted:
    """An HTTP/1.1 server answering from a script; counts the connections it accepted."""

    def __init__(self) -> None:
        self.replies: deque[Reply | Callable[[Seen], Reply]] = deque()
        self.seen: list[Seen] = []
        self.connections = 0
        self.hung_up = threading.Event()  # set when the server has closed a connection
        self.lock = threading.Lock()
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with script.lock:
                    script.connections += 1
                    self.number = script.connections

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    self.number,
                )
                with script.lock:
                    script.seen.append(seen)
                    step = script.replies.popleft() if script.replies else Reply()
                reply = step(seen) if callable(step) else step
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                self.wfile.flush()
                if reply.close:
                    self.close_connection = True

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and hung up is expected here

            def shutdown_request(self, request: Any) -> None:
                super().shutdown_request(request)
                script.hung_up.set()

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, *replies: Reply | Callable[[Seen], Reply]) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


@dataclass
class Sleeps:
    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def lean(url: str, sleeps: Sleeps | None = None, **kwargs: Any) -> LeanSession:
    kwargs.setdefault("token", lambda: "tok")
    return LeanSession(
        url,
        timeout=5.0,
        retry=RetryPolicy(attempts=3, base_delay=0.01, jitter=0),
        sleep=sleeps or Sleeps(),
        **kwargs,
    )


def problem_body(status: int, slug: str, detail: str = "", **extra: Any) -> bytes:
    body = {"type": f"/v1/problems/{slug}", "title": slug, "status": status, "detail": detail}
    return json.dumps({**body, **extra}).encode()


# -- keep-alive and reconnecting ----------------------------------------------------------


def test_requests_share_one_kept_alive_connection(scripted: Scripted) -> None:
    session = lean(scripted.url, headers=lambda: {"Lock-Token": "L"})
    scripted.answer(Reply(body=b'{"n": 1}'), Reply(body=b'{"n": 2}'))

    first = session.request("POST", "/a", content=b"{}", headers={"X-One": "1"})
    second = session.request("PATCH", "/b", idempotent=True)

    assert (first.json(), second.json()) == ({"n": 1}, {"n": 2})
    assert scripted.connections == 1
    sent = scripted.seen[0]
    assert (sent.method, sent.path, sent.body) == ("POST", "/a", b"{}")
    assert sent.headers["authorization"] == "Bearer tok"
    assert (sent.headers["lock-token"], sent.headers["x-one"]) == ("L", "1")
    session.close()


def test_a_connection_the_server_closed_is_replaced(scripted: Scripted) -> None:
    session = lean(scripted.url)
    scripted.answer(Reply(close=True), Reply(body=b'{"again": true}'))

    session.request("POST", "/claim", content=b"{}", retry_transient=False)
    assert scripted.hung_up.wait(5)
    # not idempotent and sent once: the new connection is opened before it is sent
    answer = session.request("POST", "/claim", content=b"{}", retry_transient=False)

    assert answer.json() == {"again": True}
    assert [s.connection for s in scripted.seen] == [1, 2]


def test_a_connection_idle_too_long_is_replaced_before_the_server_drops_it(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_lean, "_IDLE_EXPIRY", 0.05)
    session = lean(scripted.url)
    session.request("GET", "/a")
    session.request("GET", "/b")  # at once: reused
    time.sleep(0.1)
    session.request("GET", "/c")  # after the expiry: a new connection
    assert [s.connection for s in scripted.seen] == [1, 1, 2]


def test_the_base_url_path_prefixes_every_request(scripted: Scripted) -> None:
    session = lean(scripted.url + "/host/")
    session.request("GET", "/v1/joblib/workers")
    assert scripted.seen[0].path == "/host/v1/joblib/workers"


def test_a_read_timeout_fails_the_request_and_the_next_one_reconnects(
    scripted: Scripted,
) -> None:
    session = lean(scripted.url)
    scripted.answer(Reply(delay=1.5), Reply(body=b'{"ok": 1}'))

    with pytest.raises(ConnectionFailed) as info:
        session.request("PATCH", "/poll", headers={"Prefer": "wait=1"}, timeout=0.2,
                        retry_transient=False)  # fmt: skip
    assert isinstance(info.value.__cause__, TimeoutError)

    assert session.request("GET", "/next").json() == {"ok": 1}
    assert scripted.seen[-1].connection == 2


def test_an_unreachable_server_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    session = lean(f"http://127.0.0.1:{port}", sleeps)

    with pytest.raises(ConnectionFailed):
        # a POST is retried too: nothing of it was sent
        session.request("POST", "/workers", content=b"{}")
    assert len(sleeps.waits) == 2  # three attempts


# -- retries and auth ---------------------------------------------------------------------


def test_503_with_retry_after_is_retried_after_the_asked_delay(scripted: Scripted) -> None:
    sleeps = Sleeps()
    session = lean(scripted.url, sleeps)
    busy = Reply(503, problem_body(503, "service-unavailable"), {"Retry-After": "7"})
    scripted.answer(busy, Reply(body=b'{"alive": true}'))

    assert session.request("PATCH", "/workers/w", idempotent=True).json() == {"alive": True}
    assert sleeps.waits == [7.0]

    scripted.answer(busy)  # the exchange is sent once: the worker loop backs off itself
    with pytest.raises(ServiceUnavailable) as info:
        session.request("PATCH", "/tasks/t", content=b"{}", retry_transient=False)
    assert info.value.headers["retry-after"] == "7"
    assert sleeps.waits == [7.0]


def test_401_refreshes_the_token_once_and_resends(scripted: Scripted) -> None:
    token = ["old"]
    refreshed: list[int] = []

    def refresh() -> bool:
        refreshed.append(1)
        token[0] = "new"
        return True

    def by_token(seen: Seen) -> Reply:
        if seen.headers["authorization"] == "Bearer new":
            return Reply(body=b'{"ok": true}')
        return Reply(401, b'{"detail": "Unauthorized"}')

    session = lean(scripted.url, token=lambda: token[0], on_unauthorized=refresh)
    scripted.answer(by_token, by_token)

    answer = session.request("POST", "/tasks/claim", content=b"{}", retry_transient=False)

    assert answer.json() == {"ok": True}
    assert refreshed == [1]
    assert [s.headers["authorization"] for s in scripted.seen] == ["Bearer old", "Bearer new"]

    refused = Reply(401, b'{"detail": "Unauthorized"}')
    scripted.answer(refused, refused, refused)
    with pytest.raises(Unauthorized):  # refreshed once per request, then it is refused
        session.request("GET", "/x", retry_transient=False)
    assert refreshed == [1, 1]
    assert len(scripted.seen) == 4


# -- errors: the same exceptions as the httpx transport -----------------------------------

PROBLEMS = [
    (409, {"Content-Type": "application/problem+json"}, problem_body(409, "lease-lost", "gone")),
    (
        404,
        {"Content-Type": "application/problem+json"},
        problem_body(404, "worker-not-found", "no worker"),
    ),
    (403, {"Content-Type": "application/json"}, b'{"detail": "Forbidden"}'),
    (422, {"Content-Type": "application/json"}, b'{"detail": [{"loc": ["body"], "msg": "x"}]}'),
    (404, {"Content-Type": "text/plain"}, b"Not Found"),
    (500, {"Content-Type": "text/plain"}, b"Internal Server Error"),
    (418, {"Content-Type": "application/json"}, b"{}"),
]


@pytest.mark.parametrize(("status", "headers", "body"), PROBLEMS)
def test_error_answers_raise_what_the_httpx_transport_raises(
    scripted: Scripted, status: int, headers: dict[str, str], body: bytes
) -> None:
    raised: list[ProblemError] = []
    with httpx.Client(base_url=scripted.url) as client:
        senders = [
            lean(scripted.url),
            HttpSession(client, token=lambda: "tok", sleep=Sleeps()),
        ]
        for sender in senders:
            scripted.answer(Reply(status, body, headers))
            with pytest.raises(ProblemError) as info:
                sender.request("POST", "/tasks/claim", content=b"{}", retry_transient=False)
            raised.append(info.value)
    lean_error, httpx_error = raised
    assert type(lean_error) is type(httpx_error)
    assert lean_error.to_problem() == httpx_error.to_problem()
    assert lean_error.headers["content-type"] == httpx_error.headers["content-type"]


def test_problem_types_come_through(scripted: Scripted) -> None:
    session = lean(scripted.url)
    expected = [LeaseLost, WorkerNotFound, Forbidden, RequestValidationFailed, NotFound]
    for (status, headers, body), cls in zip(PROBLEMS, expected, strict=False):
        scripted.answer(Reply(status, body, headers))
        with pytest.raises(cls):
            session.request("POST", "/x", content=b"{}", retry_transient=False)


# -- TLS ----------------------------------------------------------------------------------


def test_https_urls_get_tls_connections() -> None:
    secure = lean("https://jobs.example.org/base").new_connection()
    assert isinstance(secure, http.client.HTTPSConnection)
    assert (secure.host, secure.port) == ("jobs.example.org", 443)
    plain = lean("http://jobs.example.org:8080").new_connection()
    assert not isinstance(plain, http.client.HTTPSConnection)
    assert (plain.host, plain.port) == ("jobs.example.org", 8080)
    with pytest.raises(ValueError):
        lean("ftp://jobs.example.org")


# -- which transport a JobManager's worker loop uses --------------------------------------


def _user_agent(manager: JobManager, scripted: Scripted) -> str:
    manager.worker_http.request("PATCH", "/v1/joblib/workers/w", idempotent=True)
    return scripted.seen[-1].headers.get("user-agent", "")


def test_the_worker_loop_uses_the_lean_transport_by_default(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZNDRAW_JOBLIB_TRANSPORT", raising=False)
    with JobManager(scripted.url, token="tok") as manager:
        assert not _user_agent(manager, scripted).startswith("python-httpx")
        scripted.answer(Reply(body=b'{"items": [], "total": 0, "limit": 50, "offset": 0}'))
        manager.list_workers()  # everything else: httpx
        assert scripted.seen[-1].headers["user-agent"].startswith("python-httpx")


def test_zndraw_joblib_transport_httpx_selects_httpx(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZNDRAW_JOBLIB_TRANSPORT", "httpx")
    with JobManager(scripted.url, token="tok") as manager:
        assert _user_agent(manager, scripted).startswith("python-httpx")

    monkeypatch.setenv("ZNDRAW_JOBLIB_TRANSPORT", "carrier-pigeon")
    with JobManager(scripted.url, token="tok") as manager, pytest.raises(ValueError):
        _ = manager.worker_http


def test_a_given_httpx_client_is_used_for_the_worker_loop_too(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZNDRAW_JOBLIB_TRANSPORT", raising=False)
    with (
        httpx.Client(base_url=scripted.url) as client,
        JobManager(client=client, token="tok") as manager,
    ):
        assert _user_agent(manager, scripted).startswith("python-httpx")


def test_a_proxy_from_the_environment_keeps_the_worker_loop_on_httpx(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZNDRAW_JOBLIB_TRANSPORT", raising=False)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    with JobManager(scripted.url, token="tok") as manager:
        assert isinstance(manager.worker_http, HttpSession)

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the proxy does not apply to this server
    with JobManager(scripted.url, token="tok") as manager:
        assert not _user_agent(manager, scripted).startswith("python-httpx")
