"""The fast lane: the queue's hot endpoints served without FastAPI's per-request machinery.

FastAPI spends, per request, about as long routing through every route and resolving the
dependency tree (it re-walks cached dependencies and recomputes security-scope keys) as the
queue spends on its own work. :class:`FastLane` is an ASGI middleware that matches the hot
routes itself and runs each through a :class:`~zndraw_joblib_server.lane.plan.Plan`: the same
endpoint function, the same dependencies in the same order, the same validation, the same
serialisation and the same exception handlers, minus the generic machinery.

It steps aside, and FastAPI answers, whenever the answer could differ: a path or method it
does not serve, a mounted app (``root_path``), any dependency of the route overridden in
``app.dependency_overrides``, a body that is not JSON, and any input that fails validation
(FastAPI then produces its usual 422).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zndraw_joblib_core import API_PREFIX, ProblemError
from zndraw_joblib_server.dependencies import settings_of
from zndraw_joblib_server.errors import route_error_response
from zndraw_joblib_server.lane.plan import Plan, Unsupported, compile_plan
from zndraw_joblib_server.limits import read_body, require_token

__all__ = ["FastLane", "LaneRoute", "lane_routes"]

_JSON = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
_NO_BODY = frozenset({204, 304})


@dataclass(frozen=True)
class LaneRoute:
    """A route as the lane sees it: where it matches, and its plan when it is served here.

    Attributes:
        regex: The full path's pattern (Starlette's).
        convertors: Path parameter convertors.
        methods: The route's methods.
        plan: The compiled plan; None for routes left to FastAPI.
        status_code: The route's default status code.
        adapter: The response model's adapter (None for routes left to FastAPI).
    """

    regex: re.Pattern[str]
    convertors: dict[str, Any]
    methods: frozenset[str]
    plan: Plan | None
    status_code: int
    adapter: TypeAdapter[Any] | None


def lane_routes(
    routes: Iterable[APIRoute], prefix: str, hot: Iterable[Callable[..., Any]]
) -> list[LaneRoute]:
    """The routes, in matching order, with plans compiled for the ``hot`` endpoints."""
    hot_set = set(hot)
    out: list[LaneRoute] = []
    for route in routes:
        regex, _fmt, convertors = compile_path(prefix + route.path)
        plan = None
        model = route.response_model
        if route.endpoint in hot_set and not route.dependencies and model is not None:
            with contextlib.suppress(Unsupported):
                plan = compile_plan(route.endpoint, set(convertors))
        adapter = TypeAdapter(model) if plan is not None else None
        methods = frozenset(route.methods or ())
        status = route.status_code or 200
        out.append(LaneRoute(regex, convertors, methods, plan, status, adapter))
    return out


class FastLane:
    """ASGI middleware serving hot routes directly, given the routes it is to match.

    :meth:`zndraw_joblib_server.JobQueue.include_in` installs it with the queue's routes
    (the lane imports no routes of its own)::

        app.add_middleware(FastLane, routes=lane_routes(routes, API_PREFIX, hot_endpoints))

    Args:
        app: The wrapped ASGI app.
        routes: The routes to match, in FastAPI's order (see :func:`lane_routes`).
        prefix: Requests outside this path prefix are handed on at once.
    """

    def __init__(
        self, app: ASGIApp, routes: Sequence[LaneRoute], prefix: str = API_PREFIX
    ) -> None:
        self.app = app
        self.routes = list(routes)
        self.prefix = prefix
        self.served = 0
        """Requests answered by the lane (the rest were handed on to the app)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a hot route, or hand the request on."""
        found = self._match(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
        else:
            await self._serve(*found, scope, receive, send)

    def _match(self, scope: Scope) -> tuple[LaneRoute, Plan, dict[str, Any]] | None:
        """The hot route to serve, its plan and path parameters; None to hand the request on."""
        path, method = scope["path"], scope["method"]
        if scope.get("root_path") or not path.startswith(self.prefix):
            return None
        for route in self.routes:
            match = route.regex.match(path)
            if match is None or method not in route.methods:
                continue  # as Starlette: a later route may match path and method
            overrides = getattr(scope.get("app"), "dependency_overrides", None)
            if route.plan is None or (overrides and not route.plan.calls.isdisjoint(overrides)):
                return None  # FastAPI's route, or one with an overridden dependency
            params = {k: route.convertors[k].convert(v) for k, v in match.groupdict().items()}
            return route, route.plan, params
        return None

    async def _serve(
        self,
        route: LaneRoute,
        plan: Plan,
        path_params: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope["path_params"] = path_params
        request = Request(scope, receive)
        # The lane serves only the queue's routes: their errors are answered as the route class
        # answers them, whatever handlers the host installed app-wide.
        try:
            if plan.has_body:
                require_token(request)
            body = await read_body(request, settings_of(request).max_body_bytes)
        except (ProblemError, HTTPException) as exc:  # no token, too large, cut off
            self.served += 1
            response = await route_error_response(request, exc)
            await response(scope, receive, send)
            return
        query, headers = request.query_params, request.headers
        is_json = not plan.has_body or _JSON.match(headers.get("content-type", ""))
        inputs = plan.parse(path_params, query, headers, body) if is_json else None
        if inputs is None:  # not JSON, or invalid: FastAPI answers (its 422)
            await self.app(scope, _replay(body, receive), send)
            return
        self.served += 1
        sub = Response()
        del sub.headers["content-length"]
        sub.status_code = None  # type: ignore[assignment]
        try:
            response = _render(route, await plan.run(request, sub, inputs), sub)
        except Exception as exc:
            response = await route_error_response(request, exc)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body on, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _render(route: LaneRoute, result: Any, sub: Response) -> Response:
    if isinstance(result, Response):
        return result
    assert route.adapter is not None
    value = route.adapter.validate_python(result, from_attributes=True)
    content = route.adapter.dump_json(value, by_alias=True)
    status = sub.status_code or route.status_code
    response = Response(content, status_code=status, media_type="application/json")
    if status in _NO_BODY or status < 200:
        response.body = b""
    response.headers.raw.extend(sub.headers.raw)
    return response
