"""The reference app's account routes: zndraw-auth's users, hardened.

zndraw-auth's user manager hashes passwords (argon2, about 0.3 s of CPU) on the event loop,
accepts any password and lets ``PATCH /users/...`` write ``null`` into NOT NULL columns. The
manager here hashes in a few worker threads (:class:`ThreadedPasswordHelper`), enforces
``MIN_PASSWORD_LENGTH`` (a 422 ``validation-error`` problem), forgets a changed or deleted
user in the token user cache, and :class:`UserUpdate` refuses ``null``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi_users import FastAPIUsers, exceptions
from fastapi_users.db import SQLAlchemyUserDatabase
from fastapi_users.password import PasswordHelper
from fastapi_users.schemas import BaseUserCreate
from pydantic import EmailStr, field_validator
from pydantic.json_schema import SkipJsonSchema
from zndraw_auth import User, UserRead, auth_backend
from zndraw_auth import UserCreate as _AuthUserCreate
from zndraw_auth import UserUpdate as _AuthUserUpdate
from zndraw_auth.db import get_user_db
from zndraw_auth.settings import AuthSettings, get_auth_settings
from zndraw_auth.users import UserManager

from zndraw_joblib_core import RequestValidationFailed
from zndraw_joblib_server.auth import auth_of, forget_user
from zndraw_joblib_server.settings import JobLibSettings

__all__ = [
    "JobLibUserManager",
    "ThreadedPasswordHelper",
    "UserUpdate",
    "get_user_manager",
    "include_account_routes",
]

_T = TypeVar("_T")


class UserUpdate(_AuthUserUpdate):
    """zndraw-auth's user update, refusing ``null`` (omit a field to leave it unchanged)."""

    password: str | SkipJsonSchema[None] = None
    email: EmailStr | SkipJsonSchema[None] = None
    is_active: bool | SkipJsonSchema[None] = None
    is_superuser: bool | SkipJsonSchema[None] = None
    is_verified: bool | SkipJsonSchema[None] = None

    @field_validator("password", "email", "is_active", "is_superuser", "is_verified")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for fields the request sent: an explicit null would reach a NOT NULL
        # column (a 500) or be ignored silently.
        if value is None:
            raise ValueError("may not be null; omit the field to leave it unchanged")
        return value


class ThreadedPasswordHelper(PasswordHelper):
    """fastapi-users' password helper whose hashing can run in worker threads.

    Args:
        limiter: Caps how many hashes run at once (each takes a core for ~0.3 s).
    """

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    async def run(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run ``func(*args)`` (a hash or a verification) in a worker thread."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self.limiter)

    async def hash_async(self, password: str) -> str:
        """The hash of ``password``, computed off the event loop."""
        return await self.run(self.hash, password)

    async def verify_and_update_async(
        self, plain_password: str, hashed_password: str
    ) -> tuple[bool, str | None]:
        """``verify_and_update``, computed off the event loop."""
        return await self.run(self.verify_and_update, plain_password, hashed_password)


class JobLibUserManager(UserManager):
    """zndraw-auth's user manager, hashing off the event loop with a password policy.

    Args:
        user_db: fastapi-users' user database adapter.
        password_helper: The threaded helper (one per app: it holds the thread limiter).
        min_password_length: Shortest password accepted.
        forget: Called with a user's id after it was changed or deleted (cache eviction).
    """

    password_helper: ThreadedPasswordHelper

    def __init__(
        self,
        user_db: SQLAlchemyUserDatabase[User, uuid.UUID],
        password_helper: ThreadedPasswordHelper,
        min_password_length: int,
        forget: Callable[[uuid.UUID], None],
    ) -> None:
        super().__init__(user_db, password_helper)
        self.min_password_length = min_password_length
        self._forget = forget

    async def validate_password(self, password: str, user: Any) -> None:
        """Refuse (422 ``validation-error`` problem) a password shorter than the minimum."""
        if len(password) < self.min_password_length:
            message = f"the password needs at least {self.min_password_length} characters"
            raise RequestValidationFailed(
                f"body.password: {message}",
                errors=[{"loc": ["body", "password"], "msg": message, "type": "too_short"}],
            )

    async def create(
        self, user_create: BaseUserCreate, safe: bool = False, request: Request | None = None
    ) -> User:
        """Create a user (as fastapi-users does), hashing the password in a thread."""
        await self.validate_password(user_create.password, user_create)
        if await self.user_db.get_by_email(user_create.email) is not None:
            raise exceptions.UserAlreadyExists()
        values = (
            user_create.create_update_dict()  # type: ignore[no-untyped-call]
            if safe
            else user_create.create_update_dict_superuser()  # type: ignore[no-untyped-call]
        )
        values["hashed_password"] = await self.password_helper.hash_async(values.pop("password"))
        created = await self.user_db.create(values)
        await self.on_after_register(created, request)
        return created

    async def authenticate(self, credentials: Any) -> User | None:
        """The user the e-mail and password name, or None; hashing runs in a thread."""
        try:
            if "\x00" in credentials.username:  # no e-mail has one; PostgreSQL refuses it
                raise exceptions.UserNotExists()
            user = await self.get_by_email(credentials.username)
        except exceptions.UserNotExists:
            # Hash anyway, so an unknown e-mail takes as long as a wrong password.
            await self.password_helper.hash_async(credentials.password)
            return None
        verified, new_hash = await self.password_helper.verify_and_update_async(
            credentials.password, user.hashed_password
        )
        if not verified:
            return None
        if new_hash is not None:
            await self.user_db.update(user, {"hashed_password": new_hash})
        return user

    async def _update(self, user: User, update_dict: dict[str, Any]) -> User:
        password = update_dict.pop("password", None)
        if password is not None:
            await self.validate_password(password, user)
        values: dict[str, Any] = {}
        if "email" in update_dict and update_dict["email"] != user.email:
            try:
                await self.get_by_email(update_dict["email"])
                raise exceptions.UserAlreadyExists()
            except exceptions.UserNotExists:
                values["is_verified"] = False
        values.update(update_dict)
        if password is not None:
            values["hashed_password"] = await self.password_helper.hash_async(password)
        updated = await self.user_db.update(user, values)
        self._forget(user.id)
        return updated

    async def on_after_delete(self, user: User, request: Request | None = None) -> None:
        """Forget the deleted user in this process's token user cache."""
        self._forget(user.id)


def get_user_manager(
    min_password_length: int, password_helper: ThreadedPasswordHelper
) -> Callable[..., AsyncIterator[JobLibUserManager]]:
    """A FastAPI dependency yielding :class:`JobLibUserManager` (for ``FastAPIUsers``)."""

    async def user_manager(
        request: Request,
        user_db: Annotated[SQLAlchemyUserDatabase[User, uuid.UUID], Depends(get_user_db)],
        settings: Annotated[AuthSettings, Depends(get_auth_settings)],
    ) -> AsyncIterator[JobLibUserManager]:
        state = request.app.state

        def forget(user_id: uuid.UUID) -> None:
            if getattr(state, "auth_settings", None) is not None:  # else nothing is cached
                forget_user(auth_of(state), user_id)

        manager = JobLibUserManager(user_db, password_helper, min_password_length, forget)
        manager.reset_password_token_secret = (
            settings.reset_password_token_secret.get_secret_value()
        )
        manager.verification_token_secret = settings.verification_token_secret.get_secret_value()
        manager.is_dev_mode = settings.is_dev_mode
        yield manager

    return user_manager


_INVALID = {
    422: {
        "description": "Invalid request: FastAPI's validation error (`application/json`), or a "
        "`validation-error` problem (`application/problem+json`) for a password shorter "
        "than MIN_PASSWORD_LENGTH.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/problem+json": {"schema": {"type": "object"}},
        },
    }
}
_LOGGED_OUT = {204: {"description": "Logged out (the token stays valid until it expires)."}}
_TOO_MANY = {
    429: {
        "description": "Too many attempts from this client address; retry after "
        "`Retry-After` seconds (`application/problem+json`, type too-many-requests)."
    }
}


def include_account_routes(app: FastAPI, settings: JobLibSettings) -> None:
    """Mount the account routes with the hardened user manager.

    ``/auth/jwt/login``, ``/auth/jwt/logout``, ``/auth/register`` (only when
    ``ALLOW_REGISTRATION``) and ``/users/*``.
    """
    helper = ThreadedPasswordHelper(anyio.CapacityLimiter(settings.password_hash_threads))
    users = FastAPIUsers[User, uuid.UUID](
        get_user_manager(settings.min_password_length, helper), [auth_backend]
    )
    auth_router: APIRouter = users.get_auth_router(auth_backend)
    _document(auth_router, "/login", _TOO_MANY)
    _document(auth_router, "/logout", _LOGGED_OUT)
    app.include_router(auth_router, prefix="/auth/jwt", tags=["auth"])
    if settings.allow_registration:
        register_router = users.get_register_router(UserRead, _AuthUserCreate)
        _document(register_router, "/register", {**_TOO_MANY, **_INVALID})
        app.include_router(register_router, prefix="/auth", tags=["auth"])
    users_router = users.get_users_router(UserRead, UserUpdate)
    _document(users_router, "/me", _INVALID, method="PATCH")
    _document(users_router, "/{id}", _INVALID, method="PATCH")
    app.include_router(users_router, prefix="/users", tags=["users"])


def _document(
    router: APIRouter, path: str, responses: dict[int, Any], method: str | None = None
) -> None:
    """Add answers fastapi-users does not declare to a route's OpenAPI responses."""
    for route in router.routes:
        if getattr(route, "path", "") != path:
            continue
        if method is None or method in getattr(route, "methods", ()):
            route.responses.update(responses)  # type: ignore[attr-defined]
