"""Exceptions raised on the client side only (server problems come from core)."""

from __future__ import annotations

from zndraw_joblib_core.outcomes import Retry, TaskCancelled

__all__ = [
    "ClientError",
    "ConnectionFailed",
    "ExtensionError",
    "LoginFailed",
    "Retry",
    "ServerUnreachable",
    "TaskCancelled",
    "UnexpectedResponse",
    "UnknownJob",
]


class ClientError(Exception):
    """Base class of the errors the client raises on its own (not answered by the server)."""


class ConnectionFailed(ClientError):
    """The server could not be reached, even after retrying.

    Attributes:
        method: The HTTP method of the request.
        url: The URL of the request.
    """

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class ServerUnreachable(ConnectionFailed):
    """A worker loop gave up: the server stayed unreachable for ``max_unreachable_seconds``.

    Attributes:
        down_for: Seconds the server had been unreachable when the loop gave up.
    """

    def __init__(self, message: str, *, down_for: float) -> None:
        super().__init__(message)
        self.down_for = down_for


class ExtensionError(ClientError, TypeError):
    """An extension class cannot be used as a job (for example it sets no ``category``).

    Also a :class:`TypeError`, which is what such a mistake raised before.
    """


class UnexpectedResponse(ClientError):
    """The server answered something the client cannot read (not the wire contract).

    Attributes:
        status_code: The HTTP status of the answer.
    """

    def __init__(self, message: str, *, status_code: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code


class LoginFailed(ClientError):
    """Logging in with e-mail and password was refused (bad credentials or no such user)."""


class UnknownJob(ClientError, KeyError):
    """A claimed task names a job this client has not registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown job"
