"""The worker loop's lean transport: keep-alive ``http.client`` connections, one per thread.

The worker loop sends one request per task (its claim-and-report exchange) and, now and
then, a heartbeat. httpx spends about four times the CPU of the standard library's
``http.client`` on such a request; this transport sends those requests on a kept-alive
``HTTPConnection`` (``HTTPSConnection`` for https URLs) per thread, through the same auth,
retry and problem+json mapping as :class:`~zndraw_joblib_client._http.HttpSession`
(:class:`~zndraw_joblib_client._http.RetryingSender`). Everything else the SDK sends stays on
httpx.

``ZNDRAW_JOBLIB_TRANSPORT=httpx`` sends the worker loop's requests through httpx too; httpx
is also used when the manager was given its own ``httpx.Client`` or when httpx would send
the requests through a proxy (from the environment), which this transport does not speak.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import select
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from zndraw_joblib_client._http import HeadersHook, RetryingSender, RetryPolicy

__all__ = ["TRANSPORT_ENV", "LeanResponse", "LeanSession", "proxy_applies", "transport_choice"]

TRANSPORT_ENV = "ZNDRAW_JOBLIB_TRANSPORT"
"""Environment variable choosing the worker loop's transport: ``lean`` (default) or ``httpx``."""

_CHOICES = ("lean", "httpx")
_CONNECT_CAP = 10.0  # longest connect timeout of a request with its own timeout (as httpx)
_IDLE_EXPIRY = 4.0
"""Seconds after which an idle connection is replaced rather than reused: servers close idle
keep-alive connections (uvicorn after 5 s), and a request sent just as they do would fail."""


class ConnectError(OSError):
    """The connection could not be opened: nothing of the request was sent."""


class LeanResponse:
    """A successful or failed answer, read whole.

    Attributes:
        status_code: The HTTP status.
        reason_phrase: The status line's reason.
        headers: The headers by lowercase name (repeated ones joined with ``", "``).
        content: The body.
    """

    __slots__ = ("content", "headers", "reason_phrase", "status_code")

    def __init__(
        self, status_code: int, reason_phrase: str, headers: dict[str, str], content: bytes
    ) -> None:
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """The body decoded as JSON."""
        return jsonlib.loads(self.content)


def transport_choice() -> str:
    """The worker loop's transport from ``ZNDRAW_JOBLIB_TRANSPORT``: ``lean`` or ``httpx``.

    Raises:
        ValueError: The variable holds something else.
    """
    value = os.environ.get(TRANSPORT_ENV, "").strip().lower() or "lean"
    if value not in _CHOICES:
        raise ValueError(f"{TRANSPORT_ENV} must be 'lean' or 'httpx', not {value!r}")
    return value


def proxy_applies(client: httpx.Client, url: str) -> bool:
    """Whether ``client`` would send requests for ``url`` through a proxy.

    The client's proxies come from the environment when it trusts it (httpx reads the same
    variables, ``NO_PROXY`` included, through the standard library as here).
    """
    if not client.trust_env:
        return False
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _stale(sock: Any) -> bool:
    """Whether an idle kept-alive socket was closed by the server (readable = EOF or junk)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class LeanSession(RetryingSender):
    """Sends the worker loop's requests on kept-alive ``http.client`` connections.

    One connection per calling thread (the loop's thread, the heartbeat thread), opened on
    first use and again after the server closed it. Auth, retries and errors behave as
    :class:`~zndraw_joblib_client._http.HttpSession`'s.

    Args:
        url: The server's base URL (``http://`` or ``https://``, may carry a path).
        timeout: Default timeout in seconds (connect and read).
        ssl_context: TLS settings for https URLs; by default httpx's (its CA bundle, and
            ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``).
        token: A callable returning the bearer token to send, or None for none.
        on_unauthorized: Called once after a 401; True when the request should be retried.
        retry: The retry policy.
        sleep: The function used to wait between attempts.
        headers: Extra headers sent with every request (a mapping or a callable).
    """

    transport_errors: ClassVar[tuple[type[Exception], ...]] = (
        OSError,
        http.client.HTTPException,
    )

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        token: Callable[[], str | None],
        on_unauthorized: Callable[[], bool] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        headers: HeadersHook | None = None,
    ) -> None:
        super().__init__(
            token=token, on_unauthorized=on_unauthorized, retry=retry, sleep=sleep, headers=headers
        )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[tuple[threading.Thread, http.client.HTTPConnection]] = []

    def not_sent(self, exc: Exception) -> bool:
        """Whether ``exc`` was raised before any byte of the request left the client."""
        return isinstance(exc, ConnectError)

    def new_connection(self) -> http.client.HTTPConnection:
        """A new, not yet connected connection to the server (TLS for https URLs)."""
        if not self.https:
            return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return http.client.HTTPSConnection(
            self.host, self.port, timeout=self.timeout, context=self._ssl_context
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
        retry_transient: bool = True,
    ) -> LeanResponse:
        """Send a request and return its successful answer.

        Args:
            method: The HTTP method.
            path: The path (already quoted), relative to the base URL.
            content: The encoded body (its ``Content-Type`` given in ``headers``).
            headers: Extra request headers.
            idempotent: Whether resending is harmless (defaults from the method).
            timeout: Read timeout in seconds for this request (long-polls), else the
                session's; connecting then waits at most 10 s.
            retry_transient: False to send only once.

        Returns:
            The answer (status below 400).

        Raises:
            ProblemError: The server answered an error (the matching core subclass).
            ConnectionFailed: The server could not be reached after all attempts.
        """
        method = method.upper()
        target = self.base_path + path
        read_timeout = self.timeout if timeout is None else timeout
        connect_timeout = self.timeout if timeout is None else min(timeout, _CONNECT_CAP)

        def send(hdrs: dict[str, str]) -> LeanResponse:
            return self._send(method, target, content, hdrs, connect_timeout, read_timeout)

        return self._retrying(
            method,
            path,
            dict(headers or {}),
            send,
            idempotent=idempotent,
            authenticate=True,
            retry_transient=retry_transient,
        )

    def close(self) -> None:
        """Close every connection this session opened."""
        with self._lock:
            opened, self._open = self._open, []
        for _thread, conn in opened:
            conn.close()

    # -- one attempt ----------------------------------------------------------------------

    def _send(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        connect_timeout: float,
        read_timeout: float,
    ) -> LeanResponse:
        conn = self._connection()
        try:
            if conn.sock is None:
                conn.timeout = connect_timeout
                try:
                    conn.connect()
                except OSError as exc:
                    # named as httpx's, so that the worker's log line reads the same
                    raise ConnectError(str(exc)) from exc
            conn.sock.settimeout(read_timeout)
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
            self._local.used = time.monotonic()
        except BaseException:
            conn.close()  # its state is unknown: the next request opens a new one
            raise
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return LeanResponse(response.status, response.reason, merged, content)

    def _connection(self) -> http.client.HTTPConnection:
        """This thread's connection; a fresh one when the idle one expired or was closed."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.new_connection()
            self._local.conn = conn
            with self._lock:
                # connections of threads that ended are closed here, not kept for ever
                alive = [(t, c) for t, c in self._open if t.is_alive()]
                for thread, old in self._open:
                    if not thread.is_alive():
                        old.close()
                self._open = [*alive, (threading.current_thread(), conn)]
        elif conn.sock is not None:
            idle = time.monotonic() - getattr(self._local, "used", 0.0)
            if idle > _IDLE_EXPIRY or _stale(conn.sock):
                conn.close()
        return conn
