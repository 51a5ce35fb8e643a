"""zndraw-joblib-server: the FastAPI router, models, sweeper and reference app.

A host app builds a :class:`JobQueue`, mounts it with ``queue.include_in(app)`` and runs
``queue.lifespan`` in its lifespan (tables, wake-ups across processes, kept connections,
the sweeper). :func:`create_app`, the reference app, does exactly that.
"""

from zndraw_joblib_server.app import create_app
from zndraw_joblib_server.dependencies import (
    get_actor,
    get_async_session_maker,
    get_current_user,
    get_event_sink,
    get_job_access,
    get_room_access,
    get_settings,
)
from zndraw_joblib_server.errors import install_exception_handlers, problem_exception_handler
from zndraw_joblib_server.migrations.tables import create_tables
from zndraw_joblib_server.models import Job, Provider, Task, Worker, WorkerJobLink
from zndraw_joblib_server.queue import JobQueue
from zndraw_joblib_server.routes import router
from zndraw_joblib_server.services.access import (
    Actor,
    AllowAuthenticated,
    JobAccess,
    OwnerOrSuperuser,
    RoomAccess,
)
from zndraw_joblib_server.services.internal_providers import InternalProvider
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import EventSink, create_engine
from zndraw_joblib_server.storage.provider_cache import (
    CachedResult,
    DatabaseProviderCache,
    MemoryProviderCache,
    PendingRead,
    ProviderCache,
)
from zndraw_joblib_server.sweeper import SweepReport, run_sweeper, sweep_once

__all__ = [
    "Actor",
    "AllowAuthenticated",
    "CachedResult",
    "DatabaseProviderCache",
    "EventSink",
    "InternalProvider",
    "Job",
    "JobAccess",
    "JobLibSettings",
    "JobQueue",
    "MemoryProviderCache",
    "OwnerOrSuperuser",
    "PendingRead",
    "Provider",
    "ProviderCache",
    "RoomAccess",
    "SweepReport",
    "Task",
    "Worker",
    "WorkerJobLink",
    "create_app",
    "create_engine",
    "create_tables",
    "get_actor",
    "get_async_session_maker",
    "get_current_user",
    "get_event_sink",
    "get_job_access",
    "get_room_access",
    "get_settings",
    "install_exception_handlers",
    "problem_exception_handler",
    "router",
    "run_sweeper",
    "sweep_once",
]
