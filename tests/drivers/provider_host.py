"""A host app with one ``@internal`` provider (for the provider contract tests).

Serve it with ``uvicorn provider_host:app`` (``--app-dir tests/drivers``).
"""

from __future__ import annotations

from fastapi import FastAPI
from zndraw_auth import AuthSettings, UserCreate, UserRead, auth_backend, fastapi_users

from zndraw_joblib_server import InternalProvider, JobQueue

calls: dict[str, int] = {}


def list_files(params: dict[str, str]) -> dict[str, object]:
    """A stand-in file browser: counts its calls per path; ``boom`` fails."""
    path = params.get("path", ".")
    if path == "boom":
        raise OSError("no such directory")
    calls[path] = calls.get(path, 0) + 1
    return {"listing": path, "calls": calls[path]}


queue = JobQueue(
    internal_providers=[
        InternalProvider(
            "filesystem",
            "files",
            list_files,
            schema={"type": "object", "properties": {"path": {"type": "string"}}},
        )
    ]
)
app = FastAPI(lifespan=queue.lifespan)
app.state.auth_settings = AuthSettings()
queue.include_in(app)
app.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt")
app.include_router(fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth")
