"""Per-client-address rate limits for the account routes (login, registration).

Each attempt costs an argon2 hash (about 0.3 s of CPU), so a client may only make a few per
minute. Counting uses the ``limits`` library (a moving window, in memory by default); a
refused attempt answers 429 ``too-many-requests`` with ``Retry-After`` before its body is
read. The client address is the ASGI ``client`` (behind a reverse proxy, run uvicorn with
``--proxy-headers`` and ``--forwarded-allow-ips`` so it is the real client's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Receive, Scope, Send

from zndraw_joblib_core import TooManyRequests
from zndraw_joblib_server.errors import problem_response

__all__ = ["RateLimit"]


class RateLimit:
    """ASGI middleware limiting ``POST`` requests to some paths per client address.

    Args:
        app: The wrapped ASGI app.
        rates: Path to a rate in the ``limits`` notation (``"10/minute;100/hour"``).
        storage_uri: A ``limits`` storage URI (``memory://``, ``redis://...``).
    """

    def __init__(self, app: ASGIApp, rates: Mapping[str, str], storage_uri: str) -> None:
        self.app = app
        self.rates: dict[str, list[RateLimitItem]] = {
            path: parse_many(rate) for path, rate in rates.items()
        }
        uri = storage_uri if storage_uri.startswith("async+") else f"async+{storage_uri}"
        self.limiter = MovingWindowRateLimiter(storage_from_string(uri))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an attempt over its limit; hand everything else on."""
        items = self.rates.get(scope["path"]) if scope["type"] == "http" else None
        if items is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        wait = 0
        for item in items:
            if not await self.limiter.hit(item, scope["path"], address):
                stats = await self.limiter.get_window_stats(item, scope["path"], address)
                wait = max(wait, math.ceil(stats.reset_time - time.time()), 1)
        if not wait:
            await self.app(scope, receive, send)
            return
        problem = TooManyRequests(
            f"Too many attempts from {address}; retry in {wait} s.", retry_after=wait
        ).to_problem()
        problem.instance = scope["path"]
        response = problem_response(problem, {"Retry-After": str(wait)})
        await response(scope, receive, send)
