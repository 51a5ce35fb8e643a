"""zndraw-joblib 0.1.7's own server, for filling a predecessor database in tests.

Run as ``python predecessor_app.py DATABASE_URL PORT``: zndraw-auth's register and login
routes plus the 0.1.7 router on uvicorn, tables made by its own ``create_all``. No default
admin is configured (zndraw-auth's dev mode): every registered user is a superuser.
It runs in its own process: 0.1.7's models share zndraw-auth's declarative registry and
would clash with this package's (both have ``Job``, ``Task``, ...).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from zndraw_auth import AuthSettings, Base, UserCreate, UserRead, auth_backend, fastapi_users
from zndraw_joblib import JobLibSettings, ProblemException, problem_exception_handler, router


def build(url: str) -> FastAPI:
    engine = create_async_engine(url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.state.engine = engine
    app.state.session_maker = async_sessionmaker(engine, expire_on_commit=False)
    app.state.joblib_settings = JobLibSettings()
    app.state.auth_settings = AuthSettings()
    app.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt")
    app.include_router(fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth")
    app.include_router(router)
    app.add_exception_handler(ProblemException, problem_exception_handler)  # type: ignore[arg-type]
    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
