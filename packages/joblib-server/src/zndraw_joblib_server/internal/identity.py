"""The account that owns the in-process executor's worker (no superuser, no usable login)."""

from __future__ import annotations

import secrets
import uuid

import anyio
from fastapi_users.password import PasswordHelper
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from zndraw_auth import User

from zndraw_joblib_server.storage.database import Database

__all__ = ["SERVICE_EMAIL", "ensure_service_user"]

SERVICE_EMAIL = "internal-executor@zndraw-joblib.invalid"
"""The e-mail of the in-process executor's account (``.invalid``: never a real address)."""


async def ensure_service_user(database: Database, email: str = SERVICE_EMAIL) -> uuid.UUID:
    """The id of the executor's account, created on first use (through the write gate).

    It is active and not a superuser; its password is random and never kept, so nobody can
    log in as it. Several processes starting together may race: the unique e-mail keeps one
    row, and the loser reads it.
    """
    lookup = select(User.id).where(func.lower(User.email) == email.lower())
    async with database.read() as session:
        found = await session.scalar(lookup)
    if found is not None:
        return uuid.UUID(str(found))
    hashed = await anyio.to_thread.run_sync(PasswordHelper().hash, secrets.token_urlsafe(32))
    for _ in range(2):
        try:
            async with database.write() as uow:
                found = await uow.session.scalar(lookup)
                if found is not None:
                    return uuid.UUID(str(found))
                user = User(email=email, hashed_password=hashed, is_active=True)
                uow.session.add(user)
                await uow.session.flush()
                return uuid.UUID(str(user.id))
        except IntegrityError:  # created by another process meanwhile: read it again
            continue
    raise RuntimeError(f"could not create the internal executor's account {email}")
