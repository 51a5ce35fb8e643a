"""Optional OpenTelemetry spans around submit, claim and update.

Nothing here needs OpenTelemetry: :func:`tracer_if_installed` returns None when the
``opentelemetry-api`` package is not installed, and the reference app then adds nothing.
With it installed (and a tracer provider configured by the host), every submit, claim and
task update runs inside a span ``joblib.submit`` / ``joblib.claim`` / ``joblib.update`` with
the HTTP method, route template and status as attributes (no ids, payloads or users).
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zndraw_joblib_core import API_PREFIX

__all__ = ["Tracing", "span_name", "tracer_if_installed"]

_SUBMIT = re.compile(rf"^{re.escape(API_PREFIX)}/rooms/[^/]+/(?:tasks|jobs)/.+$")
_UPDATE = re.compile(rf"^{re.escape(API_PREFIX)}/tasks(?:/[0-9a-fA-F-]{{36}})?$")


def span_name(method: str, path: str) -> str | None:
    """The span of a request, or None when it is not a submit, claim or update."""
    if method == "POST" and path == f"{API_PREFIX}/tasks/claim":
        return "joblib.claim"
    if method == "POST" and _SUBMIT.match(path):
        return "joblib.submit"
    if method == "PATCH" and _UPDATE.match(path):
        return "joblib.update"
    return None


class Tracing:
    """ASGI middleware opening an OpenTelemetry span around submits, claims and updates."""

    def __init__(self, app: ASGIApp, tracer: Any) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, inside a span when it is one of the traced ones."""
        http = scope["type"] == "http"
        name = span_name(scope["method"], scope["path"]) if http else None
        if name is None:
            await self.app(scope, receive, send)
            return
        with self.tracer.start_as_current_span(name) as span:
            span.set_attribute("http.request.method", scope["method"])

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, traced_send)


def tracer_if_installed() -> Any | None:
    """The OpenTelemetry tracer to give :class:`Tracing`, or None when it is not installed."""
    if importlib.util.find_spec("opentelemetry") is None:
        return None
    from opentelemetry import trace

    return trace.get_tracer("zndraw_joblib_server")
