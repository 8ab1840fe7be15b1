"""Running one received message: parse, the three phases, reports, follow-ups, ack or retry.

:class:`MessageRunner` is the half of the daemon that handles one message on a worker thread;
:class:`~simpletasks.daemon.DaemonService` is the other half (receiving, threads, stopping).
Everything that can go wrong with a message ends here in exactly one of: acked after success,
reported and acked as a final failure, reported and handed back for a retry, or (when the
daemon gave the task up at stop) dropped without publishing anything. What gets written to
the error, done and follow-up queues is built and sent by :class:`~simpletasks.outbox.Outbox`.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from simpletasks.checkpoint import Checkpoints
from simpletasks.context import CancelSignal, TaskContext
from simpletasks.errors import (
    KeyNotFound,
    MessageError,
    PermanentFailure,
    TaskCancelled,
    TaskExited,
    TaskFailed,
    TaskTimedOut,
)
from simpletasks.leases import LeaseKeeper
from simpletasks.message import TaskMessage
from simpletasks.middleware import MiddlewareChain
from simpletasks.outbox import Outbox, Targets
from simpletasks.queues import Message, QueueService
from simpletasks.registry import TaskRegistry
from simpletasks.reports import DoneReport, ErrorReport
from simpletasks.settings import DaemonSettings
from simpletasks.stats import RunStats
from simpletasks.task import DaemonTask, Result

logger = logging.getLogger(__name__)

#: Failures no retry can fix: reported as final at once.
PERMANENT = (MessageError, PermanentFailure, KeyNotFound)


class MessageRunner:
    """Handles messages on worker threads for one daemon.

    Args:
        name: The daemon's name (in logs and reports).
        queue: The task queue (for retries: extend or release).
        registry: Task types.
        datasource: Passed to the hooks, through a per-task ``session()`` if it has one.
        targets: Error, done and follow-up queues.
        settings: Attempts and retry delays.
        leases: The daemon's lease keeper (acks, settling, cancellation).
        middleware: Observers of each message.
        stats: The daemon's counters.
        stopping: Set when the daemon was asked to stop (tasks can see it).
        skip: Asked about every parsed message before it runs; a non-empty string is the
            reason to skip it (for example "job 7 was cancelled"): the message is reported on
            the error queue as final with phase ``skipped`` and deleted unrun. An exception
            inside it is logged and the task runs.
    """

    def __init__(
        self,
        *,
        name: str,
        queue: QueueService,
        registry: TaskRegistry,
        datasource: Any,
        targets: Targets,
        settings: DaemonSettings,
        leases: LeaseKeeper,
        middleware: MiddlewareChain,
        stats: RunStats,
        stopping: threading.Event,
        skip: Callable[[TaskMessage], str | None] | None = None,
    ) -> None:
        self.name = name
        self.skip = skip
        self.queue = queue
        self.registry = registry
        self.datasource = datasource
        self.targets = targets
        self.settings = settings
        self.leases = leases
        self.middleware = middleware
        # Phases are timed only for middleware that looks at them.
        self._timed_phases = middleware.handles("before_phase") or middleware.handles("after_phase")
        self.stats = stats
        self.stopping = stopping
        self._bucket = getattr(datasource, "bucket", None)
        self.outbox = Outbox(
            name=name, targets=targets, bucket=self._bucket, max_attempts=settings.max_attempts
        )
        self._session: Callable[[], Any] | None = getattr(datasource, "session", None)
        self._max_lease = queue.capabilities.max_lease_seconds
        self._lock = threading.Lock()  # guards the two values below (updated by workers)
        self._mean_seconds: float | None = None
        self._retry_due = 0.0  # monotonic time the last retry handed back becomes visible

    @property
    def mean_seconds(self) -> float | None:
        """Smoothed duration of a message so far (``None`` before the first)."""
        with self._lock:
            return self._mean_seconds

    @property
    def retry_due(self) -> float:
        """Monotonic time by which every retry this daemon handed back is visible again."""
        with self._lock:
            return self._retry_due

    # -- one message ---------------------------------------------------------------------

    def run(self, message: Message, cancel: CancelSignal, resources: Mapping[str, Any]) -> None:
        """Handle ``message`` to its end; never raises."""
        started = time.monotonic()
        try:
            self._run(message, cancel, resources)
        except (Exception, SystemExit, KeyboardInterrupt):  # a last resort: see _untimed_phase
            logger.exception("[%s] internal error handling message %s", self.name, message.id)
            self._retry_later(message)
            self.middleware.emit("on_released", message)
        seconds = time.monotonic() - started
        with self._lock:
            mean = self._mean_seconds
            self._mean_seconds = seconds if mean is None else 0.8 * mean + 0.2 * seconds

    def _run(self, message: Message, cancel: CancelSignal, resources: Mapping[str, Any]) -> None:
        self.middleware.emit("on_received", message)
        parsed: TaskMessage | None = None
        try:
            parsed = TaskMessage.from_json(message.body)
            context = TaskContext(
                attempt=message.attempt,
                message_id=message.id,
                daemon=self.name,
                job_id=parsed.job_id,
                resources=resources,
                cancel=cancel,
                stopping=self.stopping,
                checkpoints=Checkpoints(self._bucket, message.body),
            )
            task = self.registry.create(parsed, context)
        except Exception as exc:  # a MessageError, or e.g. a payload dataclass's own check
            traced = not isinstance(exc, MessageError)
            self._fail(message, None, parsed, "parse", exc, final=True, with_traceback=traced)
            return
        limit = self.settings.max_attempts
        if limit is not None and message.attempt > limit:
            cause = "crashed its daemon"
            if self.settings.task_timeout_seconds:
                cause += f" or run past task_timeout_seconds={self.settings.task_timeout_seconds:g}"
            too_many = RuntimeError(
                f"delivered {message.attempt} times, more than max_attempts="
                f"{self.settings.max_attempts} (an earlier attempt may have {cause})"
            )
            self._fail(message, task, parsed, "receive", too_many, final=True, with_traceback=False)
            return
        if self.skip is not None and self._skipped(task, message, parsed):
            return
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            logger.debug(
                "[%s] running %r (message %s, attempt %d)",
                self.name,
                task,
                message.id,
                message.attempt,
            )
        started = time.monotonic()
        phase = "prepare"
        try:
            result = self._phases(task, message, cancel)
            phase = "followups"
            followups = self._followups(task, result) if result.followups else []
        except Exception as exc:
            if cancel.is_set():
                return self._given_up(task, message)
            if isinstance(exc, _PhaseError):
                phase, exc = exc.phase, exc.error
            final = isinstance(exc, PERMANENT) or (limit is not None and message.attempt >= limit)
            self._fail(message, task, parsed, phase, exc, final=final)
            return
        if cancel.is_set():
            return self._given_up(task, message)
        if followups:
            if not self.outbox.send(self.targets.followup_queue, followups, message):
                self._retry_later(message)
                return
            self.stats.add(followups=len(followups))
        if self.targets.done_queue is not None:
            report = DoneReport(
                host=self.outbox.host,
                message_id=message.id,
                body=parsed.to_dict(),
                task_name=task.name,
                task_id=task.id,
                outputs=list(result.outputs),
                result_message=result.message,
                attempt=message.attempt,
                seconds=time.monotonic() - started,
                followups=len(followups),
                job_id=parsed.job_id,
                daemon=self.name,
            )
            if not self.outbox.send(self.targets.done_queue, [self.outbox.encode(report)], message):
                self._retry_later(message)
                return
        if task.context.checkpoint_used:
            Checkpoints(self._bucket, message.body).delete()
        self.leases.ack(message)
        self.stats.add(succeeded=1)
        self.middleware.emit("on_acked", task, message, result)
        if debug:
            logger.debug("[%s] done %r", self.name, task)

    def _skipped(self, task: DaemonTask, message: Message, parsed: TaskMessage) -> bool:
        """Report and ack ``message`` unrun if ``skip`` says so; return whether it did."""
        if self.skip is None:
            return False
        try:
            reason = self.skip(parsed)
        except Exception:
            logger.exception("[%s] skip check failed for %r; running it", self.name, task)
            return False
        if not reason:
            return False
        report = self.outbox.error_report(
            message, parsed, "skipped", "Skipped", reason, "", final=True
        )
        logger.info("[%s] skipping %r: %s", self.name, task, reason)
        if self.targets.error_queue is not None:
            body = self.outbox.encode_final(report, message)
            if body is None or not self.outbox.send(self.targets.error_queue, [body], message):
                self._retry_later(message)
                return True
        self.leases.ack(message)
        self.stats.add(skipped=1)
        self.middleware.emit("on_skipped", task, message, reason)
        return True

    def _phases(self, task: DaemonTask, message: Message, cancel: CancelSignal) -> Result:
        """Run prepare, execute and finalize; raise :class:`_PhaseError` on a failure."""
        if self._session is None:  # the hot path: no per-task session to open and close
            return self._run_phases(task, message, cancel, self.datasource)
        with self._session() as ds:
            return self._run_phases(task, message, cancel, ds)

    def _run_phases(
        self, task: DaemonTask, message: Message, cancel: CancelSignal, ds: Any
    ) -> Result:
        phase = self._phase if self._timed_phases else _untimed_phase
        phase(task, message, "prepare", task.prepare, ds)
        result: Result = phase(task, message, "execute", _execute, task, ds)
        if cancel.is_set():  # given up during execute: publish nothing
            raise _PhaseError("execute", TaskCancelled("given up before finalize"))
        phase(task, message, "finalize", task.finalize, ds, result)
        return result

    def _phase(
        self, task: DaemonTask, message: Message, phase: str, call: Callable[..., Any], *args: Any
    ) -> Any:
        """``call(*args)`` with the middleware's ``before_phase``/``after_phase`` around it."""
        self.middleware.emit("before_phase", task, message, phase)
        started = time.monotonic()
        try:
            value = call(*args)
        except (Exception, SystemExit, KeyboardInterrupt) as raised:
            exc = raised if isinstance(raised, Exception) else TaskExited.of(raised, phase)
            self.middleware.emit(
                "after_phase", task, message, phase, time.monotonic() - started, exc
            )
            raise _PhaseError(phase, exc) from raised
        self.middleware.emit("after_phase", task, message, phase, time.monotonic() - started, None)
        return value

    def _followups(self, task: DaemonTask, result: Result) -> list[str]:
        """Check and encode the result's follow-up messages.

        Raises:
            PermanentFailure: If a follow-up is malformed or no follow-up queue is configured.
        """
        if not result.followups:
            return []
        if self.targets.followup_queue is None:
            raise PermanentFailure(
                f"{task!r} returned {len(result.followups)} follow-up task(s) but this daemon "
                "has no follow-up queue (DaemonService(followup_queue=...), run --followup-queue)"
            )
        bodies = []
        for i, item in enumerate(result.followups):
            try:
                followup = item if isinstance(item, TaskMessage) else TaskMessage.from_dict(item)
            except MessageError as exc:
                raise PermanentFailure(f"follow-up {i} of {task!r} is not a task: {exc}") from None
            if followup.job_id is None and task.message.job_id is not None:
                followup = TaskMessage(
                    followup.basic_info, followup.payload_info, task.message.job_id
                )
            bodies.append(followup.to_json())
        limit = self.targets.followup_queue.capabilities.max_body_bytes
        for i, text in enumerate(bodies):  # too big: it would never be sent, whatever retries
            size = len(text.encode()) if limit is not None and len(text) > limit // 4 else 0
            if limit is not None and size > limit:
                raise PermanentFailure(
                    f"follow-up {i} of {task!r} is {size} bytes of UTF-8; "
                    f"{self.targets.followup_queue.url} accepts at most {limit} bytes per "
                    "message (store large data in the bucket and send its key)"
                )
        return bodies

    def _given_up(self, task: DaemonTask, message: Message) -> None:
        """The daemon gave ``message`` up (grace period over, or task_timeout): publish nothing."""
        logger.warning(
            "[%s] %r finished after it was given up; its result is dropped (its message was "
            "handed back for another attempt, or reported)",
            self.name,
            task,
        )

    # -- failures ------------------------------------------------------------------------

    def _fail(
        self,
        message: Message,
        task: DaemonTask | None,
        parsed: TaskMessage | None,
        phase: str,
        exc: Exception,
        *,
        final: bool,
        with_traceback: bool = True,
    ) -> None:
        trace = "".join(traceback.format_exception(exc)) if with_traceback else ""
        report = self.outbox.error_report(
            message, parsed, phase, type(exc).__name__, str(exc), trace, final=final
        )
        what = f"{task!r}" if task else f"message {message.id}"
        if final:
            logger.error(
                "[%s] %s failed in %s (attempt %d, final): %s: %s",
                self.name,
                what,
                phase,
                message.attempt,
                report.error_type,
                exc,
            )
        else:
            logger.warning(
                "[%s] %s failed in %s (attempt %d of %s, will retry): %s: %s",
                self.name,
                what,
                phase,
                message.attempt,
                self.settings.max_attempts or "no limit",
                report.error_type,
                exc,
            )
        self._conclude(task, message, report, held=True)

    def timed_out(self, message: Message, seconds: float) -> None:
        """Report a message the daemon gave up after ``seconds`` (``task_timeout_seconds``).

        Its lease is already settled and its worker replaced; whatever its task returns later
        is dropped. Like any failed attempt it is reported on the error queue and handed back
        after the retry delay; at the attempt limit the report is final and the message is
        deleted (if the report could be written; else it is handed back too).
        """
        try:
            parsed: TaskMessage | None = TaskMessage.from_json(message.body)
        except MessageError:  # it got past parsing once: only a changed registry gets here
            parsed = None
        limit = self.settings.max_attempts
        final = limit is not None and message.attempt >= limit
        exc = TaskTimedOut(
            f"still running after {seconds:g} s (task_timeout_seconds): given up, its worker "
            "replaced; a result it returns later is dropped"
        )
        report = self.outbox.error_report(
            message, parsed, "timeout", type(exc).__name__, str(exc), "", final=final
        )
        self._conclude(None, message, report, held=False)

    def _conclude(
        self, task: DaemonTask | None, message: Message, report: ErrorReport, *, held: bool
    ) -> None:
        """End a failed attempt: a final report written deletes the message; otherwise the
        report (if not final) is written and the message handed back after the retry delay.

        ``held``: the lease keeper still holds the message (acked and settled through it); a
        timed-out message was already taken from it and is settled on the queue directly.
        """
        if report.final and self._write(report, message):
            if held:
                self.leases.ack(message)
            else:
                try:
                    self.queue.ack(message)
                except Exception as exc:  # it comes back once more, reported as over limit
                    logger.warning(
                        "[%s] could not delete message %s: %s", self.name, message.id, exc
                    )
            self.stats.add(dead_lettered=1)
            self.middleware.emit("on_dead_lettered", task, message, report)
            return
        if not report.final:
            self._write(report, message)
        if held:
            self._retry_later(message)
        else:
            self._hand_back(message)
        self.middleware.emit("on_retried", task, message, report)

    def _write(self, report: ErrorReport, message: Message) -> bool:
        """Send ``report`` to the error queue; whether it was written (``False`` without one).

        A final report is encoded to fit its queue even if that means keeping the message in
        the bucket (:meth:`Outbox.encode_final`); a retry's report may drop the body, since
        the message stays on its queue anyway.
        """
        error_queue = self.targets.error_queue
        if error_queue is None:
            return False
        if report.final:
            body = self.outbox.encode_final(report, message)
        else:
            body = self.outbox.encode(report, error_queue)
        return body is not None and self.outbox.send(error_queue, [body], message)

    def _retry_later(self, message: Message) -> None:
        if not self.leases.settle(message):
            return  # already released by stop()
        self._hand_back(message)

    def _hand_back(self, message: Message) -> None:
        """Make ``message`` (no longer held) visible again after the retry delay."""
        delay = self.settings.retry_delay(message.attempt)
        if self._max_lease is not None:
            delay = min(delay, self._max_lease)
        with self._lock:
            self._retry_due = max(self._retry_due, time.monotonic() + delay)
        try:
            if delay > 0:
                self.queue.extend(message, delay)
            else:
                self.queue.release(message)
        except Exception as exc:
            logger.warning(
                "[%s] could not hand message %s back (its lease will run out): %s",
                self.name,
                message.id,
                exc,
            )
        self.stats.add(retried=1)


def _untimed_phase(
    task: DaemonTask, message: Message, phase: str, call: Callable[..., Any], *args: Any
) -> Any:
    """``call(*args)``, its exception tagged with ``phase`` (the hot path: no middleware).

    ``sys.exit()`` and ``KeyboardInterrupt`` in a task become :class:`TaskExited`: left to
    propagate, they would end the worker thread and strand its message.
    """
    try:
        return call(*args)
    except Exception as exc:
        raise _PhaseError(phase, exc) from exc
    except (SystemExit, KeyboardInterrupt) as exc:
        raise _PhaseError(phase, TaskExited.of(exc, phase)) from exc


def _execute(task: DaemonTask, datasource: Any) -> Result:
    """``task.execute``, checked: a non-Result or ``success=False`` raises."""
    result = task.execute(datasource)
    if not isinstance(result, Result):
        raise TypeError(f"execute must return a Result, got {type(result).__name__}")
    if not result.success:
        raise TaskFailed(result.message or "execute returned success=False")
    return result


class _PhaseError(Exception):
    """A phase's exception, tagged with the phase it came from."""

    def __init__(self, phase: str, error: Exception) -> None:
        super().__init__(phase, error)
        self.phase = phase
        self.error = error
