"""Where the queue's sessions come from, whatever session maker a host hands over.

The queue needs an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` (its dialect, its URL, its
connections for the write gate, the kept connections and PostgreSQL ``LISTEN``) and plain
SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncSession` objects bound to it. A host's
``async_sessionmaker`` is used as it is. Anything else that makes sessions (a function
returning a session, or an async context manager yielding one, such as a session maker
wrapped in a lock) only tells the queue which engine to use: the queue then makes its own
sessions on that engine, one ``async_sessionmaker(engine, expire_on_commit=False)`` per
engine, so every request, long-poll and sweeper pass of the process shares one
:class:`~zndraw_joblib_server.storage.Database`.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

__all__ = ["SessionSource", "engine_of", "queue_session_maker", "resolve_session_maker"]

SessionSource = async_sessionmaker[AsyncSession] | Callable[[], Any]
"""An ``async_sessionmaker``, or any callable returning a session (or an async context
manager yielding one)."""

_by_source: weakref.WeakKeyDictionary[Any, async_sessionmaker[AsyncSession]] = (
    weakref.WeakKeyDictionary()
)
_by_engine: weakref.WeakKeyDictionary[AsyncEngine, async_sessionmaker[AsyncSession]] = (
    weakref.WeakKeyDictionary()
)


def engine_of(source: Any) -> AsyncEngine | None:
    """The engine behind ``source``, if it can be seen without opening a session.

    Found on an ``async_sessionmaker`` (its ``bind``), through ``functools.wraps``
    (``__wrapped__``), or by making a session: a callable returning an ``AsyncSession``
    is called once (a session connects only when used). None for anything else, e.g. an
    async context manager (see :func:`resolve_session_maker`).
    """
    for _ in range(8):  # a few layers of wrapping, never a cycle
        kw = getattr(source, "kw", None)
        bind = kw.get("bind") if isinstance(kw, dict) else None
        if isinstance(bind, AsyncEngine):
            return bind
        wrapped = getattr(source, "__wrapped__", None)
        if wrapped is None:
            break
        source = wrapped
    if inspect.isasyncgenfunction(source) or inspect.iscoroutinefunction(source):
        return None  # calling it would start work that has to be awaited
    try:
        made = source()
    except Exception:
        return None
    if isinstance(made, AsyncSession):
        return made.bind if isinstance(made.bind, AsyncEngine) else None
    if inspect.iscoroutine(made):
        made.close()
    return None


def _remember(source: Any, engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The queue's maker for ``engine`` (one per engine), noted as ``source``'s."""
    maker = _by_engine.get(engine)
    if maker is None:
        maker = _by_engine[engine] = async_sessionmaker(engine, expire_on_commit=False)
    _by_source[source] = maker
    return maker


def queue_session_maker(
    source: SessionSource, engine: AsyncEngine | None = None
) -> async_sessionmaker[AsyncSession]:
    """The session maker the queue uses for ``source`` (without opening a session).

    Args:
        source: The host's session maker, or any callable returning sessions.
        engine: The engine behind ``source``, when it cannot be seen from it.

    Raises:
        TypeError: ``source`` is not an ``async_sessionmaker``, its engine cannot be seen
            and none was given.
    """
    if isinstance(source, async_sessionmaker) and isinstance(source.kw.get("bind"), AsyncEngine):
        _by_engine.setdefault(source.kw["bind"], source)
        return source
    known = _by_source.get(source)
    if known is not None:
        return known
    bind = engine or engine_of(source)
    if bind is None:
        raise TypeError(
            f"cannot tell which engine {source!r} makes sessions on: pass an "
            "async_sessionmaker bound to an AsyncEngine, or the engine too "
            "(JobQueue(engine=..., session_maker=...))"
        )
    return _remember(source, bind)


async def resolve_session_maker(source: SessionSource) -> async_sessionmaker[AsyncSession]:
    """Like :func:`queue_session_maker`, opening one session of ``source`` if need be.

    For a source whose engine cannot be seen (e.g. an async context manager yielding
    sessions), one session is opened once, its ``bind`` noted and the session closed.

    Raises:
        TypeError: The session made has no ``AsyncEngine`` bind.
    """
    with contextlib.suppress(TypeError):
        return queue_session_maker(source)  # it knows the sources seen before
    made: Any = source()
    if inspect.isawaitable(made) and not hasattr(made, "__aenter__"):
        made = await made
    async with made as session:  # a session is its own context manager: closed on exit
        bind = getattr(session, "bind", None)
    if not isinstance(bind, AsyncEngine):
        raise TypeError(f"the sessions of {source!r} are not bound to an AsyncEngine")
    return _remember(source, bind)
