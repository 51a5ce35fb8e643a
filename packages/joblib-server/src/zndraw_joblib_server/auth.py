"""Who sent a request: zndraw-auth's bearer tokens, checked without leaving the event loop.

zndraw-auth's own dependencies resolve the JWT strategy and the session maker through
synchronous FastAPI dependencies (each one a hop to the thread pool) and look the user up in a
new ORM session on every request. On the queue's hot paths (claim, update, submit) that was a
third of a request's cost, so the queue checks the same tokens itself: the signature, expiry
and audience exactly as zndraw-auth's JWT strategy does, then the user's row, which it reuses
for ``user_cache_seconds`` (default 1 s); each app keeps its own checker and cache
(:class:`AppAuth` in ``app.state``). A user deactivated or demoted in the database is
therefore refused within that time; a token stays valid until it expires, as with zndraw-auth.

Per-task tokens (:mod:`zndraw_joblib_server.task_tokens`) are accepted too, with the rights
of the user they name, but only while their task holds its lease: that is checked in the
database on every request that presents one, never cached.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from fastapi_users.authentication import JWTStrategy
from pydantic import SecretStr
from zndraw_auth import User

from zndraw_joblib_core import Unauthorized
from zndraw_joblib_server.task_tokens import is_task_token, verify_task_token

__all__ = [
    "AppAuth",
    "TokenChecker",
    "UserCache",
    "auth_of",
    "authenticate",
    "check_token",
    "forget_user",
    "token_user_gone",
]

_MAX_CACHED_USERS = 10_000
_MAX_CACHED_TOKENS = 10_000


class TokenChecker:
    """Decodes zndraw-auth access tokens with one settings object's secret."""

    def __init__(self, auth_settings: Any) -> None:
        strategy: JWTStrategy[User, uuid.UUID] = JWTStrategy(
            secret=auth_settings.secret_key.get_secret_value(),
            lifetime_seconds=auth_settings.token_lifetime_seconds,
        )
        key = strategy.decode_key
        self._key = key.get_secret_value() if isinstance(key, SecretStr) else key
        self._audience = strategy.token_audience
        self._algorithms = [strategy.algorithm]
        self._verified: dict[str, tuple[float, uuid.UUID]] = {}

    def user_id(self, token: str) -> uuid.UUID:
        """The user id a valid token names.

        A token whose signature was verified before is not verified again until it expires
        (workers send the same token with every request).

        Raises:
            Unauthorized: The token is malformed, badly signed, expired or names no user.
        """
        known = self._verified.get(token)
        if known is not None and known[0] > time.time():
            return known[1]
        try:
            data = jwt.decode(
                token, self._key, audience=self._audience, algorithms=self._algorithms
            )
            user_id = uuid.UUID(str(data["sub"]))
        except (jwt.PyJWTError, KeyError, ValueError, TypeError):
            raise Unauthorized("The bearer token is invalid or expired.") from None
        expires = data.get("exp")
        if isinstance(expires, int | float):
            if len(self._verified) >= _MAX_CACHED_TOKENS:
                self._verified.clear()
            self._verified[token] = (float(expires), user_id)
        return user_id


class UserCache:
    """Users looked up recently, each kept for a few seconds (one cache per app)."""

    def __init__(self) -> None:
        self._users: dict[uuid.UUID, tuple[float, User]] = {}

    def get(self, user_id: uuid.UUID) -> User | None:
        """The cached user, unless it is older than its time to live."""
        entry = self._users.get(user_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def forget(self, user_id: uuid.UUID) -> None:
        """Drop ``user_id``'s entry (the user was changed or deleted)."""
        self._users.pop(user_id, None)

    def put(self, user: User, seconds: float) -> None:
        """Keep ``user`` for ``seconds``."""
        if seconds <= 0:
            return
        if len(self._users) >= _MAX_CACHED_USERS:
            self._users.clear()
        self._users[user.id] = (time.monotonic() + seconds, user)


class AppAuth:
    """One app's token checker and user cache (kept in ``app.state``; see :func:`auth_of`).

    Attributes:
        settings: zndraw-auth's settings the checker was built from.
        session_maker: Where the users are looked up.
        checker: Verifies tokens (and remembers the verified ones).
        users: Users looked up recently.
    """

    def __init__(self, auth_settings: Any, session_maker: Any) -> None:
        self.settings = auth_settings
        self.session_maker = session_maker
        self.checker = TokenChecker(auth_settings)
        self.users = UserCache()


def auth_of(state: Any) -> AppAuth:
    """The app's :class:`AppAuth`, from its ``app.state`` (``auth_settings``, ``session_maker``).

    Built on first use and again when the host replaces either; two apps never share one.
    """
    found: AppAuth | None = getattr(state, "joblib_auth", None)
    settings, session_maker = state.auth_settings, getattr(state, "session_maker", None)
    if found is None or found.settings is not settings or found.session_maker is not session_maker:
        found = state.joblib_auth = AppAuth(settings, session_maker)
    return found


def check_token(token: str | None, auth: AppAuth) -> uuid.UUID | None:
    """The user id of a well-signed, unexpired token, without looking the user up.

    Request bodies are read only after this check (see :mod:`zndraw_joblib_server.limits`),
    so a caller without a valid token cannot make the server buffer one.

    Returns:
        The user id; None for a per-task token, whose task's lease is checked once the
        request is authenticated (:func:`authenticate`).

    Raises:
        Unauthorized: No token, or an invalid one.
    """
    if not token:
        raise Unauthorized("Not authenticated: send 'Authorization: Bearer <token>'.")
    try:
        return auth.checker.user_id(token)
    except Unauthorized:
        if not is_task_token(token, auth.settings):
            raise
        return None


async def authenticate(token: str | None, auth: AppAuth, cache_seconds: float) -> User:
    """The active user a bearer token belongs to.

    Args:
        token: The bearer token (None when the request carried none).
        auth: The app's checker and user cache (:func:`auth_of`).
        cache_seconds: How long a looked-up user may be reused.

    Raises:
        Unauthorized: No token, an invalid one, or the user is unknown or inactive.
    """
    user_id = check_token(token, auth)
    if user_id is None:  # a per-task token
        user_id = (await verify_task_token(token, auth.settings, auth.session_maker)).user_id
    user = auth.users.get(user_id)
    if user is None:
        async with auth.session_maker() as session:
            user = await session.get(User, user_id)
            if user is not None:
                session.expunge(user)
        if user is None or not user.is_active:
            raise Unauthorized("The token's user does not exist or is inactive.")
        auth.users.put(user, cache_seconds)
    return user


def forget_user(auth: AppAuth, user_id: uuid.UUID) -> None:
    """Make this app look ``user_id`` up again on its next request.

    Other server processes keep their entry for up to ``user_cache_seconds``.
    """
    auth.users.forget(user_id)


async def token_user_gone(token: str | None, auth: AppAuth) -> bool:
    """Whether ``token`` is a valid token whose user no longer exists (it was deleted).

    Used after a write failed on a foreign key: a user deleted by another process (or
    within ``user_cache_seconds``) still passed :func:`authenticate` from the cache. The
    user is forgotten, so the next request is refused at once.
    """
    if not token:
        return False
    try:
        user_id = auth.checker.user_id(token)
    except Unauthorized:
        return False
    async with auth.session_maker() as session:
        exists = await session.get(User, user_id) is not None
    if not exists:
        forget_user(auth, user_id)
    return not exists
