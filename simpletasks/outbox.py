"""What a daemon writes besides acks: error and done reports and follow-up tasks.

:class:`Outbox` builds error reports, encodes reports to fit their queue (a final failure's
message that does not fit is kept in the bucket first: :mod:`simpletasks.kept_bodies`) and
sends bodies, logging a failed send so the caller can leave the message on its queue.
:class:`~simpletasks.execution.MessageRunner` decides what happened to a message; this module
writes it down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simpletasks import kept_bodies
from simpletasks.message import TaskMessage
from simpletasks.queues import Message, QueueService
from simpletasks.reports import DoneReport, ErrorReport, HostInfo, body_for_report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Targets:
    """Where a runner sends things besides acks: reports and follow-up tasks."""

    error_queue: QueueService | None = None
    done_queue: QueueService | None = None
    followup_queue: QueueService | None = None


class Outbox:
    """Reports and follow-ups of one daemon, on their way to their queues.

    Args:
        name: The daemon's name (in logs and reports).
        targets: Error, done and follow-up queues.
        bucket: The datasource's bucket, where messages too big for their final report are
            kept (``None``: they keep only their head).
        max_attempts: The daemon's attempt limit (written into error reports).
    """

    def __init__(
        self, *, name: str, targets: Targets, bucket: Any, max_attempts: int | None
    ) -> None:
        self.name = name
        self.targets = targets
        self.bucket = bucket
        self.max_attempts = max_attempts
        self.host = HostInfo.current()

    def error_report(
        self,
        message: Message,
        parsed: TaskMessage | None,
        phase: str,
        error_type: str,
        error_message: str,
        trace: str,
        *,
        final: bool,
    ) -> ErrorReport:
        """The error report of one failed delivery of ``message``."""
        info = parsed.basic_info if parsed else None
        return ErrorReport(
            host=self.host,
            message_id=message.id,
            body=body_for_report(message.body),
            phase=phase,
            error_type=error_type,
            error_message=error_message,
            traceback=trace,
            attempt=message.attempt,
            max_attempts=self.max_attempts,
            final=final,
            task_name=info.name if info else None,
            task_id=info.id if info else None,
            job_id=parsed.job_id if parsed else None,
            daemon=self.name,
        )

    def encode(
        self,
        report: ErrorReport | DoneReport,
        target: Any = None,
        keep_body: Callable[[], str | None] | None = None,
    ) -> str:
        """The report's JSON for ``target`` (the done queue by default), cut to fit it."""
        queue = target or self.targets.done_queue
        limit = queue.capabilities.max_body_bytes if queue else None
        return report.to_json(max_bytes=limit, keep_body=keep_body)

    def encode_final(self, report: ErrorReport, message: Message) -> str | None:
        """The JSON of a final failure's report for the error queue.

        If the message does not fit in the report, it is kept in the bucket first; ``None``
        if that failed: the message must then stay on its queue, since the report would be
        its only copy.
        """
        try:
            return self.encode(
                report, self.targets.error_queue, keep_body=lambda: self._keep_body(message)
            )
        except Exception:
            logger.exception(
                "[%s] could not keep message %s (too big for its report) in %s; "
                "it stays on its queue",
                self.name,
                message.id,
                getattr(self.bucket, "url", self.bucket),
            )
            return None

    def _keep_body(self, message: Message) -> str | None:
        size = len(message.body.encode())
        if self.bucket is None:
            logger.error(
                "[%s] message %s (%d bytes) does not fit in its failure report and the "
                "daemon has no bucket to keep it in: the report carries only its head",
                self.name,
                message.id,
                size,
            )
            return None
        key = kept_bodies.keep(self.bucket, message.body)
        logger.warning(
            "[%s] message %s (%d bytes) does not fit in its failure report: kept in %s as %s",
            self.name,
            message.id,
            size,
            self.bucket.url,
            key,
        )
        return key

    def send(self, target: QueueService | None, bodies: list[str], message: Message) -> bool:
        """Send ``bodies`` to ``target``; log and return ``False`` if that failed."""
        assert target is not None
        try:
            if len(bodies) == 1:
                target.send(bodies[0])
            else:
                target.send_batch(bodies)
            return True
        except Exception:
            logger.exception(
                "[%s] could not send to %s for message %s; the message stays on its queue",
                self.name,
                target.url,
                message.id,
            )
            return False
