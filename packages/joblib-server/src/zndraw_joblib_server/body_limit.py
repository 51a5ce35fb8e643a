"""An ASGI middleware limiting every request body of the app (the auth routes' too)."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zndraw_joblib_core import PayloadTooLarge
from zndraw_joblib_server.errors import problem_exception_handler

__all__ = ["BodyLimit"]


class BodyLimit:
    """Refuse (413 problem) a body whose declared or streamed size exceeds ``limit`` bytes.

    A declared ``Content-Length`` over the limit is answered before anything is read; a
    streamed body is cut off at the limit (a route already answering closes the connection).

    Args:
        app: The wrapped ASGI app.
        limit: The largest body in bytes.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared size, then count the streamed bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(413, f"The request body exceeds {self.limit} bytes.")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"The request body exceeds {self.limit} bytes."
        too_large = PayloadTooLarge(detail, limit=self.limit, headers={"Connection": "close"})
        response = await problem_exception_handler(Request(scope), too_large)
        await response(scope, receive, send)


class _TooLarge(HTTPException):
    """Raised from ``receive`` once the streamed body passed the limit.

    An HTTP error, so that FastAPI's body parsing passes it on (other errors become 400)
    and the app's handlers answer 413.
    """
