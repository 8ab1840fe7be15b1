"""The explicit registry of task types, and turning a message body into a task object."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any, TypeVar

from simpletasks.context import TaskContext
from simpletasks.errors import RegistrationError, TaskNotRegistered
from simpletasks.message import TaskMessage
from simpletasks.task import DaemonTask

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=type[DaemonTask])


class TaskRegistry:
    """Maps task names to task classes. Nothing is registered implicitly.

    Example::

        registry = TaskRegistry()
        registry.register(NoOpTask)
        task = registry.parse(body)
    """

    def __init__(self) -> None:
        self._tasks: dict[str, type[DaemonTask]] = {}

    def register(self, cls: T) -> T:
        """Register a task class under its ``name``; usable as a class decorator.

        Raises:
            RegistrationError: If ``cls`` is not a concrete :class:`DaemonTask` subclass with
                a non-empty string ``name``, if its ``payload_type`` is not a class, or if
                the name is already taken.
        """
        if not (inspect.isclass(cls) and issubclass(cls, DaemonTask)):
            raise RegistrationError(f"{cls!r} is not a DaemonTask subclass")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.strip():
            raise RegistrationError(f"{cls.__qualname__} needs a non-empty string `name`")
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
            raise RegistrationError(f"{cls.__qualname__} does not implement: {missing}")
        payload_type = cls.payload_type
        if payload_type is not None and not (
            inspect.isclass(payload_type) or dataclasses.is_dataclass(payload_type)
        ):
            raise RegistrationError(
                f"{cls.__qualname__}.payload_type must be a class (a dataclass), "
                f"got {payload_type!r}"
            )
        if name in self._tasks:
            other = self._tasks[name]
            raise RegistrationError(
                f"task name {name!r} is already registered to "
                f"{other.__module__}.{other.__qualname__}"
            )
        self._tasks[name] = cls
        logger.debug("registered task %s -> %s", name, cls.__qualname__)
        return cls

    def get(self, name: str) -> type[DaemonTask]:
        """Return the class registered under ``name``.

        Raises:
            TaskNotRegistered: If no class has that name (the message lists the known ones).
        """
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise TaskNotRegistered(f"no task type named {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def parse(self, body: str | bytes, context: TaskContext | None = None) -> DaemonTask:
        """Decode, validate and instantiate the task a message body describes.

        Raises:
            MessageError: If the body is not JSON, breaks the schema, names an unknown task
                (:class:`TaskNotRegistered`) or carries a payload its type rejects.
        """
        return self.create(TaskMessage.from_json(body), context)

    def create(self, message: TaskMessage, context: TaskContext | None = None) -> DaemonTask:
        """Instantiate the task type ``message`` names, with ``context``.

        Raises:
            TaskNotRegistered: If no type has the message's name.
            MessageError: If the type's payload parser rejects ``payload_info``.
        """
        return self.get(message.basic_info.name)(message, context)

    def resources(self) -> dict[str, Any]:
        """Return the default per-worker resources of every registered type, merged.

        Raises:
            RegistrationError: If two types declare different factories under one name.
        """
        merged: dict[str, Any] = {}
        for cls in self._tasks.values():
            for name, factory in cls.resources().items():
                if name in merged and merged[name] is not factory:
                    raise RegistrationError(
                        f"task types declare two different resources named {name!r}; "
                        "rename one, or pass one explicitly to the daemon"
                    )
                merged[name] = factory
        return merged
