"""The ``Extension`` base class: a typed job whose fields are the task payload."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from zndraw_joblib_client.errors import ExtensionError
from zndraw_joblib_client.task import ClaimedTask
from zndraw_joblib_core import GLOBAL_ROOM, Category, build_job_name

__all__ = ["Extension", "category_value", "job_full_name"]


class Extension(BaseModel):
    """Base class of jobs: a pydantic model whose fields are the task's parameters.

    Subclasses set ``category`` and implement :meth:`run`. The class name is the job name,
    ``model_json_schema()`` is the schema registered with the server, and a claimed task's
    payload is validated into an instance of the class.

    Unknown payload fields are refused (the schema says ``additionalProperties: false``), so
    a misspelled parameter fails the submit instead of silently taking the default. A class
    that wants them opts out with ``model_config = ConfigDict(extra="ignore")`` (or
    ``"allow"``).

    Example:
        >>> class Greet(Extension):
        ...     category = "modifiers"
        ...     name: str = "world"
        ...
        ...     def run(self, task=None, **kwargs):
        ...         return {"greeting": f"Hello, {self.name}!"}
        >>> Greet.job_full_name("room1")
        'room1:modifiers:Greet'
    """

    model_config = ConfigDict(extra="forbid")

    category: ClassVar[str | Category]

    @abstractmethod
    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        """Do the work of one task.

        Args:
            task: The claimed task (to report progress or check for cancellation), or None
                when called outside a worker.
            **kwargs: Extra keyword arguments the worker was configured to pass.

        Returns:
            A JSON-serialisable result (or a pydantic model), reported with ``completed``.

        Raises:
            Retry: To have the task requeued while attempts remain.
            TaskCancelled: To acknowledge a requested cancellation.
        """

    @classmethod
    def job_category(cls) -> str:
        """The wire value of the class's ``category``."""
        return category_value(cls)

    @classmethod
    def job_full_name(cls, room: str = GLOBAL_ROOM) -> str:
        """The job's full name ``{room}:{category}:{ClassName}`` when registered in ``room``."""
        return job_full_name(cls, room)


def category_value(cls: type[Extension]) -> str:
    """Return the category of an extension class as sent on the wire.

    Args:
        cls: The extension class.

    Returns:
        The category string (the enum's value for a :class:`Category`).

    Raises:
        ExtensionError: The class does not set ``category`` (also a ``TypeError``).
    """
    category = getattr(cls, "category", None)
    if category is None:
        raise ExtensionError(
            f"extension {cls.__name__} sets no category: add a class variable such as "
            f'category = "modifiers" (one of the categories the server allows)'
        )
    if isinstance(category, Category):
        return category.value
    return str(category)


def job_full_name(cls: type[Extension], room: str = GLOBAL_ROOM) -> str:
    """Return the full job name ``{room}:{category}:{ClassName}`` of an extension class.

    Args:
        cls: The extension class.
        room: The room the job is registered in (default ``@global``).

    Returns:
        The full name.
    """
    return build_job_name(room, category_value(cls), cls.__name__)
