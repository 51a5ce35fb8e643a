"""A host's own FastAPI app that mounts the queue with JobQueue and nothing else of ours.

Serve it with ``uvicorn host_app:app`` (``--app-dir tests/drivers``); it reads
``ZNDRAW_JOBLIB_*`` and ``ZNDRAW_AUTH_*`` from the environment like the reference app.
"""

from __future__ import annotations

from fastapi import FastAPI
from zndraw_auth import AuthSettings, UserCreate, UserRead, auth_backend, fastapi_users

from zndraw_joblib_server import JobQueue

queue = JobQueue()
app = FastAPI(lifespan=queue.lifespan)
app.state.auth_settings = AuthSettings()
queue.include_in(app)
app.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt")
app.include_router(fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth")
