"""Dependency-injection override points for host apps.

Every database access (request sessions, long-polls, the sweeper) derives from
:func:`get_async_session_maker`; users come from zndraw-auth. Override any of these with
``app.dependency_overrides[...]``; each docstring shows how.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from zndraw_auth import User
from zndraw_auth.users import bearer_transport

from zndraw_joblib_server.auth import auth_of, authenticate
from zndraw_joblib_server.services.access import (
    Actor,
    AllowAuthenticated,
    JobAccess,
    OwnerOrSuperuser,
    RoomAccess,
    check_room,
)
from zndraw_joblib_server.services.common import validate_room
from zndraw_joblib_server.sessions import resolve_session_maker
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import Database, EventSink, get_database

__all__ = [
    "ActorDep",
    "DatabaseDep",
    "EventSinkDep",
    "JobAccessDep",
    "ReadableRoom",
    "RoomAccessDep",
    "SessionMakerDep",
    "SettingsDep",
    "WritableRoom",
    "get_actor",
    "get_async_session_maker",
    "get_current_user",
    "get_database_dep",
    "get_event_sink",
    "get_job_access",
    "get_room_access",
    "get_settings",
    "readable_room",
    "settings_of",
    "writable_room",
]


async def get_settings(request: Request) -> JobLibSettings:
    """The queue's settings: ``app.state.joblib_settings``, else read once from the environment.

    Override::

        app.state.joblib_settings = JobLibSettings(worker_timeout_seconds=120)
        # or
        app.dependency_overrides[get_settings] = lambda: my_settings

    (The request body limit is read from ``app.state.joblib_settings`` directly, before
    dependencies run.)
    """
    return settings_of(request)


def settings_of(request: Request) -> JobLibSettings:
    """The settings in ``app.state.joblib_settings``, else the environment's.

    The environment is read once per app (kept in ``app.state.joblib_env_settings``), so
    two apps never share a settings object they did not share on purpose.
    """
    state = request.app.state
    found = getattr(state, "joblib_settings", None) or getattr(state, "joblib_env_settings", None)
    if found is None:
        found = state.joblib_env_settings = JobLibSettings()
    return found


SettingsDep = Annotated[JobLibSettings, Depends(get_settings)]
"""The settings, injected."""


async def get_async_session_maker(request: Request) -> async_sessionmaker[AsyncSession]:
    """The single source of database sessions; defaults to zndraw-auth's session maker.

    It is ``app.state.session_maker``, where zndraw-auth keeps it, so a host wired for
    zndraw-auth needs nothing more. Any ``async_sessionmaker`` works, and so does a
    callable returning sessions (or an async context manager yielding one, e.g. a maker
    wrapped in a lock): the queue only takes the engine from it and makes its own plain
    ``AsyncSession`` objects there. Override::

        app.dependency_overrides[get_async_session_maker] = lambda: my_session_maker
    """
    return request.app.state.session_maker  # type: ignore[no-any-return]


SessionMakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_async_session_maker)]
"""The session maker, injected."""


async def get_database_dep(session_maker: SessionMakerDep, settings: SettingsDep) -> Database:
    """The process's :class:`Database` handle for the injected session maker (derived).

    The session maker may be wrapped (e.g. in a lock): the queue then finds its engine
    once and makes its own sessions there (see :mod:`zndraw_joblib_server.sessions`).
    """
    return get_database(await resolve_session_maker(session_maker), settings)


DatabaseDep = Annotated[Database, Depends(get_database_dep)]
"""The database handle, injected."""


async def get_room_access() -> RoomAccess:
    """Who may read or write a room. Default: every authenticated user, every room.

    Override with any object that has ``async can_read(actor, room_id) -> bool`` and
    ``async can_write(actor, room_id) -> bool``::

        class MembersOnly:
            async def can_read(self, actor, room_id):
                return await is_member(actor.id, room_id)

            async def can_write(self, actor, room_id):
                return await is_member(actor.id, room_id)

        app.dependency_overrides[get_room_access] = MembersOnly

    A refusal answers 403 ``forbidden``; to answer with a problem of your own (e.g. 423
    for a locked room), raise a :class:`~zndraw_joblib_core.ProblemError` subclass in
    the hook, or return one (or a :class:`~zndraw_joblib_core.ProblemDetail`).
    """
    return _ALLOW_ALL


_ALLOW_ALL = AllowAuthenticated()

RoomAccessDep = Annotated[RoomAccess, Depends(get_room_access)]
"""The room access policy, injected."""


async def get_job_access() -> JobAccess:
    """Whose workers may serve a job. Default: its owner (first registrant) and superusers.

    The default is :class:`~zndraw_joblib_server.services.access.OwnerOrSuperuser`.
    Override with any object that has ``async can_serve(actor, job) -> bool`` (``job`` is
    the :class:`~zndraw_joblib_server.models.Job` row: ``owner_id``, ``room_id``,
    ``category``, ``name``...), e.g. to let a room's collaborators serve each other's jobs::

        class Collaborators:
            async def can_serve(self, actor, job):
                if actor.is_superuser or job.owner_id == actor.id:
                    return True
                return job.room_id != "@global" and await is_member(actor.id, job.room_id)

        app.dependency_overrides[get_job_access] = Collaborators

    It is consulted when a worker is linked to a job (registering it); claims hand out
    only tasks of linked jobs. A refusal answers 403 ``forbidden``.
    """
    return _OWNER_OR_SUPERUSER


_OWNER_OR_SUPERUSER = OwnerOrSuperuser()

JobAccessDep = Annotated[JobAccess, Depends(get_job_access)]
"""The job access policy, injected."""


async def get_event_sink(request: Request) -> EventSink | None:
    """Where task and job events go after commit. Default: ``app.state.joblib_event_sink``.

    The sink is an ``async (events: Sequence[Event]) -> None`` callable; its failures are
    logged, never returned to the client. Override, e.g. for Socket.IO::

        async def to_socketio(events):
            for event in events:
                await sio.emit(event.kind, event.model_dump(mode="json"),
                               room=f"room:{event.room_id}")

        app.dependency_overrides[get_event_sink] = lambda: to_socketio
    """
    return getattr(request.app.state, "joblib_event_sink", None)


EventSinkDep = Annotated[EventSink | None, Depends(get_event_sink)]
"""The event sink, injected."""


async def get_current_user(
    request: Request,
    token: Annotated[str | None, Depends(bearer_transport.scheme)],
) -> User:
    """The active zndraw-auth user of the request's bearer token (401 problem otherwise).

    It accepts exactly the tokens zndraw-auth issues (secret and lifetime from
    ``app.state.auth_settings``) and looks the user up where zndraw-auth keeps users
    (``app.state.session_maker``) without zndraw-auth's thread-pool dependencies, reusing a
    looked-up user for ``user_cache_seconds`` (see :mod:`zndraw_joblib_server.auth`). No
    connection is held once it returns. Override it to authenticate differently, with any
    dependency that returns an object with ``id`` and ``is_superuser``, e.g. zndraw-auth's
    own::

        from zndraw_auth import current_user_scoped_session

        app.dependency_overrides[get_current_user] = current_user_scoped_session
    """
    auth = auth_of(request.app.state)
    return await authenticate(token, auth, settings_of(request).user_cache_seconds)


async def get_actor(user: Annotated[User, Depends(get_current_user)]) -> Actor:
    """The authenticated caller, built from :func:`get_current_user`'s user.

    Every endpoint, long-polls included, takes its caller from here. Override
    :func:`get_current_user` to change how users authenticate, or this to build the actor
    differently::

        app.dependency_overrides[get_actor] = my_actor_dependency
    """
    return Actor.from_user(user)


ActorDep = Annotated[Actor, Depends(get_actor)]
"""The authenticated caller, injected."""

_RoomId = Annotated[str, Path(description="The room id, or `@global`.")]


async def readable_room(room_id: _RoomId, actor: ActorDep, access: RoomAccessDep) -> str:
    """Dependency: the ``room_id`` path parameter, a room the caller may read.

    The path's room, checked against the naming rules (400 ``invalid-room-id``) and
    against the room access policy: may the caller read it (403 ``forbidden``).
    """
    validate_room(room_id)
    await check_room(access, actor, room_id, write=False)
    return room_id


async def writable_room(room_id: _RoomId, actor: ActorDep, access: RoomAccessDep) -> str:
    """Dependency: the ``room_id`` path parameter, a room the caller may write to.

    The path's room, checked against the naming rules (400 ``invalid-room-id``) and
    against the room access policy: may the caller write to it (403 ``forbidden``).
    """
    validate_room(room_id)
    await check_room(access, actor, room_id, write=True)
    return room_id


ReadableRoom = Annotated[str, Depends(readable_room)]
"""A room the caller may read, from the ``room_id`` path parameter."""

WritableRoom = Annotated[str, Depends(writable_room)]
"""A room the caller may write to, from the ``room_id`` path parameter."""
