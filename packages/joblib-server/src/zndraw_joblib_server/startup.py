"""Checks the reference app makes before it serves: the token secret and the default admin.

Outside development mode (zndraw-auth's ``is_dev_mode``: no default admin configured) the
server refuses to start without ``ZNDRAW_AUTH_SECRET_KEY`` of at least 32 bytes. In
development mode without a secret it generates a random one once and keeps it in a file
readable by the owner only, so restarts keep issued tokens valid; tokens are never signed
with a constant. It also refuses to make an existing account the default admin unless the
configuration could have created it (see :func:`ensure_admin`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

import anyio.to_thread
from fastapi_users.password import PasswordHelper
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from zndraw_auth import AuthSettings, User

from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage.engine import is_memory_sqlite

__all__ = [
    "MIN_SECRET_BYTES",
    "StartupRefused",
    "dev_secret_path",
    "ensure_admin",
    "resolve_secret",
]

logger = logging.getLogger("zndraw_joblib_server")

MIN_SECRET_BYTES = 32
"""Shortest accepted token secret (HS256 wants at least as many bytes as its hash)."""

_UPSTREAM_DEFAULT_SECRET = "CHANGE-ME-IN-PRODUCTION-SECRET!"
_DEFAULT_SECRET_FILE = "zndraw-joblib.secret"


class StartupRefused(RuntimeError):
    """The configuration is unsafe; the message says what to change (one line)."""


def dev_secret_path(settings: JobLibSettings) -> Path | None:
    """Where development mode keeps its generated secret (None: in memory only).

    ``DEV_SECRET_FILE`` when set; else beside a SQLite file (``<file>.secret``); nothing for
    an in-memory SQLite database (its tokens cannot outlive it anyway); else
    ``zndraw-joblib.secret`` in the working directory.
    """
    if settings.dev_secret_file:
        return Path(settings.dev_secret_file)
    url = settings.database_url
    if is_memory_sqlite(url):
        return None
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database:
            return Path(f"{database}.secret")
    return Path(_DEFAULT_SECRET_FILE)


def _read_or_create(path: Path) -> str:
    """The secret stored at ``path``, created (mode 0600, atomically) when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48) + "\n")
            os.chmod(staging, 0o600)
            # A hard link never replaces a file: of two processes starting at once, one
            # secret wins and both read it.
            with contextlib.suppress(FileExistsError):
                os.link(staging, path)
        finally:
            staging.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise StartupRefused(
            f"the secret file {path} is readable by others (mode {mode:o}); "
            f"run 'chmod 600 {path}' or delete it"
        )
    secret = path.read_text().strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise StartupRefused(
            f"the secret file {path} holds fewer than {MIN_SECRET_BYTES} bytes; delete it "
            "to have a new one generated"
        )
    return secret


def resolve_secret(settings: JobLibSettings, auth_settings: AuthSettings) -> AuthSettings:
    """The auth settings with the token secret the server may sign with.

    Args:
        settings: Queue settings (where the database, and so the dev secret file, is).
        auth_settings: zndraw-auth settings as configured.

    Returns:
        ``auth_settings`` itself, or in development mode without a configured secret a copy
        carrying the generated one.

    Raises:
        StartupRefused: A configured secret is shorter than 32 bytes, or none is configured
            outside development mode, or the dev secret file is unusable.
    """
    configured = auth_settings.secret_key.get_secret_value()
    if configured != _UPSTREAM_DEFAULT_SECRET:
        size = len(configured.encode())
        if size < MIN_SECRET_BYTES:
            raise StartupRefused(
                f"ZNDRAW_AUTH_SECRET_KEY has {size} bytes; it needs at least "
                f"{MIN_SECRET_BYTES} (e.g. the output of: python -c "
                '"import secrets; print(secrets.token_urlsafe(48))")'
            )
        return auth_settings
    if not auth_settings.is_dev_mode:
        raise StartupRefused(
            "ZNDRAW_AUTH_SECRET_KEY is not set; with a default admin configured (production "
            f"mode) the server needs a secret of at least {MIN_SECRET_BYTES} bytes, the same "
            "in every server process"
        )
    path = dev_secret_path(settings)
    if path is None:
        secret = secrets.token_urlsafe(48)
    else:
        try:
            secret = _read_or_create(path)
        except OSError as exc:
            raise StartupRefused(
                f"cannot keep the development secret in {path}: {exc.strerror or exc}; set "
                "ZNDRAW_AUTH_SECRET_KEY or ZNDRAW_JOBLIB_DEV_SECRET_FILE"
            ) from None
        logger.info("development mode: tokens are signed with the secret kept in %s", path)
    return auth_settings.model_copy(update={"secret_key": SecretStr(secret)})


async def ensure_admin(
    session_maker: async_sessionmaker[AsyncSession], auth_settings: AuthSettings
) -> None:
    """Create the configured default admin; never promote an account somebody else made.

    Replaces zndraw-auth's ``ensure_default_admin``, which promoted whatever account had the
    admin's e-mail, with the password its registrant chose. An existing account (e-mail
    compared case-insensitively, as logins do) is accepted as the admin only when it has the
    configured password: whoever registered it knows that password, so it is the operator.

    Raises:
        StartupRefused: An account with the admin's e-mail exists with another password (or
            several accounts match it).
    """
    email = auth_settings.default_admin_email
    password = auth_settings.default_admin_password
    if email is None:
        return
    if password is None:
        logger.warning(
            "ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL is set but ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD is "
            "not: no admin is created"
        )
        return
    helper = PasswordHelper()
    async with session_maker() as session:
        found = (
            await session.scalars(select(User).where(func.lower(User.email) == email.lower()))
        ).all()
        if len(found) > 1:
            raise StartupRefused(
                f"several accounts match the default admin e-mail {email} (differing in case); "
                "remove the ones that are not the admin's"
            )
        if not found:
            hashed = await anyio.to_thread.run_sync(helper.hash, password.get_secret_value())
            session.add(
                User(
                    email=email,
                    hashed_password=hashed,
                    is_active=True,
                    is_superuser=True,
                    is_verified=True,
                )
            )
            await session.commit()
            logger.info("created the default admin %s", email)
            return
        user = found[0]
        verified, _ = await anyio.to_thread.run_sync(
            helper.verify_and_update, password.get_secret_value(), user.hashed_password
        )
        if not verified:
            raise StartupRefused(
                f"an account {user.email} exists that this configuration did not create (its "
                "password is not ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD); refusing to make it the "
                "admin: set its real password, choose another admin e-mail, or delete it"
            )
        if not (user.is_superuser and user.is_active):
            user.is_superuser = True
            user.is_active = True
            await session.commit()
            logger.info("made the account %s the default admin", user.email)
