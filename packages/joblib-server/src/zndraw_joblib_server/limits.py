"""The request body limit, shared by the routes and the fast lane."""

from __future__ import annotations

from starlette.requests import Request

from zndraw_joblib_core import PayloadTooLarge

__all__ = ["check_declared_length", "read_body"]


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse (413) a request whose ``Content-Length`` exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes.", limit=limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it (declared or sent) exceeds ``limit``."""
    check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds {limit} bytes.", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)
