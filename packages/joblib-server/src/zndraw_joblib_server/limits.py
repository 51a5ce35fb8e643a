"""The request body limit and the credential check before it, for the routes and the lane."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from zndraw_joblib_core import PayloadTooLarge, RequestTimeout
from zndraw_joblib_server.auth import auth_of, check_token

__all__ = ["check_declared_length", "read_body", "require_token"]


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse (413) a request whose ``Content-Length`` exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes.", limit=limit)


def require_token(request: Request) -> None:
    """Refuse (401) a request without a valid bearer token before its body is read.

    Only when the app authenticates with the queue's own :func:`get_current_user` (a host
    that overrides it authenticates its own way, after the body was read).
    """
    from zndraw_joblib_server.dependencies import get_current_user

    app = request.scope.get("app")
    if app is None or get_current_user in getattr(app, "dependency_overrides", {}):
        return
    if getattr(app.state, "auth_settings", None) is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    check_token(token.strip() if scheme.lower() == "bearer" else None, auth_of(app.state))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it (declared or sent) exceeds ``limit``.

    Raises:
        PayloadTooLarge: The body is larger than ``limit``.
        RequestTimeout: The client went away (or was cut off for being too slow) mid-body.
    """
    check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body exceeds {limit} bytes.", limit=limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestTimeout("The request body was not received completely.") from None
    return b"".join(chunks)
