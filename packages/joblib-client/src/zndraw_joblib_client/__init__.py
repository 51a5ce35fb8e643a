"""zndraw-joblib-client: the worker and submitter SDK of zndraw-joblib.

Register :class:`Extension` classes with a :class:`JobManager`, submit tasks, wait for their
results, and run the worker loop that claims and runs them. Errors answered by the server are
raised as the core problem classes (``except JobNotFound``); errors found on the client side
derive from :class:`ClientError`.
"""

from zndraw_joblib_client._http import RetryPolicy
from zndraw_joblib_client._providers import Provider, ProviderTimeoutError, provider_name
from zndraw_joblib_client._worker import WorkerLoop
from zndraw_joblib_client.errors import (
    ClientError,
    ConnectionFailed,
    ExtensionError,
    LoginFailed,
    Retry,
    ServerUnreachable,
    TaskCancelled,
    UnexpectedResponse,
    UnknownJob,
)
from zndraw_joblib_client.extension import Extension, category_value, job_full_name
from zndraw_joblib_client.manager import JobManager
from zndraw_joblib_client.task import ClaimedTask
from zndraw_joblib_core import (
    BadRequest,
    Category,
    Forbidden,
    InvalidCategory,
    InvalidPayload,
    InvalidRoomId,
    InvalidTaskTransition,
    JobNotFound,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    RequestValidationFailed,
    SchemaConflict,
    ServiceUnavailable,
    TaskNotFound,
    TaskStatus,
    Unauthorized,
    WorkerNotFound,
)

__all__ = [
    "BadRequest",
    "Category",
    "ClaimedTask",
    "ClientError",
    "ConnectionFailed",
    "Extension",
    "ExtensionError",
    "Forbidden",
    "InvalidCategory",
    "InvalidPayload",
    "InvalidRoomId",
    "InvalidTaskTransition",
    "JobManager",
    "JobNotFound",
    "LeaseLost",
    "LoginFailed",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "Provider",
    "ProviderTimeoutError",
    "RequestValidationFailed",
    "Retry",
    "RetryPolicy",
    "SchemaConflict",
    "ServerUnreachable",
    "ServiceUnavailable",
    "TaskCancelled",
    "TaskNotFound",
    "TaskStatus",
    "Unauthorized",
    "UnexpectedResponse",
    "UnknownJob",
    "WorkerLoop",
    "WorkerNotFound",
    "category_value",
    "job_full_name",
    "provider_name",
]
