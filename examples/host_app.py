"""A host app in the shape of ZnDraw: the queue mounted beside the host's own everything.

* the host's own error format (422 and 500) on its own routes, left alone by the queue;
* a room lock: the host's access hook refuses writes to a locked room with its own 423
  ``room-locked`` problem;
* the host's session maker wrapped in a lock (as ZnDraw does on SQLite);
* Socket.IO (python-socketio) wrapping the FastAPI app: frontends ``join`` a room and get the
  queue's ``task_status_event`` and ``jobs_invalidate`` there; with ``HOST_REDIS_URL`` set,
  emits reach clients of every process through Redis;
* an ``@internal`` job, ``AddFrames``, that the queue runs inside this server: it edits the
  room's frames (the host's own table) through a host route that accepts only its per-task
  token (``task_credential``);
* an ``@internal`` provider, ``@internal:frames:listing``, answering from that table;
* the predecessor's models (zndraw-joblib 0.1.x) imported beside the queue's, when installed.

Serve it (the ASGI app is ``app``; ``api`` is the FastAPI app inside)::

    export ZNDRAW_JOBLIB_DATABASE_URL=sqlite+aiosqlite:///./host.db
    export ZNDRAW_AUTH_SECRET_KEY=change-me-to-a-long-random-secret-0123456789
    export HOST_URL=http://127.0.0.1:8000   # where AddFrames calls this host back
    uvicorn examples.host_app:app

Locks live in this process's memory, to keep the example short; a real host keeps them in
its database or in Redis, so that every process sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import socketio
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from zndraw_auth import AuthSettings, UserCreate, UserRead, auth_backend, fastapi_users

from zndraw_joblib_core import ProblemError
from zndraw_joblib_server import (
    Actor,
    InternalProvider,
    JobLibSettings,
    JobQueue,
    create_engine,
    get_room_access,
)
from zndraw_joblib_server.internal import InternalTask, TaskCredentialDep
from zndraw_joblib_server.socketio_events import SocketIOEvents, room_of, socketio_server

with contextlib.suppress(ImportError):  # the predecessor's models load beside ours
    import zndraw_joblib.models  # noqa: F401


# --- the host's session maker, wrapped in a lock -----------------------------------------
settings = JobLibSettings()
engine = create_engine(settings.database_url)
plain_sessions = async_sessionmaker(engine, expire_on_commit=False)
_db_lock = asyncio.Lock()


@contextlib.asynccontextmanager
async def locked_sessions() -> AsyncIterator[AsyncSession]:
    """The host's sessions: one at a time (the queue takes only the engine from it)."""
    async with _db_lock, plain_sessions() as session:
        yield session


# --- Socket.IO: the queue's events, to the rooms frontends join ---------------------------
sio = socketio_server(
    redis_url=os.environ.get("HOST_REDIS_URL"),  # e.g. redis://127.0.0.1:6379/0
    channel=os.environ.get("HOST_REDIS_CHANNEL", "socketio"),
)


@sio.event
async def join(sid: str, data: dict[str, Any]) -> bool:
    """A frontend joins a room's updates: ``emit("join", {"room": "lab"})``."""
    await sio.enter_room(sid, room_of(str(data["room"])))
    return True


# --- the host's own table: the frames of each room ----------------------------------------
host_tables = MetaData()
frames = Table(
    "host_frame",
    host_tables,
    Column("id", Integer, primary_key=True),
    Column("room_id", String(64), nullable=False, index=True),
)
HOST_URL = os.environ.get("HOST_URL", "http://127.0.0.1:8000")


async def frame_count(room_id: str) -> int:
    """How many frames the room has."""
    async with locked_sessions() as session:
        query = select(func.count()).select_from(frames).where(frames.c.room_id == room_id)
        return int((await session.execute(query)).scalar_one())


# --- an @internal job and an @internal provider, run by the queue in this process ---------
class AddFrames(BaseModel):
    """Append frames to the room (``@internal:modifiers:AddFrames``)."""

    category: ClassVar[str] = "modifiers"
    count: int = Field(1, ge=1, le=100)

    def run(self, task: InternalTask, **kwargs: Any) -> dict[str, Any]:
        # Back into the host's own API, with a token good only while this task runs.
        answer = httpx.post(
            f"{HOST_URL}/rooms/{task.room_id}/frames",
            params={"count": self.count},
            headers={"Authorization": f"Bearer {task.token()}"},
            timeout=30,
        )
        answer.raise_for_status()
        return dict(answer.json())


async def list_frames(params: dict[str, str]) -> dict[str, Any]:
    """The room's frames, read as ``@internal:frames:listing?room=...``."""
    return {"room": params["room"], "frames": await frame_count(params["room"])}


listing = InternalProvider(
    "frames",
    "listing",
    list_frames,
    schema={"type": "object", "properties": {"room": {"type": "string"}}, "required": ["room"]},
)

queue = JobQueue(
    settings,
    engine=engine,
    session_maker=locked_sessions,
    event_sink=SocketIOEvents(sio),
    internal=[AddFrames],
    internal_providers=[listing],
)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The host's table first (before the executor writes), then the queue's start-up."""
    async with engine.begin() as connection:
        await connection.run_sync(host_tables.create_all)
    async with queue.lifespan():
        yield


# --- room locks, refused with the host's own problem --------------------------------------
class RoomLocked(ProblemError):
    """The room is locked for editing (the host's problem type)."""

    slug = "room-locked"
    title = "Room Locked"
    status = 423


LOCKED: set[str] = set()


class RoomLocks:
    """Everybody reads every room; nobody writes to a locked one."""

    async def can_read(self, actor: Actor, room_id: str) -> bool:
        return True

    async def can_write(self, actor: Actor, room_id: str) -> bool:
        if room_id in LOCKED:
            raise RoomLocked(f"Room '{room_id}' is locked.")
        return True


# --- the host's FastAPI app, with its own error format ------------------------------------
api = FastAPI(lifespan=lifespan, title="host")
api.state.auth_settings = AuthSettings()
queue.include_in(api)  # the queue's routes answer problem+json; the host's handlers stay
api.dependency_overrides[get_room_access] = RoomLocks


@api.exception_handler(RequestValidationError)
async def host_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """The host's own 422 format."""
    return JSONResponse({"ok": False, "reason": "invalid input"}, status_code=422)


@api.exception_handler(Exception)
async def host_server_error(request: Request, exc: Exception) -> JSONResponse:
    """The host's own 500 format."""
    return JSONResponse({"ok": False, "reason": "server error"}, status_code=500)


@api.put("/rooms/{room_id}/lock")
async def lock(room_id: str) -> dict[str, Any]:
    """Lock a room (the host's own route; no auth, to keep the example short)."""
    LOCKED.add(room_id)
    return {"ok": True, "locked": room_id}


@api.delete("/rooms/{room_id}/lock")
async def unlock(room_id: str) -> dict[str, Any]:
    """Unlock a room."""
    LOCKED.discard(room_id)
    return {"ok": True, "unlocked": room_id}


@api.get("/rooms/{room_id}/size")
async def size(room_id: str, frames: int) -> dict[str, Any]:
    """A host route with a typed query parameter (its 422 is the host's)."""
    return {"ok": True, "frames": frames}


@api.post("/rooms/{room_id}/frames")
async def add_frames(room_id: str, count: int, credential: TaskCredentialDep) -> dict[str, Any]:
    """Append frames: only for a running task of this room (its per-task token)."""
    if credential.room_id != room_id:
        raise HTTPException(403, "The task belongs to another room.")
    async with locked_sessions() as session:
        await session.execute(insert(frames), [{"room_id": room_id}] * count)
        await session.commit()
    return {"room": room_id, "frames": await frame_count(room_id)}


@api.get("/rooms/{room_id}/frames")
async def room_frames(room_id: str) -> dict[str, Any]:
    """The room's frame count (no auth, to keep the example short)."""
    return {"room": room_id, "frames": await frame_count(room_id)}


@api.get("/crash")
async def crash() -> None:
    """A host route that fails (its 500 is the host's)."""
    raise RuntimeError("host bug")


api.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt")
api.include_router(fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth")

app = socketio.ASGIApp(sio, other_asgi_app=api)
"""What uvicorn serves: Socket.IO at ``/socket.io``, everything else by the FastAPI app."""
