"""Started reports: tell the done queue's reader when a task starts running (opt-in).

A daemon reports outcomes only, so whoever reads its queues (the job service) cannot tell a
task that is running from one still waiting on the queue. :class:`StartedReports` is a
middleware that sends a small :class:`~simpletasks.reports.StartedReport` to the done queue
when a delivery is about to run its ``prepare`` phase: after the message was parsed and
passed the attempt limit and the skip check. That is one more message per delivery attempt on
the done queue, sent on the worker thread before ``prepare``.

A failed send never fails the task: it is logged at WARNING and counted in :attr:`failed`.

    done = open_queue("sqs://tasks-done")
    DaemonService(..., done_queue=done, middleware=[StartedReports(done)])

``simpletasks run --report-starts`` does the same with its ``--done-queue``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from simpletasks.errors import ConfigError
from simpletasks.middleware import Middleware
from simpletasks.reports import HostInfo, StartedReport

if TYPE_CHECKING:
    from simpletasks.queues import Message, QueueService
    from simpletasks.task import DaemonTask

logger = logging.getLogger(__name__)


class StartedReports(Middleware):
    """Sends a started report to ``done_queue`` before each delivery's ``prepare``.

    Args:
        done_queue: The daemon's done queue (where the job service reads reports).

    Attributes:
        sent: Started reports sent.
        failed: Started reports that could not be sent (logged, task unaffected).

    Raises:
        ConfigError: If ``done_queue`` is ``None``.
    """

    def __init__(self, done_queue: QueueService | None) -> None:
        if done_queue is None:
            raise ConfigError(
                "started reports go to the done queue, and there is none: give the daemon a "
                "done queue (run --done-queue URL) or drop --report-starts"
            )
        self.done_queue = done_queue
        self.host = HostInfo.current()
        self.sent = 0
        self.failed = 0
        self._lock = threading.Lock()  # workers count concurrently

    def before_phase(self, task: DaemonTask, message: Message, phase: str) -> None:
        """Send the started report when ``phase`` is ``prepare``; never raises."""
        if phase != "prepare":
            return
        try:
            report = StartedReport(
                host=self.host,
                message_id=message.id,
                task_name=task.name,
                task_id=task.id,
                attempt=message.attempt,
                job_id=task.message.job_id,
                daemon=task.context.daemon,
            )
            limit = self.done_queue.capabilities.max_body_bytes
            self.done_queue.send(report.to_json(max_bytes=limit))
        except Exception as exc:
            with self._lock:
                self.failed += 1
            logger.warning(
                "[%s] could not send the started report of message %s (attempt %d) to %s; "
                "the task runs anyway: %s: %s",
                task.context.daemon,
                message.id,
                message.attempt,
                self.done_queue.url,
                type(exc).__name__,
                exc,
            )
            return
        with self._lock:
            self.sent += 1
