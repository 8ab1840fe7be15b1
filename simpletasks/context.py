"""What a running task may know and use beyond its message: :class:`TaskContext`.

The daemon gives every task a context before ``prepare``: which delivery this is, the job it
belongs to, the per-worker resources (database sessions, clients, models) and a cancellation
signal it can poll. A task constructed outside a daemon (in a unit test) gets a detached
context: attempt 1, never cancelled, and whatever resources the test passes.

Per-worker resources are declared as factories: zero-argument callables that return a context
manager. A worker enters a factory the first time one of its tasks asks for the resource and
exits it when the worker stops, so a database session or a client is opened once per worker
thread and never shared between threads::

    daemon = DaemonService(..., resources={"db": lambda: Session(engine)})

    class Store(DaemonTask):
        def execute(self, ds):
            db = self.context.resources["db"]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from typing import Any, Protocol

from simpletasks.checkpoint import Checkpoints
from simpletasks.errors import ConfigError, TaskCancelled

logger = logging.getLogger(__name__)

#: A per-worker resource: called once per worker, entered, and exited when the worker stops.
ResourceFactory = Callable[[], AbstractContextManager[Any]]


class WorkerResources(Mapping[str, Any]):
    """The resources of one worker thread, opened on first use and closed by :meth:`close`.

    Args:
        factories: Name → factory. A factory that raises leaves the resource unopened (the
            error propagates to the task that asked, which fails and is retried); the next
            request tries again.
    """

    def __init__(self, factories: Mapping[str, ResourceFactory]) -> None:
        self._factories = dict(factories)
        self._opened: dict[str, Any] = {}
        self._stack = ExitStack()

    def __getitem__(self, name: str) -> Any:
        if name in self._opened:
            return self._opened[name]
        factory = self._factories.get(name)
        if factory is None:
            known = ", ".join(sorted(self._factories)) or "none"
            raise KeyError(f"no resource named {name!r}; this daemon provides: {known}")
        value = self._stack.enter_context(factory())
        self._opened[name] = value
        logger.debug("opened resource %s", name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def close(self) -> None:
        """Exit every opened resource, last opened first (errors are logged)."""
        try:
            self._stack.close()
        except Exception:
            logger.exception("closing a worker resource failed")
        self._opened.clear()
        self._stack = ExitStack()


def check_factories(factories: Mapping[str, Any]) -> dict[str, ResourceFactory]:
    """Return ``factories`` as a dict after checking names and callables.

    Raises:
        ConfigError: If a name is not a non-empty string or a factory is not callable.
    """
    checked: dict[str, ResourceFactory] = {}
    for name, factory in factories.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"resource names must be non-empty strings, got {name!r}")
        if not callable(factory):
            raise ConfigError(
                f"resource {name!r} must be a factory (a callable returning a context "
                f"manager), got {type(factory).__name__}"
            )
        checked[name] = factory
    return checked


class CancelSignal(Protocol):
    """What the daemon sets when it gives a task up (a ``threading.Event`` will do)."""

    def is_set(self) -> bool:
        """Whether the task was given up."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or ``timeout``; return whether it is set."""
        ...


class TaskContext:
    """The context of one delivery of one task.

    Args:
        attempt: Which delivery this is (1 on the first).
        message_id: The queue's id of the message.
        daemon: The name of the daemon running the task ("" when detached).
        job_id: The message's ``job_id``, if any.
        resources: The worker's resources (see the module docstring).
        cancel: Set by the daemon when it gave the task up: the grace period after a stop
            request ran out and the task's message was released to other workers.
        stopping: Set by the daemon when a stop was requested (the task may still finish).
        checkpoints: Where :meth:`checkpoint` and :meth:`restore` keep this message's
            progress (the daemon passes one over its datasource's bucket).
    """

    def __init__(
        self,
        *,
        attempt: int = 1,
        message_id: str = "",
        daemon: str = "",
        job_id: str | None = None,
        resources: Mapping[str, Any] | None = None,
        cancel: CancelSignal | None = None,
        stopping: threading.Event | None = None,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.attempt = attempt
        self.message_id = message_id
        self.daemon = daemon
        self.job_id = job_id
        self.resources: Mapping[str, Any] = resources if resources is not None else {}
        self._cancel: CancelSignal = cancel or threading.Event()
        self._stopping = stopping or threading.Event()
        self._checkpoints = checkpoints
        self.checkpoint_used = False  # saved or restored in this delivery

    def checkpoint(self, state: bytes | Any) -> None:
        """Save progress (bytes, or a JSON-encodable value) for a later delivery.

        The state is stored in the bucket under a key derived from the message alone and
        replaces the previous one atomically; it is deleted after the task succeeds. Use it
        in long tasks on preemptible machines: a redelivery resumes from :meth:`restore`.
        """
        self.checkpoint_used = True
        self._need_checkpoints().save(state)

    def restore(self) -> bytes | Any | None:
        """Return the last state :meth:`checkpoint` saved for this message, or ``None``."""
        self.checkpoint_used = True
        return self._need_checkpoints().load()

    def _need_checkpoints(self) -> Checkpoints:
        if self._checkpoints is None:
            raise RuntimeError("this task runs without checkpoint storage (no daemon bucket)")
        return self._checkpoints

    def cancelled(self) -> bool:
        """Whether the daemon gave this task up; its outputs will not be published."""
        return self._cancel.is_set()

    def stopping(self) -> bool:
        """Whether the daemon was asked to stop (a good moment to checkpoint)."""
        return self._stopping.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~simpletasks.errors.TaskCancelled` if the task was given up.

        Long tasks should call this between steps: work after cancellation is wasted.
        """
        if self._cancel.is_set():
            raise TaskCancelled(
                f"message {self.message_id or '?'} was released after the grace period"
            )

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; return ``True`` at once if the task is (or gets) cancelled."""
        return self._cancel.wait(seconds)

    def __repr__(self) -> str:
        return (
            f"TaskContext(attempt={self.attempt}, message_id={self.message_id!r}, "
            f"daemon={self.daemon!r}, job_id={self.job_id!r})"
        )
