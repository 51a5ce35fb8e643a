"""The one place that sends requests: auth header, retries, problem+json to exceptions."""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, TypeVar

import httpx
from pydantic import ValidationError

from zndraw_joblib_client.errors import ConnectionFailed
from zndraw_joblib_core import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    RequestValidationFailed,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    problem_from_body,
)

__all__ = ["Answer", "HeadersHook", "RetryPolicy", "Sender"]

logger = logging.getLogger("zndraw_joblib_client")

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: RequestValidationFailed,
    503: ServiceUnavailable,
}
# Errors raised before any byte of the request left the client: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


HeadersHook = Mapping[str, str] | Callable[[], Mapping[str, str]]
"""Extra request headers: a fixed mapping, or a callable asked before every request."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures (connection errors, timeouts, 5xx, 429) are retried.

    The n-th retry waits ``min(max_delay, base_delay * 2**(n-1))``, spread by up to
    ``jitter`` of itself, or what the server's ``Retry-After`` asks (capped by
    ``max_retry_after``).

    Attributes:
        attempts: How many times a request is sent at most (1 disables retries).
        base_delay: The first delay in seconds.
        max_delay: The longest delay between two attempts.
        jitter: Random spread as a fraction of the delay (0 for none).
        max_retry_after: The longest ``Retry-After`` honoured, in seconds.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Return the seconds to wait before retry number ``retry`` (1-based).

        Args:
            retry: Which retry this is (1 for the first).
            retry_after: Seconds the server asked for, if it did.

        Returns:
            The delay in seconds, never negative.
        """
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        spread: float = self.jitter * (2.0 * random.random() - 1.0)
        return max(0.0, self._ceiling(retry) * (1.0 + spread))

    def backoff(self, failure: int) -> float:
        """Return the pause after ``failure`` failures in a row, with full jitter.

        A uniform draw between 0 and ``min(max_delay, base_delay * 2**(failure-1))``, so many
        workers that lost the same server do not come back in step.

        Args:
            failure: How many failures in a row (1 for the first).

        Returns:
            The pause in seconds.
        """
        return random.uniform(0.0, self._ceiling(failure))

    def _ceiling(self, retry: int) -> float:
        # min() first: 2.0**retry overflows float for long outages
        exponent = min(max(0, retry - 1), 64)
        return min(self.max_delay, self.base_delay * 2.0**exponent)


def parse_retry_after(value: str | None) -> float | None:
    """Read a ``Retry-After`` header: delta seconds or an HTTP date; None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Answer(Protocol):
    """What a transport answered: an ``httpx.Response`` is one, the lean transport's too."""

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        ...

    @property
    def reason_phrase(self) -> str:
        """The status line's reason."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers (looked up by lowercase name)."""
        ...

    @property
    def content(self) -> bytes:
        """The whole body."""
        ...


class Sender(Protocol):
    """What the worker loop's requests need from a transport (see ``_lean``)."""

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
    ) -> Answer:
        """Send a request and return its successful answer (see ``HttpSession.request``)."""
        ...


A = TypeVar("A", bound=Answer)


def problem_from_response(response: Answer) -> ProblemError:
    """Turn an error response into the core exception the server meant.

    A problem body (``application/problem+json`` or any JSON object with ``type`` and
    ``status``) becomes its class via :func:`zndraw_joblib_core.problem_from_body`; anything
    else (e.g. FastAPI's ``{"detail": "Unauthorized"}``) becomes the class of its status.
    Both transports (httpx and the lean one) map their errors here.

    Args:
        response: An answer with a 4xx or 5xx status.

    Returns:
        The exception to raise, with ``headers`` set to the response headers (lowercase
        names).
    """
    headers = {k.lower(): v for k, v in response.headers.items()}
    content = response.content
    try:
        body: Any = jsonlib.loads(content) if content else None
    except ValueError:
        body = None
    if isinstance(body, dict) and "type" in body and "status" in body:
        data = dict(body)
        data.setdefault("title", response.reason_phrase or "Error")
        try:
            problem = problem_from_body(data)
        except ValidationError:
            pass
        else:
            problem.headers = headers
            return problem
    extras: dict[str, Any] = {}
    detail: str | None = None
    if isinstance(body, dict) and "detail" in body:
        raw = body["detail"]
        if isinstance(raw, str):
            detail = raw
        else:
            extras["errors"] = raw
            detail = "request validation failed"
    elif content and body is None:
        detail = content.decode("utf-8", errors="replace")[:500]
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        problem = problem_from_body(
            {
                "type": "about:blank",
                "title": response.reason_phrase or "Error",
                "status": response.status_code,
                "detail": detail,
                **extras,
            }
        )
    else:
        problem = cls(detail, **extras)
    problem.headers = headers
    return problem


def _is_transient_status(status: int) -> bool:
    return status == 429 or status >= 500


class RetryingSender:
    """Auth header, retries and problem+json mapping around one transport's ``send``.

    :class:`HttpSession` (httpx) and the worker loop's lean transport both send through
    :meth:`_retrying`, so they authenticate, retry and fail alike.

    Args:
        token: A callable returning the bearer token to send, or None for none.
        on_unauthorized: Called once after a 401 when set; returns True when the request
            should be retried (e.g. after logging in again).
        retry: The retry policy.
        sleep: The function used to wait between attempts (tests pass a fake).
        headers: Extra headers sent with every request: a mapping, or a callable called
            before every attempt (e.g. for a lock token that changes). Headers given to
            a request win; ``Authorization`` is the token's when a token is set.
    """

    transport_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """What the transport raises when a request failed before an answer came back."""

    def __init__(
        self,
        *,
        token: Callable[[], str | None],
        on_unauthorized: Callable[[], bool] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        headers: HeadersHook | None = None,
    ) -> None:
        self.headers = headers
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self._token = token
        self._on_unauthorized = on_unauthorized

    def not_sent(self, exc: Exception) -> bool:
        """Whether ``exc`` was raised before any byte of the request left the client."""
        return False

    def _retrying(
        self,
        method: str,
        path: str,
        given: Mapping[str, str],
        send: Callable[[dict[str, str]], A],
        *,
        idempotent: bool | None,
        authenticate: bool,
        retry_transient: bool,
    ) -> A:
        """Call ``send(headers)`` until it answers below 400, an error or attempts run out.

        Raises:
            ProblemError: The server answered an error (the matching core subclass).
            ConnectionFailed: The server could not be reached after all attempts.
        """
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS or any(
                k.lower() == "idempotency-key" for k in given
            )
        attempts = max(1, self.retry.attempts) if retry_transient else 1
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            hdrs = self._extra_headers()
            hdrs.update(given)
            if authenticate:
                token = self._token()
                if token:
                    # one Authorization header, whatever the case of a hook's key
                    hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
                    hdrs["Authorization"] = f"Bearer {token}"
            try:
                response = send(hdrs)
            except self.transport_errors as exc:
                retryable = self.not_sent(exc) or idempotent
                if not retryable or attempt >= attempts:
                    raise ConnectionFailed(
                        f"{method} {path} failed: {type(exc).__name__}: {exc}",
                        method=method,
                        url=path,
                    ) from exc
                wait = self.retry.delay(attempt)
                logger.warning(
                    "%s %s failed (%s); retry %d/%d in %.1fs",
                    method,
                    path,
                    type(exc).__name__,
                    attempt,
                    attempts - 1,
                    wait,
                )
                self.sleep(wait)
                continue
            status = response.status_code
            if status < 400:
                return response
            if status == 401 and authenticate and not relogged and self._on_unauthorized:
                relogged = True
                if self._on_unauthorized():
                    attempt -= 1
                    continue
            retryable = _is_transient_status(status) and (idempotent or status == 429)
            if retryable and attempt < attempts:
                wait = self.retry.delay(
                    attempt, parse_retry_after(response.headers.get("retry-after"))
                )
                logger.warning(
                    "%s %s answered %d; retry %d/%d in %.1fs",
                    method,
                    path,
                    status,
                    attempt,
                    attempts - 1,
                    wait,
                )
                self.sleep(wait)
                continue
            raise problem_from_response(response)

    def _extra_headers(self) -> dict[str, str]:
        hook = self.headers
        if hook is None:
            return {}
        return dict(hook() if callable(hook) else hook)


class HttpSession(RetryingSender):
    """Sends requests to the joblib server with auth, retries and error mapping (httpx).

    Args:
        client: The httpx client (its ``base_url`` points at the server).

    The other arguments are :class:`RetryingSender`'s.
    """

    transport_errors: ClassVar[tuple[type[Exception], ...]] = (httpx.TransportError,)

    def __init__(
        self,
        client: httpx.Client,
        *,
        token: Callable[[], str | None],
        on_unauthorized: Callable[[], bool] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        headers: HeadersHook | None = None,
    ) -> None:
        super().__init__(
            token=token, on_unauthorized=on_unauthorized, retry=retry, sleep=sleep, headers=headers
        )
        self.client = client

    def not_sent(self, exc: Exception) -> bool:
        """Whether ``exc`` was raised before any byte of the request left the client."""
        return isinstance(exc, _NOT_SENT)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
        authenticate: bool = True,
        retry_transient: bool = True,
    ) -> httpx.Response:
        """Send a request and return its successful answer.

        Args:
            method: The HTTP method.
            path: The path, relative to the client's base URL.
            json: A JSON body.
            content: A body already encoded (its ``Content-Type`` given in ``headers``).
            data: A form body.
            params: Query parameters (None values are dropped).
            headers: Extra request headers.
            idempotent: Whether resending is harmless; defaults from the method (and an
                ``Idempotency-Key`` header makes a request idempotent).
            timeout: Read timeout in seconds for this request (long-polls), else the
                client's.
            authenticate: Whether to send the bearer token.
            retry_transient: False to send only once.

        Returns:
            The answer (status below 400).

        Raises:
            ProblemError: The server answered an error (the matching core subclass).
            ConnectionFailed: The server could not be reached after all attempts.
        """
        method = method.upper()
        query = {k: v for k, v in (params or {}).items() if v is not None}
        kwargs: dict[str, Any] = {"json": json, "data": data, "params": query or None}
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 10.0))

        def send(hdrs: dict[str, str]) -> httpx.Response:
            return self.client.request(method, path, headers=hdrs, **kwargs)

        return self._retrying(
            method,
            path,
            dict(headers or {}),
            send,
            idempotent=idempotent,
            authenticate=authenticate,
            retry_transient=retry_transient,
        )
