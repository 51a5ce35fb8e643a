"""Running the reference app with uvicorn: slow-client timeouts and a prompt shutdown.

uvicorn times out idle keep-alive connections but not a client that stops half-way
through its request: headers sent in part, or a body that stalls. :func:`guarded_protocol`
builds uvicorn's HTTP protocol (httptools) with two timers: the request head must arrive
within ``header_timeout_seconds`` of the connection opening (or of the first byte of a
later request), and the body within ``body_timeout_seconds`` of the head. A late client is
answered ``408`` (a ``request-timeout`` problem) and disconnected. The protocol also sends a
response's head with its body in one write: uvicorn writes them separately, two sends (and,
on the client, two reads) where one does.

:class:`Server` answers waiting long-polls ``503`` with ``Retry-After`` as soon as the
shutdown signal arrives (see :func:`~zndraw_joblib_server.storage.database.release_waiters`),
so they neither run into the graceful-shutdown timeout nor end in a cancelled request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from zndraw_joblib_core import RequestTimeout
from zndraw_joblib_server.storage.database import release_waiters

__all__ = ["Server", "guarded_protocol"]

logger = logging.getLogger("zndraw_joblib_server")


def _timeout_answer(what: str) -> bytes:
    problem = RequestTimeout(f"The request {what} did not arrive in time.").to_problem()
    body = json.dumps(problem.model_dump(exclude_none=True)).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Coalescing:
    """A transport that sends a write together with the next one.

    uvicorn writes a response's head and then its body: the head is held until the body's
    first write, and both go out as one (at the latest at the end of the event loop's
    turn, so a head whose body comes later is not held back). Everything else is the
    wrapped transport's; closing sends what is held first.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold ``data``, or send it after what is held."""
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            held, self._held = self._held, None
            self._transport.write(held + data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        """Send what is held, then close."""
        self._flush()
        self._transport.close()

    def unwrapped(self) -> asyncio.Transport:
        """The wrapped transport, after sending what is held."""
        self._flush()
        return self._transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request head and the body."""

    header_timeout = 10.0
    body_timeout = 30.0
    max_head_bytes = 65_536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(_timeout_answer(what))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's head; writes coalesce from here on."""
        super().connection_made(transport)
        self.transport = _Coalescing(transport, self.loop)  # type: ignore[assignment]
        self._arm(self.header_timeout, "head")

    def handle_websocket_upgrade(self) -> None:
        """A WebSocket gets the plain transport (its frames go out as they are written)."""
        if isinstance(self.transport, _Coalescing):
            self.transport = self.transport.unwrapped()
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request starts: its head must be complete in time."""
        super().on_message_begin()
        self._head_bytes = 0
        self._arm(self.header_timeout, "head")

    def on_url(self, url: bytes) -> None:
        """Count the head's bytes (httptools has no limit of its own)."""
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the head's bytes (httptools has no limit of its own)."""
        self._count_head(len(name) + len(value))
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            # The parser stops at this error; uvicorn answers 400 and closes.
            raise ValueError("request head too large")

    def on_headers_complete(self) -> None:
        """The head is in: now the body must be complete in time."""
        self._arm(self.body_timeout, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The whole request is in."""
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Between requests uvicorn's keep-alive timeout applies."""
        self._disarm()
        super().on_response_complete()


def guarded_protocol(
    header_timeout: float, body_timeout: float, max_head_bytes: int = 65_536
) -> type[HttpToolsProtocol]:
    """Uvicorn's httptools protocol with deadlines and a head size limit.

    Args:
        header_timeout: Seconds for a request's head to arrive (408 and closed after).
        body_timeout: Seconds for its body to arrive after the head (408 and closed after).
        max_head_bytes: Largest request line plus headers (a larger head is answered 400).
    """
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedProtocol,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_head_bytes": max_head_bytes,
        },
    )


class Server(uvicorn.Server):
    """uvicorn's server, releasing waiting long-polls with 503 when asked to stop."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Begin the shutdown; waiting long-polls answer 503 with ``Retry-After`` at once."""
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing waits
                asyncio.get_running_loop().call_soon_threadsafe(_release)


def _release() -> None:
    released = release_waiters()
    logger.info("shutting down: %d waiting request(s) answered 503 (retry later)", released)
