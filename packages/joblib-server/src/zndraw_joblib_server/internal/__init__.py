"""Server-side ``@internal`` jobs: registered by the host in code, run by the queue.

A host hands its extension classes to :class:`~zndraw_joblib_server.JobQueue`
(``internal=[...]``); each becomes ``@internal:{category}:{name}``, listed in every room and
never registered over HTTP. By default an :class:`InProcessExecutor` runs them inside the
server; ``zndraw-joblib worker --internal module:Class`` or an :class:`InternalExecutor` of the
host's own serve them elsewhere. A task's ``run`` gets a token valid only while that task
holds its lease (:func:`task_credential` checks it on the host's routes).
"""

from zndraw_joblib_server.internal.context import InternalTask
from zndraw_joblib_server.internal.credentials import TaskCredentialDep, task_credential
from zndraw_joblib_server.internal.executor import InProcessExecutor, InternalExecutor
from zndraw_joblib_server.internal.runtime import InternalRuntime
from zndraw_joblib_server.internal.specs import InternalExtension, spec_of
from zndraw_joblib_server.task_tokens import TaskCredential

__all__ = [
    "InProcessExecutor",
    "InternalExecutor",
    "InternalExtension",
    "InternalRuntime",
    "InternalTask",
    "TaskCredential",
    "TaskCredentialDep",
    "spec_of",
    "task_credential",
]
