"""The ``/v1/joblib`` router, assembled from one module per resource."""

from fastapi import APIRouter

from zndraw_joblib_core import API_PREFIX
from zndraw_joblib_server.routes import credentials, jobs, providers, tasks, workers
from zndraw_joblib_server.routes._common import JobLibRoute

router = APIRouter(prefix=API_PREFIX, route_class=JobLibRoute, redirect_slashes=False)
"""Every endpoint of the job queue; include it in the host app."""

# The task routes come first: `/rooms/{room}/jobs/{job_name:path}/tasks` must be matched
# before `/rooms/{room}/jobs/{job_name:path}` swallows it.
QUEUE_ROUTERS = (tasks.router, credentials.router, jobs.router, workers.router, providers.router)
"""The resource routers, in :data:`router`'s matching order."""

for _sub in QUEUE_ROUTERS:
    router.include_router(_sub)

HOT_ENDPOINTS = (
    tasks.submit_task,
    tasks.submit_tasks,
    tasks.claim_tasks,
    tasks.update_task,
    tasks.update_tasks,
    tasks.get_task,
    workers.heartbeat,
)
"""The endpoints the fast lane serves (the ones workers and submitters call in a loop)."""

__all__ = ["HOT_ENDPOINTS", "QUEUE_ROUTERS", "router"]
