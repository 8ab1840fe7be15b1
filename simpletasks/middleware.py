"""Middleware: observe every message a daemon handles without changing the daemon.

Subclass :class:`Middleware` and override the events you need; each is a no-op by default.
``on_start``, ``on_received`` and ``before_phase`` are called on the middleware in order,
every other event in reverse order (the first middleware wraps the rest). An exception inside
a middleware is logged and otherwise ignored: a broken metrics exporter never fails a task.

Events (``task`` is ``None`` when the message could not be parsed into a task):

========================  ==================================================================
``on_start(daemon)``      the daemon starts (before its first receive)
``on_stopping(daemon)``   a stop was requested (running tasks may still finish)
``on_stop(daemon)``       the daemon has stopped (its stats are final)
``after_receive``         ``(daemon, count, error)``: a receive returned ``count`` messages,
                          or raised ``error`` (health checks watch this)
``on_received(message)``  a message was received (before parsing)
``before_phase``          ``(task, message, phase)``; phase is prepare, execute or finalize
``after_phase``           ``(task, message, phase, seconds, error)``; ``error`` is ``None`` on
                          success
``on_acked``              ``(task, message, result)``: the task succeeded; its ack is queued
``on_retried``            ``(task, message, report)``: it failed and will be delivered again
``on_dead_lettered``      ``(task, message, report)``: it failed for good; the report is on
                          the error queue and the message is deleted
``on_released``           ``(message)``: handed back unrun or given up at stop
``on_skipped``            ``(task, message, reason)``: deleted unrun by the skip check
========================  ==================================================================

Load one from the command line with ``simpletasks run --middleware module:Class``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simpletasks.queues import Message
    from simpletasks.reports import ErrorReport
    from simpletasks.task import DaemonTask, Result

logger = logging.getLogger(__name__)


class Middleware:
    """Base class of middleware; every event does nothing."""

    def on_start(self, daemon: Any) -> None:
        """The daemon starts."""

    def on_stopping(self, daemon: Any) -> None:
        """A stop was requested; the daemon takes no new work."""

    def on_stop(self, daemon: Any) -> None:
        """The daemon stopped."""

    def after_receive(self, daemon: Any, count: int, error: BaseException | None) -> None:
        """A receive returned ``count`` messages (``error`` if it raised)."""

    def on_received(self, message: Message) -> None:
        """A message arrived (not parsed yet)."""

    def before_phase(self, task: DaemonTask, message: Message, phase: str) -> None:
        """A phase (prepare, execute, finalize) starts."""

    def after_phase(
        self,
        task: DaemonTask,
        message: Message,
        phase: str,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """A phase ended after ``seconds``; ``error`` is what it raised, if anything."""

    def on_acked(self, task: DaemonTask, message: Message, result: Result) -> None:
        """The task succeeded and its message is being deleted."""

    def on_retried(self, task: DaemonTask | None, message: Message, report: ErrorReport) -> None:
        """The task failed and the queue will deliver it again."""

    def on_dead_lettered(
        self, task: DaemonTask | None, message: Message, report: ErrorReport
    ) -> None:
        """The task failed for good: reported on the error queue, message deleted."""

    def on_released(self, message: Message) -> None:
        """The message was handed back to the queue without a result (stop)."""

    def on_skipped(self, task: DaemonTask, message: Message, reason: str) -> None:
        """The message was deleted unrun because the daemon's skip check said so."""


_FORWARD = {"on_start", "on_stopping", "after_receive", "on_received", "before_phase"}
_EVENTS = tuple(name for name in vars(Middleware) if name.startswith(("on_", "before_", "after_")))


class MiddlewareChain:
    """Calls an event on a list of middleware, in order or reverse, logging their errors.

    Each event's handlers are found once, when the chain is made: a :class:`Middleware`
    subclass that leaves an event as the base class's no-op is not called for it, so an
    event nobody handles costs one dictionary lookup (the daemon emits eight per task).
    """

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.middleware = tuple(middleware)
        self._handlers: dict[str, tuple[tuple[Any, Any], ...]] = {}
        for event in _EVENTS:
            chain = self.middleware if event in _FORWARD else self.middleware[::-1]
            self._handlers[event] = tuple(
                (item, getattr(item, event)) for item in chain if _handles(item, event)
            )

    def __bool__(self) -> bool:
        return bool(self.middleware)

    def handles(self, event: str) -> bool:
        """Whether any middleware of the chain does something on ``event``."""
        return bool(self._handlers[event])

    def emit(self, event: str, *args: Any) -> None:
        """Call ``event`` on every middleware (see the module docstring for the order)."""
        for item, handler in self._handlers[event]:
            try:
                handler(*args)
            except Exception:
                logger.exception("middleware %s.%s failed; ignoring", type(item).__name__, event)


def _handles(item: Any, event: str) -> bool:
    """Whether ``item`` does something on ``event`` (not the base class's no-op)."""
    handler = getattr(item, event, None)
    if handler is None:
        return False
    return getattr(handler, "__func__", None) is not getattr(Middleware, event)
