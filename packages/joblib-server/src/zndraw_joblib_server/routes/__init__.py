"""The ``/v1/joblib`` router, assembled from one module per resource."""

from fastapi import APIRouter

from zndraw_joblib_core import API_PREFIX
from zndraw_joblib_server.routes import jobs, tasks, workers
from zndraw_joblib_server.routes._common import JobLibRoute

router = APIRouter(prefix=API_PREFIX, route_class=JobLibRoute)
"""Every endpoint of the job queue; include it in the host app."""

# The task routes come first: `/rooms/{room}/jobs/{job_name:path}/tasks` must be matched
# before `/rooms/{room}/jobs/{job_name:path}` swallows it.
router.include_router(tasks.router)
router.include_router(jobs.router)
router.include_router(workers.router)

__all__ = ["router"]
