"""Exceptions raised by simpletasks.

Every exception the framework raises on purpose derives from :class:`SimpleTasksError`, so
callers can catch the family in one place. The daemon turns them into error reports.
"""

from __future__ import annotations


class SimpleTasksError(Exception):
    """Base class of every error raised by simpletasks on purpose."""


class MessageError(SimpleTasksError):
    """A task message is malformed: not JSON, or not the expected schema.

    The message says which field is wrong and what was expected. Such messages go to the
    error queue at once: retrying them cannot help.
    """


class TaskNotRegistered(MessageError):
    """A message names a task type that no registry entry knows."""


class InvalidKey(SimpleTasksError, ValueError):
    """A bucket or cache key is unsafe (``..``, absolute, backslash, NUL) or empty."""


class UnsupportedScheme(SimpleTasksError, ValueError):
    """A queue or bucket URL uses a scheme no backend handles."""


class MissingDependency(SimpleTasksError, ImportError):
    """A backend needs an optional package that is not installed."""


class KeyNotFound(SimpleTasksError, KeyError):
    """A key does not exist in a bucket."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable.
        return str(self.args[0]) if self.args else "key not found"


class IntegrityError(SimpleTasksError):
    """A downloaded object does not match its size or checksum."""


class RegistrationError(SimpleTasksError):
    """A task class cannot be registered (duplicate name, missing hook or name)."""


class ConfigError(SimpleTasksError, ValueError):
    """A configuration value is missing or malformed."""


class TaskFailed(SimpleTasksError):
    """A task's ``execute`` returned a result with ``success=False``."""


class TaskTimedOut(SimpleTasksError):
    """A task was still running after the daemon's ``task_timeout_seconds``.

    Not raised in the task: the daemon gives the attempt up from outside (its cancel flag is
    set, a new worker takes the stuck one's place) and reports it under this name, phase
    ``timeout``, like any other failed attempt.
    """


class TaskExited(SimpleTasksError):
    """A task hook raised ``SystemExit`` (``sys.exit()``) or ``KeyboardInterrupt``.

    A task runs on a worker thread of a daemon that serves many messages: it cannot end the
    process, so the daemon counts this as a failure of the task (reported and retried as any
    other) instead of losing the worker thread and the message with it.
    """

    @classmethod
    def of(cls, exc: BaseException, phase: str) -> TaskExited:
        """The failure that stands for ``exc`` raised in ``phase``."""
        raised = f"SystemExit({exc.code!r})" if isinstance(exc, SystemExit) else type(exc).__name__
        return cls(
            f"{phase} raised {raised}: a task cannot end the daemon (it runs on one of its "
            "worker threads), so this counts as a failure of the task; raise an exception instead"
        )


class PermanentFailure(SimpleTasksError):
    """Raise from a task hook for a failure that no retry can fix (a missing input, a file
    that is not an image...). The daemon reports it as final at once instead of retrying.
    """


class TaskCancelled(SimpleTasksError):
    """Raised by :meth:`TaskContext.raise_if_cancelled` once the daemon has given the task
    up (its grace period ran out, or a second stop request came): the task's message was
    released, so its outputs must not be published.
    """


class BatchError(SimpleTasksError):
    """Some entries of a batch operation (``send_batch``, ``ack_many``, ``extend_many``) failed;
    every other entry went through.

    Attributes:
        failures: ``(index in the argument, error code, error text)`` per failed entry, by
            index.
    """

    def __init__(self, message: str, failures: list[tuple[int, str, str]]) -> None:
        super().__init__(message)
        self.failures = failures

    @property
    def failed_indexes(self) -> list[int]:
        """The indexes of the entries that failed."""
        return [index for index, _, _ in self.failures]


class ServiceUnavailable(SimpleTasksError, ConnectionError):
    """A queue or bucket service cannot be reached (nothing listens, DNS, timeout).

    The message names the endpoint (password masked) and what to check.
    """


class CredentialsError(SimpleTasksError):
    """No credentials were found for a cloud service, or the service refused them."""
