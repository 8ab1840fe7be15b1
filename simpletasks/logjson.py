"""JSON log lines: one object per line, with the task a worker thread is running.

:class:`TaskLogMiddleware` records, on each worker thread, which message and task it is
handling (a context variable: each thread sees its own); :class:`TaskLogFilter` copies those
onto every log record; :class:`JsonFormatter` writes the record as one JSON object::

    {"time": "2026-12-02T02:40:01.123Z", "level": "INFO", "logger": "simpletasks.daemon",
     "message": "...", "thread": "st-daemon-worker-0", "daemon": "daemon",
     "task": "NO_OP", "task_id": 4, "message_id": "...", "attempt": 1}

Keys whose value is unknown are left out. :func:`use_json_logs` switches the root handlers.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from simpletasks.message import peek_basic_info
from simpletasks.middleware import Middleware

if TYPE_CHECKING:
    from simpletasks.queues import Message
    from simpletasks.reports import ErrorReport
    from simpletasks.task import DaemonTask, Result

#: What the current thread is working on (set by :class:`TaskLogMiddleware`).
CURRENT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "simpletasks_task", default=None
)
FIELDS = ("daemon", "task", "task_id", "message_id", "attempt", "job_id")


class TaskLogMiddleware(Middleware):
    """Sets :data:`CURRENT` on the worker thread for the message it handles.

    The fields stay set after the task ended (until the thread's next message), so the
    daemon's own lines about the outcome carry them too.
    """

    def __init__(self, daemon: str = "") -> None:
        self.daemon = daemon

    def on_received(self, message: Message) -> None:
        """Note the message and its attempt."""
        fields: dict[str, Any] = {"message_id": message.id, "attempt": message.attempt}
        if self.daemon:
            fields["daemon"] = self.daemon
        peeked = peek_basic_info(message.body)
        if peeked is not None and None not in peeked:
            fields["task"], fields["task_id"] = peeked
        CURRENT.set(fields)

    def before_phase(self, task: DaemonTask, message: Message, phase: str) -> None:
        """Note the parsed task's name, id and job."""
        fields = dict(CURRENT.get() or {})
        fields.update(task=task.name, task_id=task.id, phase=phase)
        job = getattr(task.context, "job_id", None)
        if job is not None:
            fields["job_id"] = job
        CURRENT.set(fields)

    def on_acked(self, task: DaemonTask, message: Message, result: Result) -> None:
        """Drop the phase (the task is done)."""
        self._no_phase()

    def on_retried(self, task: DaemonTask | None, message: Message, report: ErrorReport) -> None:
        """Drop the phase."""
        self._no_phase()

    def on_dead_lettered(
        self, task: DaemonTask | None, message: Message, report: ErrorReport
    ) -> None:
        """Drop the phase."""
        self._no_phase()

    @staticmethod
    def _no_phase() -> None:
        fields = CURRENT.get()
        if fields and "phase" in fields:
            CURRENT.set({k: v for k, v in fields.items() if k != "phase"})


class TaskLogFilter(logging.Filter):
    """Adds the current thread's task fields (``record.simpletasks``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the fields; never drops a record."""
        if not hasattr(record, "simpletasks"):
            record.simpletasks = CURRENT.get()
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (UTC time with milliseconds)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object on one line."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        fields = getattr(record, "simpletasks", None)
        if fields is None:
            fields = CURRENT.get()
        if fields:
            out.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


def use_json_logs(root: logging.Logger | None = None) -> None:
    """Make every handler of ``root`` (default: the root logger) write JSON lines."""
    root = root or logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
        if not any(isinstance(f, TaskLogFilter) for f in handler.filters):
            handler.addFilter(TaskLogFilter())
