"""The report consumer: reads the done and error queues into the database.

Each batch of reports is applied in one transaction and acked only after the commit, so a
crash loses nothing: the queue delivers the batch again. A report already stored (same
message id, attempt and kind) is recognised and skipped, so redelivery changes nothing.
Unparseable reports, and reports with a field the database cannot store (a string attempt,
an over-long job id), are logged and acked: they can never be read.

Started reports (daemons run with ``--report-starts``) move a queued task to *running*; they
are stored like the others (for idempotency) but are not results, count as neither done nor
failed for their worker, and never create a task row (they carry no body; the done or error
report that follows does).
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
from simpletasks.reports import DoneReport, ErrorReport, StartedReport, parse_report
from simpletasks.web.db import STATES, Job, Report, Task, Worker

logger = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
BATCH = 100  # reports per transaction (at most the queue's batch size)

AnyReport = ErrorReport | DoneReport | StartedReport


def _state_of(report: AnyReport) -> str:
    if isinstance(report, DoneReport):
        return "succeeded"
    if isinstance(report, StartedReport):
        return "running"
    if report.final:
        return "cancelled" if report.phase == "skipped" else "failed"
    return "running"  # failed, will be delivered again


_INT_MAX = 2**31 - 1  # the database's Integer columns are 32-bit on PostgreSQL

#: Fields the consumer stores: name -> (accepted types, longest string or largest int).
_FIELDS: dict[str, tuple[tuple[type, ...], int | None]] = {
    "message_id": ((str,), 500),
    "attempt": ((int,), _INT_MAX),
    "job_id": ((str, type(None)), 128),
    "task_id": ((int, type(None)), _INT_MAX),
    "daemon": ((str,), 200),
    "time": ((int, float), None),
    "outputs": ((list,), None),
    "result_message": ((str,), None),
    "seconds": ((int, float), None),
    "final": ((bool,), None),
    "phase": ((str,), 20),
    "error_type": ((str,), 200),
    "error_message": ((str,), None),
}


def malformed(report: AnyReport) -> str | None:
    """Say what in a parsed report the database cannot store (``None``: nothing).

    :func:`~simpletasks.reports.parse_report` checks the shape, not the field types; a report
    with, say, ``"attempt": "x"`` would fail its whole batch on every delivery.
    """
    values = {"hostname": report.host.hostname, "pid": report.host.pid, **vars(report)}
    for name, (types, limit) in (*_FIELDS.items(), ("hostname", ((str,), 255))):
        if name not in values:
            continue
        value = values[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"{name} is {type(value).__name__}, not {' or '.join(t.__name__ for t in types)}"
        if limit is not None and isinstance(value, str) and len(value) > limit:
            return f"{name} is longer than {limit} characters"
        if limit is not None and isinstance(value, int) and not -limit <= value <= limit:
            return f"{name} {value} is out of range"
    if isinstance(report, DoneReport) and not all(isinstance(o, str) for o in report.outputs):
        return "outputs must all be strings"
    return None


def apply_report(session: Session, report: AnyReport) -> bool:
    """Store one report and move its task and worker on; return False if already stored."""
    return apply_reports(session, [report])[0]


def apply_reports(session: Session, reports: Sequence[AnyReport]) -> list[bool]:
    """Store reports and move their tasks and workers on (one query of each kind per batch).

    Returns, for each report, whether it was new (``False``: already stored, or a repeat
    earlier in the same batch). The caller commits.
    """
    with session.no_autoflush:
        stored = _stored_keys(session, reports)
        fresh: list[bool] = []
        for report in reports:
            ident = (str(report.message_id), int(report.attempt), report.kind)
            fresh.append(ident not in stored)
            stored.add(ident)
        new = [r for r, is_new in zip(reports, fresh, strict=True) if is_new]
        session.add_all(_report_row(r) for r in new)
        _see_workers(session, [r for r in new if not _skipped(r)])
        _move_tasks(session, [r for r in new if r.job_id is not None and r.task_id is not None])
    return fresh


def _stored_keys(session: Session, reports: Sequence[AnyReport]) -> set[tuple[str, int, str]]:
    ids = sorted({str(r.message_id) for r in reports})
    rows = session.execute(
        select(Report.message_id, Report.attempt, Report.kind).where(Report.message_id.in_(ids))
    )
    return {(m, int(a), k) for m, a, k in rows}


def _skipped(report: AnyReport) -> bool:
    return isinstance(report, ErrorReport) and report.phase == "skipped"


def _report_row(report: AnyReport) -> Report:
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
        row.final, row.phase, row.outputs = True, "done", list(report.outputs)
        row.message, row.error_type, row.seconds = report.result_message, "", report.seconds
    elif isinstance(report, StartedReport):
        row.final, row.phase, row.outputs = False, "started", []
        row.message, row.error_type, row.seconds = "", "", None
    else:
        row.final, row.phase, row.outputs = bool(report.final), str(report.phase), []
        row.message, row.error_type, row.seconds = report.error_message, report.error_type, None
    return row


def _see_workers(session: Session, reports: Sequence[AnyReport]) -> None:
    by_worker: dict[tuple[str, int, str], list[AnyReport]] = {}
    for report in reports:
        ident = (report.host.hostname, report.host.pid, report.daemon)
        by_worker.setdefault(ident, []).append(report)
    for (hostname, pid, daemon), seen in by_worker.items():
        worker = session.scalar(
            select(Worker).where(
                Worker.hostname == hostname, Worker.pid == pid, Worker.daemon == daemon
            )
        )
        times = [r.time for r in seen]
        if worker is None:
            worker = Worker(
                hostname=hostname,
                pid=pid,
                daemon=daemon,
                tasks_done=0,
                tasks_failed=0,
                first_seen=min(times),
                last_seen=max(times),
            )
            session.add(worker)
        done = sum(isinstance(r, DoneReport) for r in seen)
        worker.tasks_done += done
        worker.tasks_failed += sum(isinstance(r, ErrorReport) for r in seen)
        worker.last_seen = max(worker.last_seen, *times)
        worker.first_seen = min(worker.first_seen, *times)


def _move_tasks(session: Session, reports: Sequence[AnyReport]) -> None:
    by_job: dict[str, list[AnyReport]] = {}
    for report in reports:
        by_job.setdefault(str(report.job_id), []).append(report)
    for job_id, job_reports in by_job.items():
        ids = sorted({int(r.task_id) for r in job_reports if r.task_id is not None})
        tasks = {
            t.task_id: t
            for t in session.scalars(
                select(Task).where(Task.job_id == job_id, Task.task_id.in_(ids))
            )
        }
        known_job: bool | None = None
        for report in job_reports:
            task = tasks.get(int(report.task_id or 0))
            if task is None:
                if isinstance(report, StartedReport):
                    continue  # no body to make the row from; its done/error report will
                if known_job is None:
                    known_job = session.get(Job, job_id) is not None
                if not known_job:
                    break  # a job this service does not know
                task = _task_from_report(job_id, report)
                tasks[task.task_id] = task
                session.add(task)
            task.attempts = max(task.attempts or 0, int(report.attempt))
            state = _state_of(report)
            if STATES.index(state) > STATES.index(task.state):
                task.state = state
                task.updated = time.time()


def _task_from_report(job_id: str, report: ErrorReport | DoneReport) -> Task:
    """A task row for a report of a task the service did not record (sent, commit lost)."""
    body = report.body if isinstance(report.body, dict) else {}
    info = body.get("basic_info", {}) if isinstance(body.get("basic_info"), dict) else {}
    return Task(
        job_id=job_id,
        task_id=int(report.task_id or 0),
        inputs=info.get("inputs", []),
        payload=body.get("payload_info"),
        state="queued",
        attempts=0,
        updated=report.time,
    )


class ReportConsumer:
    """Consumes done, started and error reports into the database.

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
            batch = max(1, min(BATCH, queue.capabilities.max_batch))
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
        parsed: list[tuple[Message, AnyReport | None]] = []
        for message in messages:
            try:
                report = parse_report(message.body, with_started=True)
                problem = malformed(report)
                if problem is not None:
                    raise MessageError(f"a {report.kind} report whose {problem}")
                parsed.append((message, report))
            except (MessageError, TypeError, ValueError) as exc:  # int(pid) of "x" or null
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

    def _commit(self, reports: list[AnyReport]) -> int:
        """Apply ``reports`` in one transaction; return how many were new.

        A lone report that hits a unique constraint (another consumer stored it, or the
        same worker, at the same moment) is tried again in a fresh transaction, which then
        sees the other's row. Several reports raise, and the caller applies them one by one.
        """
        for attempt in range(1, 4):
            with self.sessions() as session:
                try:
                    fresh = apply_reports(session, reports)
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
