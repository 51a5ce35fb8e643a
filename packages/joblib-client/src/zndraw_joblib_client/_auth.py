"""Bearer tokens: a fixed token, or a lazy login with e-mail and password."""

from __future__ import annotations

import logging
import threading

from zndraw_joblib_client._http import HttpSession
from zndraw_joblib_client.errors import LoginFailed, UnexpectedResponse
from zndraw_joblib_core import BadRequest, ProblemError

logger = logging.getLogger("zndraw_joblib_client")


class Credentials:
    """Holds the bearer token and logs in when it has to.

    Args:
        token: A ready bearer token.
        email: The account's e-mail, to log in with.
        password: The account's password.
        register: Create the account when logging in says the credentials are bad.
        auth_prefix: Path of the host's auth routes (``{prefix}/jwt/login``,
            ``{prefix}/register``).
    """

    def __init__(
        self,
        *,
        token: str | None,
        email: str | None,
        password: str | None,
        register: bool,
        auth_prefix: str,
    ) -> None:
        if (email is None) != (password is None):
            raise ValueError("email and password must be given together")
        self.token = token
        self.email = email
        self.password = password
        self.register = register
        self.auth_prefix = "/" + auth_prefix.strip("/")
        self._lock = threading.Lock()
        self.http: HttpSession | None = None

    @property
    def can_login(self) -> bool:
        """Whether e-mail and password are known."""
        return self.email is not None and self.password is not None

    def current(self) -> str | None:
        """Return the token to send, logging in first when needed."""
        if self.token is None and self.can_login:
            with self._lock:
                if self.token is None:
                    self.token = self.login()
        return self.token

    def refresh(self) -> bool:
        """Log in again after a 401; return whether a new token was obtained."""
        if not self.can_login:
            return False
        with self._lock:
            self.token = self.login()
        return True

    def login(self) -> str:
        """Log in (registering first if allowed and needed) and return the access token.

        Raises:
            LoginFailed: The server refused the credentials.
        """
        try:
            return self._login_once()
        except LoginFailed:
            if not self.register:
                raise
        self._register_account()
        return self._login_once()

    def _login_once(self) -> str:
        assert self.http is not None
        assert self.email is not None
        assert self.password is not None
        try:
            response = self.http.request(
                "POST",
                f"{self.auth_prefix}/jwt/login",
                data={"username": self.email, "password": self.password},
                authenticate=False,
                idempotent=True,
            )
        except BadRequest as exc:
            raise LoginFailed(f"login as {self.email} refused: {exc.detail or exc}") from exc
        body = response.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise UnexpectedResponse(
                "login answer has no access_token", status_code=response.status_code
            )
        logger.debug("logged in as %s", self.email)
        return token

    def _register_account(self) -> None:
        assert self.http is not None
        try:
            self.http.request(
                "POST",
                f"{self.auth_prefix}/register",
                json={"email": self.email, "password": self.password},
                authenticate=False,
            )
        except BadRequest as exc:  # the account exists: the password must be wrong
            raise LoginFailed(f"cannot log in or register {self.email}: {exc.detail}") from exc
        except ProblemError as exc:
            raise LoginFailed(f"registering {self.email} failed: {exc}") from exc
        logger.info("registered account %s", self.email)
