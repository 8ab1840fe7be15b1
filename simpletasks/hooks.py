"""Hooks: observe each task the daemon runs without changing the daemon.

Subclass :class:`Hook` and override what you need; every method is a no-op by default. The
daemon calls ``before_task`` on hooks in order and ``after_task``/``on_error`` in reverse
order. An exception inside a hook is logged and otherwise ignored: a broken metrics hook must
never fail a task.
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


class Hook:
    """Base class of daemon hooks; all methods do nothing."""

    def before_task(self, task: DaemonTask, message: Message) -> None:
        """Called before ``prepare``."""

    def after_task(self, task: DaemonTask, message: Message, result: Result) -> None:
        """Called after ``finalize`` succeeded."""

    def on_error(self, message: Message, report: ErrorReport) -> None:
        """Called after a failure was reported."""


def emit(hooks: Sequence[Hook], method: str, *args: Any, reverse: bool = False) -> None:
    """Call ``method`` on every hook, logging (not raising) their errors."""
    for hook in reversed(hooks) if reverse else hooks:
        try:
            getattr(hook, method)(*args)
        except Exception:
            logger.exception("hook %s.%s failed; ignoring", type(hook).__name__, method)
