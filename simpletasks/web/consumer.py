"""The report consumer: reads the done and error queues into the database.

Each batch of reports is applied in one transaction and acked only after the commit, so a
crash loses nothing: the queue delivers the batch again. A report already stored (same
message id, attempt and kind) is recognised and skipped, so redelivery changes nothing.
Unparseable reports are logged and acked (they can never be read).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from simpletasks.errors import MessageError
from simpletasks.queues import Message, QueueService
from simpletasks.reports import DoneReport, ErrorReport, parse_report
from simpletasks.web.db import STATES, Job, Report, Task, Worker

logger = logging.getLogger(__name__)

LEASE_SECONDS = 60.0


def _state_of(report: ErrorReport | DoneReport) -> str:
    if isinstance(report, DoneReport):
        return "succeeded"
    if report.final:
        return "cancelled" if report.phase == "skipped" else "failed"
    return "running"  # failed, will be delivered again


def apply_report(session: Session, report: ErrorReport | DoneReport) -> bool:
    """Store one report and move its task and worker on; return False if already stored."""
    seen = session.scalar(
        select(Report.id).where(
            Report.message_id == report.message_id,
            Report.attempt == report.attempt,
            Report.kind == report.kind,
        )
    )
    if seen is not None:
        return False
    row = Report(
        message_id=str(report.message_id),
        attempt=int(report.attempt),
        kind=report.kind,
        job_id=report.job_id,
        task_id=report.task_id,
        hostname=report.host.hostname,
        pid=report.host.pid,
        daemon=report.daemon,
        time=float(report.time),
        deleted=False,
    )
    if isinstance(report, DoneReport):
        done, skipped = True, False
        row.final, row.phase, row.outputs = True, "done", list(report.outputs)
        row.message, row.error_type, row.seconds = report.result_message, "", report.seconds
    else:
        done, skipped = False, report.phase == "skipped"
        row.final, row.phase, row.outputs = bool(report.final), str(report.phase), []
        row.message, row.error_type, row.seconds = report.error_message, report.error_type, None
    session.add(row)
    if not skipped:
        _see_worker(session, report, done)
    if report.job_id is not None and report.task_id is not None:
        _move_task(session, report, _state_of(report))
    return True


def _see_worker(session: Session, report: ErrorReport | DoneReport, done: bool) -> None:
    host = report.host
    worker = session.scalar(
        select(Worker).where(
            Worker.hostname == host.hostname, Worker.pid == host.pid, Worker.daemon == report.daemon
        )
    )
    if worker is None:
        worker = Worker(
            hostname=host.hostname,
            pid=host.pid,
            daemon=report.daemon,
            tasks_done=0,
            tasks_failed=0,
            first_seen=report.time,
            last_seen=report.time,
        )
        session.add(worker)
    if done:
        worker.tasks_done += 1
    else:
        worker.tasks_failed += 1
    worker.last_seen = max(worker.last_seen, report.time)
    worker.first_seen = min(worker.first_seen, report.time)


def _move_task(session: Session, report: ErrorReport | DoneReport, state: str) -> None:
    job_id = report.job_id
    task = session.scalar(select(Task).where(Task.job_id == job_id, Task.task_id == report.task_id))
    if task is None:
        if session.get(Job, job_id) is None:
            return  # a job this service does not know
        body = report.body if isinstance(report.body, dict) else {}
        info = body.get("basic_info", {}) if isinstance(body.get("basic_info"), dict) else {}
        task = Task(
            job_id=job_id,
            task_id=report.task_id,
            inputs=info.get("inputs", []),
            payload=body.get("payload_info"),
            state="queued",
            attempts=0,
            updated=report.time,
        )
        session.add(task)
    task.attempts = max(task.attempts or 0, int(report.attempt))
    if STATES.index(state) > STATES.index(task.state):
        task.state = state
        task.updated = time.time()


class ReportConsumer:
    """Consumes done and error reports into the database.

    Args:
        sessions: The database session factory.
        queues: The done and/or error queues.
        after_batch: Called with a session after every batch that changed something
            (the service sends completion e-mails there).
    """

    def __init__(
        self,
        sessions: sessionmaker[Any],
        queues: Sequence[QueueService],
        after_batch: Callable[[Session], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.queues = list(queues)
        self.after_batch = after_batch
        self.consumed = 0
        self.duplicates = 0
        self.unreadable = 0
        self.last_poll: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self, wait_seconds: float = 0.0) -> int:
        """Receive one batch from each queue and apply it; return the reports applied."""
        applied = 0
        for queue in self.queues:
            batch = max(1, min(10, queue.capabilities.max_batch))
            messages = queue.receive(batch, wait_seconds=wait_seconds, lease_seconds=LEASE_SECONDS)
            if messages:
                applied += self._apply(queue, messages)
        self.last_poll = time.time()
        if self.after_batch is not None:
            with self.sessions() as session:
                try:
                    self.after_batch(session)
                except Exception:
                    logger.exception("after-batch hook failed")
        return applied

    def drain(self, max_batches: int = 10_000) -> int:
        """Poll until every queue is empty; return the reports applied."""
        total = 0
        for _ in range(max_batches):
            before = (self.consumed, self.duplicates, self.unreadable)
            total += self.poll_once()
            if (self.consumed, self.duplicates, self.unreadable) == before:
                break
        return total

    def _apply(self, queue: QueueService, messages: list[Message]) -> int:
        parsed: list[tuple[Message, ErrorReport | DoneReport | None]] = []
        for message in messages:
            try:
                parsed.append((message, parse_report(message.body)))
            except MessageError as exc:
                logger.warning("unreadable report %s on %s: %s", message.id, queue.url, exc)
                self.unreadable += 1
                parsed.append((message, None))
        reports = [r for _, r in parsed if r is not None]
        try:
            applied = self._commit(reports)
        except IntegrityError:  # another consumer stored one of them first: one at a time
            applied = sum(self._commit([r]) for r in reports)
        queue.ack_many(messages)
        return applied

    def _commit(self, reports: list[ErrorReport | DoneReport]) -> int:
        """Apply ``reports`` in one transaction; return how many were new.

        A lone report that hits a unique constraint (another consumer stored it, or the
        same worker, at the same moment) is tried again in a fresh transaction, which then
        sees the other's row. Several reports raise, and the caller applies them one by one.
        """
        for attempt in range(1, 4):
            with self.sessions() as session:
                try:
                    fresh = [apply_report(session, r) for r in reports]
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    if len(reports) > 1 or attempt == 3:
                        raise
                    continue
            applied = sum(fresh)
            self.consumed += applied
            self.duplicates += len(fresh) - applied
            return applied
        raise AssertionError("unreachable")

    def start(self, wait_seconds: float = 5.0) -> None:
        """Consume in a background thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(wait_seconds,), name="st-web-consumer", daemon=True
        )
        self._thread.start()

    def _run(self, wait_seconds: float) -> None:
        idle = 0.1
        while not self._stop.is_set():
            try:
                n = self.poll_once(wait_seconds=0.0)
            except Exception as exc:
                logger.warning("report consumer: %s", exc)
                n = 0
            idle = 0.05 if n else min(wait_seconds, idle * 2)
            self._stop.wait(idle)

    def stop(self) -> None:
        """Stop the background thread (waits for the current batch)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()
