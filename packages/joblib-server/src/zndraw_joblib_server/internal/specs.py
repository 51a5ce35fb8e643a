"""What the queue needs of a host's internal extension class (no client import)."""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Protocol, runtime_checkable

from zndraw_joblib_core import MAX_CATEGORY_LENGTH, is_valid_job_part
from zndraw_joblib_server.services.internal import InternalJobSpec

__all__ = ["InternalExtension", "spec_of"]


@runtime_checkable
class InternalExtension(Protocol):
    """A class the host hands to ``JobQueue(internal=[...])``.

    Any pydantic model with a ``category`` class variable and a ``run`` method fits, such as
    ``zndraw_joblib_client.Extension`` subclasses: the class name is the job name (or a
    ``job_name`` class variable, if set), ``model_json_schema()`` the job's schema, and a
    task's payload is validated into an instance with ``model_validate`` before ``run(task,
    **kwargs)`` is called (``run`` may be ``async``).
    """

    category: ClassVar[Any]

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the payload."""

    @classmethod
    def model_validate(cls, obj: Any) -> Any:
        """Build an instance from a payload."""


def spec_of(cls: type[Any]) -> InternalJobSpec:
    """The ``@internal`` job of an extension class.

    Raises:
        TypeError: The class sets no category, or has no pydantic schema, or its category
            or name breaks the naming rules.
    """
    category = getattr(cls, "category", None)
    if isinstance(category, enum.Enum):
        category = category.value
    if not isinstance(category, str) or not is_valid_job_part(category, MAX_CATEGORY_LENGTH):
        raise TypeError(f"internal extension {cls!r} needs a valid `category` class variable")
    name = getattr(cls, "job_name", None)
    name = name if isinstance(name, str) else cls.__name__
    if not is_valid_job_part(name):
        raise TypeError(f"internal extension {cls!r}: invalid job name {name!r}")
    schema_of = getattr(cls, "model_json_schema", None)
    if not callable(schema_of) or not callable(getattr(cls, "model_validate", None)):
        raise TypeError(f"internal extension {cls!r} must be a pydantic model")
    return InternalJobSpec(category=category, name=name, schema=schema_of())
