"""A lean keep-alive HTTP/1.1 JSON client for the load generators (standard library only).

The load generators share the machine's cores with the server and the database, and httpx
spends several times the CPU per request that ``http.client`` does: with httpx the simulated
workers of the end-to-end scenarios took CPU time the server then lacked. Set-up,
verification and the idle scenario still use httpx.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Conn", "Reply"]

_IDLE_S = 2.0
"""Reconnect before a request after this long without one (uvicorn closes idle connections
after 5 s; a request written to a connection the server just closed would fail)."""


class Reply:
    """Status and body of one answer."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class Conn:
    """One keep-alive connection to ``base`` (``http://host:port``), with a bearer token."""

    def __init__(self, base: str, token: str | None = None, timeout: float = 30.0) -> None:
        url = urlsplit(base)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 80
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._used = time.monotonic()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send one request (``body`` as JSON) and read the whole answer."""
        if time.monotonic() - self._used > _IDLE_S:
            self._conn.close()  # http.client reconnects on the next request
        data = None if body is None else json.dumps(body).encode()
        all_headers = {**self._headers, **headers} if headers else self._headers
        self._conn.request(method, path, body=data, headers=all_headers)
        resp = self._conn.getresponse()
        reply = Reply(resp.status, resp.read())
        self._used = time.monotonic()
        return reply

    def get(self, path: str, **kw: Any) -> Reply:
        """``GET path``."""
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """``POST path`` with a JSON body."""
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """``PATCH path`` with a JSON body."""
        return self.request("PATCH", path, body, **kw)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
