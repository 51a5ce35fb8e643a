"""RFC 9457 problem types shared by the server and the client.

Each problem is an exception class with a stable ``type`` URI, a ``title`` and an HTTP
``status``. The server raises them and renders them as ``application/problem+json``; the
client turns such a body back into the same class with :func:`problem_from_body`, so callers
can write ``except JobNotFound``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "PROBLEM_PREFIX",
    "PROBLEM_TYPES",
    "BadRequest",
    "Forbidden",
    "IdempotencyKeyReused",
    "InternalJobNotConfigured",
    "InvalidCategory",
    "InvalidJobName",
    "InvalidPayload",
    "InvalidRoomId",
    "InvalidSchema",
    "InvalidTaskTransition",
    "JobNotFound",
    "LeaseLost",
    "MethodNotAllowed",
    "NoWorkersAvailable",
    "NotFound",
    "PayloadTooLarge",
    "ProblemDetail",
    "ProblemError",
    "ProviderNotFound",
    "ProviderReadFailed",
    "ProviderTimeout",
    "QuotaExceeded",
    "RequestTimeout",
    "RequestValidationFailed",
    "SchemaConflict",
    "ServiceUnavailable",
    "TaskNotFound",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "WorkerNotFound",
    "problem_from_body",
]

PROBLEM_PREFIX = "/v1/problems/"
"""Every problem ``type`` URI starts with this prefix, followed by a kebab-case name."""


class ProblemDetail(BaseModel):
    """An RFC 9457 problem body: ``{type, title, status, detail, instance}``.

    Extension members (for example ``errors`` on ``invalid-payload``) are kept.
    """

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class ProblemError(Exception):
    """Base class of every problem the API answers with.

    Subclasses set ``slug``, ``title`` and ``status``; an instance carries the ``detail``,
    an optional ``instance`` URI and extension members (``extras``).

    Attributes:
        detail: Human-readable explanation of this occurrence.
        instance: Optional URI of this occurrence.
        extras: Extension members rendered into the problem body.
        headers: Extra response headers (e.g. ``Retry-After``); not part of the body.
    """

    slug: ClassVar[str] = ""
    title: ClassVar[str] = "Error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        detail: str | None = None,
        *,
        instance: str | None = None,
        headers: dict[str, str] | None = None,
        **extras: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.instance = instance
        self.headers = headers or {}
        self.extras = extras

    @classmethod
    def type_uri(cls) -> str:
        """The problem's ``type`` URI (``about:blank`` for the untyped base)."""
        return f"{PROBLEM_PREFIX}{cls.slug}" if cls.slug else "about:blank"

    def to_problem(self) -> ProblemDetail:
        """Render this exception as a problem body."""
        return ProblemDetail(
            type=self.type_uri(),
            title=self.title,
            status=self.http_status,
            detail=self.detail,
            instance=self.instance,
            **self.extras,
        )

    @property
    def http_status(self) -> int:
        """The HTTP status code of this occurrence."""
        return self.status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


class _UntypedProblem(ProblemError):
    """A problem whose ``type`` is not one of ours; keeps the received type and status."""

    def __init__(self, body: ProblemDetail) -> None:
        extras = body.model_extra or {}
        super().__init__(body.detail, instance=body.instance, **extras)
        self._type = body.type
        self._title = body.title
        self._status = body.status

    @property
    def http_status(self) -> int:
        return self._status

    def to_problem(self) -> ProblemDetail:
        body = super().to_problem()
        body.type = self._type
        body.title = self._title
        return body


class BadRequest(ProblemError):
    """The request is malformed (400)."""

    slug = "bad-request"
    title = "Bad Request"
    status = 400


class Unauthorized(ProblemError):
    """No valid credentials were sent (401)."""

    slug = "unauthorized"
    title = "Unauthorized"
    status = 401


class Forbidden(ProblemError):
    """The caller may not do this (403)."""

    slug = "forbidden"
    title = "Forbidden"
    status = 403


class NotFound(ProblemError):
    """No such resource or route (404)."""

    slug = "not-found"
    title = "Not Found"
    status = 404


class JobNotFound(NotFound):
    """The job does not exist, is deleted, or is not visible from the room (404)."""

    slug = "job-not-found"


class WorkerNotFound(NotFound):
    """The worker does not exist or is not the caller's (404)."""

    slug = "worker-not-found"


class TaskNotFound(NotFound):
    """The task does not exist or is not visible to the caller (404)."""

    slug = "task-not-found"


class ProviderNotFound(NotFound):
    """No such provider, not visible from the room, or it vanished while a read waited."""

    slug = "provider-not-found"
    title = "Provider Not Found"


class ProviderReadFailed(ProblemError):
    """The provider's client could not answer the read (cached like a result)."""

    slug = "provider-read-failed"
    title = "Provider Read Failed"
    status = 502


class ProviderTimeout(ProblemError):
    """The provider did not answer within the wait; retry after ``Retry-After``."""

    slug = "provider-timeout"
    title = "Gateway Timeout"
    status = 504


class MethodNotAllowed(ProblemError):
    """The route exists but not with this method (405)."""

    slug = "method-not-allowed"
    title = "Method Not Allowed"
    status = 405


class SchemaConflict(ProblemError):
    """An active job of that name is registered with a different schema (409)."""

    slug = "schema-conflict"
    title = "Conflict"
    status = 409


class InvalidTaskTransition(ProblemError):
    """The task cannot move from its current state to the requested one (409)."""

    slug = "invalid-task-transition"
    title = "Conflict"
    status = 409


class LeaseLost(ProblemError):
    """The worker no longer holds the task's lease; its update was refused (409)."""

    slug = "lease-lost"
    title = "Conflict"
    status = 409


class IdempotencyKeyReused(ProblemError):
    """The caller's ``Idempotency-Key`` was already used for a different request (409).

    A repeat must send the same body (payload and options); a new request needs a new key.
    """

    slug = "idempotency-key-reused"
    title = "Conflict"
    status = 409


class NoWorkersAvailable(ProblemError):
    """No live worker serves the job, and the server refuses such submits (409).

    Only when the host turned ``refuse_submit_without_workers`` on; nothing was created.
    Start a worker for the job (job answers count them in ``live_workers``) and retry.
    """

    slug = "no-workers-available"
    title = "Conflict"
    status = 409


class InvalidCategory(ProblemError):
    """The job category is not allowed by the server's settings (400)."""

    slug = "invalid-category"
    title = "Bad Request"
    status = 400


class InvalidRoomId(ProblemError):
    """The room id breaks the naming rules (400)."""

    slug = "invalid-room-id"
    title = "Bad Request"
    status = 400


class InvalidJobName(ProblemError):
    """A job name or category breaks the naming rules (400)."""

    slug = "invalid-job-name"
    title = "Bad Request"
    status = 400


class RequestTimeout(ProblemError):
    """The request was not received completely in time (408); the connection is closed."""

    slug = "request-timeout"
    title = "Request Timeout"
    status = 408


class PayloadTooLarge(ProblemError):
    """A body, payload, result, schema or error text exceeds the server's limits (413)."""

    slug = "payload-too-large"
    title = "Content Too Large"
    status = 413


class UnsupportedMediaType(ProblemError):
    """The request body is not JSON (415)."""

    slug = "unsupported-media-type"
    title = "Unsupported Media Type"
    status = 415


class InvalidPayload(ProblemError):
    """The task payload does not match the job's JSON Schema (422).

    The body's ``errors`` member lists ``{path, message}`` for the first failing locations
    (50 by default) and ``error_count`` says how many there were; an empty list with
    ``error_count`` 0 means validating took longer than the server's budget.
    """

    slug = "invalid-payload"
    title = "Unprocessable Content"
    status = 422


class InvalidSchema(ProblemError):
    """The registered schema is not a valid JSON Schema (422)."""

    slug = "invalid-schema"
    title = "Unprocessable Content"
    status = 422


class RequestValidationFailed(ProblemError):
    """The request's body, path or query failed validation (422).

    The body's ``errors`` member lists ``{loc, msg, type}`` for each failing field.
    """

    slug = "validation-error"
    title = "Unprocessable Content"
    status = 422


class TooManyRequests(ProblemError):
    """Too many attempts (logins, registrations) from one client address (429).

    The response's ``Retry-After`` header says after how many seconds to try again.
    """

    slug = "too-many-requests"
    title = "Too Many Requests"
    status = 429


class QuotaExceeded(ProblemError):
    """The caller reached a per-user cap (workers, pending tasks); nothing was created (429).

    Wait until some of the caller's tasks are claimed or workers are removed, then retry.
    """

    slug = "quota-exceeded"
    title = "Too Many Requests"
    status = 429


class ServiceUnavailable(ProblemError):
    """The server cannot answer now; retry later (503)."""

    slug = "service-unavailable"
    title = "Service Unavailable"
    status = 503


class InternalJobNotConfigured(ServiceUnavailable):
    """A task was submitted to an ``@internal`` job that no executor serves now (503).

    The host registered the job, but no in-process executor and no internal worker is
    linked to it; retry once one runs.
    """

    slug = "internal-job-not-configured"
    title = "Internal Job Not Configured"
    status = 503


def _collect(cls: type[ProblemError]) -> dict[str, type[ProblemError]]:
    found: dict[str, type[ProblemError]] = {}
    for sub in cls.__subclasses__():
        if sub.slug:
            found[sub.type_uri()] = sub
        found.update(_collect(sub))
    return found


PROBLEM_TYPES: dict[str, type[ProblemError]] = _collect(ProblemError)
"""Every known problem class, by its ``type`` URI."""


def problem_from_body(body: ProblemDetail | dict[str, Any]) -> ProblemError:
    """Turn a problem body back into the exception class the server raised.

    Args:
        body: A problem body, parsed or as a dict.

    Returns:
        An instance of the matching :class:`ProblemError` subclass; a problem with an unknown
        ``type`` becomes a plain :class:`ProblemError` keeping that type, title and status.
    """
    detail = body if isinstance(body, ProblemDetail) else ProblemDetail.model_validate(body)
    cls = PROBLEM_TYPES.get(detail.type)
    if cls is None or cls.status != detail.status:
        return _UntypedProblem(detail)
    return cls(detail.detail, instance=detail.instance, **(detail.model_extra or {}))
