"""The daemon: receive task messages, run them on worker threads, report, ack.

A message is acked only after its task's ``finalize`` succeeded or its error report was
written. A failed task is retried after a growing delay up to its attempt limit; malformed
messages are reported at once; SIGTERM/SIGINT let running tasks finish within a grace period.
"""

from __future__ import annotations

import logging
import queue as stdqueue
import random
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from simpletasks.errors import ConfigError, MessageError, TaskFailed
from simpletasks.hooks import Hook, emit
from simpletasks.leases import LeaseKeeper, State
from simpletasks.queues import Message, QueueService
from simpletasks.registry import TaskRegistry
from simpletasks.reports import DoneReport, ErrorReport, HostInfo, body_for_report
from simpletasks.settings import DaemonSettings, RunStats
from simpletasks.task import DaemonTask

logger = logging.getLogger(__name__)

RECEIVE_BATCH = 10  # SQS's maximum per receive


class DaemonService:
    """Runs registered tasks from a queue until stopped, drained or a task limit.

    Args:
        queue: Where task messages come from.
        registry: The task types this daemon runs.
        datasource: Passed to the task hooks (a per-task session of it, if it has
            ``session()``); may be ``None`` for tasks that need no data.
        error_queue: Where error reports go. Without one, failures are only logged and a
            message at its attempt limit is left to the queue's own redrive policy.
        done_queue: Where done reports go (optional).
        settings: Polling, concurrency and retry settings.
        hooks: Observers called around each task.
    """

    def __init__(
        self,
        *,
        queue: QueueService,
        registry: TaskRegistry,
        datasource: Any = None,
        error_queue: QueueService | None = None,
        done_queue: QueueService | None = None,
        settings: DaemonSettings | None = None,
        hooks: Sequence[Hook] = (),
    ) -> None:
        self.queue = queue
        self.registry = registry
        self.datasource = datasource
        self.error_queue = error_queue
        self.done_queue = done_queue
        self.settings = settings or DaemonSettings()
        self.hooks = list(hooks)
        self.host = HostInfo.current()
        self.stats = RunStats()
        self._leases = LeaseKeeper(queue, self.settings.lease_seconds)
        self._work: stdqueue.SimpleQueue[Message | None] = stdqueue.SimpleQueue()
        self._stopping = threading.Event()
        self._reaped = threading.Event()
        self._hurry = threading.Event()  # a second stop(): skip the rest of the grace period
        self._mean_seconds: float | None = None
        self._retry_due = 0.0  # monotonic time the last retry handed back becomes visible
        self._max_lease: float | None = getattr(queue, "max_lease_seconds", None)
        if self._max_lease is not None and self.settings.lease_seconds > self._max_lease:
            raise ConfigError(
                f"lease_seconds={self.settings.lease_seconds:g} is more than {queue.url} allows "
                f"({self._max_lease:g} s); the heartbeat renews it, so a shorter lease is fine"
            )

    # -- public --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking work; finish running tasks within the grace period. Signal-safe.

        A second call releases the running tasks at once instead of waiting out the grace.
        """
        if self._stopping.is_set():
            if not self._hurry.is_set():
                logger.warning("second stop request: releasing running tasks now")
                self._hurry.set()
            return
        self._stopping.set()
        logger.info(
            "stopping: no new tasks; %.0f s grace for running ones", self.settings.grace_seconds
        )
        threading.Thread(target=self._reap, name="simpletasks-stop", daemon=True).start()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT call :meth:`stop` (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop())

    def run(self) -> RunStats:
        """Receive and run tasks until stopped, drained (burst) or ``max_tasks`` reached."""
        s = self.settings
        started = time.monotonic()
        logger.info(
            "daemon on %s: tasks %s, concurrency %d, lease %.0f s",
            self.queue.url,
            ", ".join(self.registry.names()),
            s.concurrency,
            s.lease_seconds,
        )
        self._leases.start_threads()
        workers = [
            threading.Thread(target=self._worker, name=f"simpletasks-worker-{i}", daemon=True)
            for i in range(s.concurrency)
        ]
        for worker in workers:
            worker.start()
        try:
            self._loop()
        finally:
            if self._stopping.is_set():
                self._reaped.wait()
            else:  # drained or at max_tasks: let every held task finish
                self._wait_until_idle()
            for _ in workers:
                self._work.put(None)
            self._leases.stop_threads()
            self.stats.seconds = time.monotonic() - started
            logger.info("daemon done: %s", self.stats)
        return self.stats

    # -- loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        s = self.settings
        idle_delay = 0.0
        wait = s.wait_seconds
        while not self._stopping.is_set():
            if s.max_tasks is not None and self.stats.received >= s.max_tasks:
                logger.info("received %d tasks (max_tasks): finishing", self.stats.received)
                return
            want = self._wait_for_room()
            if want == 0:
                continue
            if s.max_tasks is not None:
                want = min(want, s.max_tasks - self.stats.received)
            full_wait = wait >= s.wait_seconds
            try:
                messages = self.queue.receive(
                    want, wait_seconds=wait, lease_seconds=s.lease_seconds
                )
            except Exception as exc:
                logger.warning("receive from %s failed: %s", self.queue.url, exc)
                messages = []
            if self._stopping.is_set():
                self._leases.release_all(messages)
                self.stats.add("released", len(messages))
                return
            # In burst mode a short batch means the queue is nearly drained: poll without
            # waiting from now on, so the exit is not delayed by a final long poll.
            if s.burst and len(messages) < want:
                wait = 0.0
            if messages:
                idle_delay = 0.0
                self.stats.add("received", len(messages))
                for message in messages:
                    self._leases.add(message)
                    self._work.put(message)
                continue
            if s.burst:
                drained, counts_known = self._drained(full_wait=full_wait)
                if drained:
                    logger.info("queue drained (burst): finishing")
                    return
                if not counts_known:  # only a full long poll can tell us the queue is empty
                    wait = s.wait_seconds
            idle_delay = min(max(0.05, idle_delay * 2), s.idle_max_seconds)
            self._stopping.wait(idle_delay * random.uniform(0.75, 1.0))

    def _wait_for_room(self) -> int:
        """Wait (briefly) until a receive is worth it; return how many messages to ask for."""
        s = self.settings
        prefetch = 0
        if s.prefetch_seconds and self._mean_seconds is not None:
            prefetch = min(RECEIVE_BATCH, int(s.prefetch_seconds / max(self._mean_seconds, 1e-4)))
        limit = s.concurrency + prefetch
        with self._leases.changed:
            buffered, running = self._leases.counts()
            room = limit - buffered - running
            # Refill when the local buffer is empty, or when a whole batch fits.
            if room <= 0 or (buffered > 0 and room < min(RECEIVE_BATCH, limit)):
                self._leases.changed.wait(0.2)
                return 0
        return min(room, RECEIVE_BATCH)

    def _drained(self, *, full_wait: bool) -> tuple[bool, bool]:
        """Return (whether the queue is drained, whether the queue could count its messages).

        Without counts (Pub/Sub), "drained" means: nothing held here, no retry of ours still
        pending, and the last receive was an empty full-length long poll.
        """
        buffered, running = self._leases.counts()
        if buffered or running:
            return False, True
        try:
            counts = self.queue.counts()
        except Exception as exc:
            logger.warning("could not count messages on %s: %s", self.queue.url, exc)
            return False, True
        if counts.visible is None and counts.in_flight is None:
            return full_wait and time.monotonic() >= self._retry_due, False
        return not counts.visible and not counts.in_flight, True

    def _wait_until_idle(self) -> None:
        with self._leases.changed:
            while any(self._leases.counts()):
                self._leases.changed.wait(0.5)

    def _reap(self) -> None:
        """After stop(): release buffered leases, wait the grace period, release the rest."""
        try:
            buffered = self._leases.take(State.BUFFERED)
            self._leases.release_all(buffered)
            self.stats.add("released", len(buffered))
            deadline = time.monotonic() + self.settings.grace_seconds
            with self._leases.changed:
                while (
                    self._leases.counts()[1]
                    and time.monotonic() < deadline
                    and not self._hurry.is_set()
                ):
                    self._leases.changed.wait(min(0.2, max(0.0, deadline - time.monotonic())))
            running = self._leases.take(State.RUNNING)
            if running:
                logger.warning("grace period over: releasing %d running task(s)", len(running))
            self._leases.release_all(running)
            self.stats.add("released", len(running))
        finally:
            self._reaped.set()

    # -- one message ---------------------------------------------------------------------

    def _worker(self) -> None:
        while (message := self._work.get()) is not None:
            if not self._leases.start(message):
                continue  # released at stop before it started
            started = time.monotonic()
            try:
                self._process(message)
            except Exception:  # _process reports everything; this is a last resort
                logger.exception("internal error handling message %s", message.id)
                self._retry_later(message)
            seconds, mean = time.monotonic() - started, self._mean_seconds
            self._mean_seconds = seconds if mean is None else 0.8 * mean + 0.2 * seconds

    def _process(self, message: Message) -> None:
        s = self.settings
        try:
            task = self.registry.parse(message.body)
        except Exception as exc:  # a MessageError, or e.g. a payload dataclass's own check
            traced = not isinstance(exc, MessageError)
            self._fail(message, None, "parse", exc, final=True, with_traceback=traced)
            return
        if message.attempt > s.max_attempts:
            too_many = RuntimeError(
                f"delivered {message.attempt} times, more than max_attempts={s.max_attempts} "
                "(an earlier attempt may have crashed its daemon)"
            )
            self._fail(message, task, "receive", too_many, final=True, with_traceback=False)
            return
        logger.debug("running %r (message %s, attempt %d)", task, message.id, message.attempt)
        emit(self.hooks, "before_task", task, message)
        phase = "prepare"
        started = time.monotonic()
        session = getattr(self.datasource, "session", None)
        try:
            with session() if session else nullcontext(self.datasource) as ds:
                task.prepare(ds)
                phase = "execute"
                result = task.execute(ds)
                if not result.success:
                    raise TaskFailed(result.message or "execute returned success=False")
                phase = "finalize"
                task.finalize(ds, result)
        except Exception as exc:
            self._fail(message, task, phase, exc, final=message.attempt >= s.max_attempts)
            return
        if self.done_queue is not None:
            report = DoneReport(
                host=self.host,
                message_id=message.id,
                body=task.message.to_dict(),
                task_name=task.name,
                task_id=task.id,
                outputs=list(result.outputs),
                result_message=result.message,
                attempt=message.attempt,
                seconds=time.monotonic() - started,
            )
            if not self._send_report(self.done_queue, report, message):
                self._retry_later(message)
                return
        emit(self.hooks, "after_task", task, message, result, reverse=True)
        self._leases.ack(message)
        self.stats.add("succeeded")
        logger.debug("done %r", task)

    def _fail(
        self,
        message: Message,
        task: DaemonTask | None,
        phase: str,
        exc: Exception,
        *,
        final: bool,
        with_traceback: bool = True,
    ) -> None:
        report = ErrorReport(
            host=self.host,
            message_id=message.id,
            body=body_for_report(message.body),
            phase=phase,
            error_type=type(exc).__name__,
            error_message=str(exc),
            traceback="".join(traceback.format_exception(exc)) if with_traceback else "",
            attempt=message.attempt,
            max_attempts=self.settings.max_attempts,
            final=final,
            task_name=task.name if task else None,
            task_id=task.id if task else None,
        )
        what = f"{task!r}" if task else f"message {message.id}"
        if final:
            logger.error(
                "%s failed in %s (attempt %d, final): %s: %s",
                what,
                phase,
                message.attempt,
                report.error_type,
                exc,
            )
        else:
            logger.warning(
                "%s failed in %s (attempt %d of %d, will retry): %s: %s",
                what,
                phase,
                message.attempt,
                self.settings.max_attempts,
                report.error_type,
                exc,
            )
        written = True
        if self.error_queue is not None:
            written = self._send_report(self.error_queue, report, message)
        emit(self.hooks, "on_error", message, report, reverse=True)
        if final and written and self.error_queue is not None:
            self._leases.ack(message)
            self.stats.add("dead_lettered")
        else:
            self._retry_later(message)

    def _retry_later(self, message: Message) -> None:
        if not self._leases.settle(message):
            return  # already released by stop()
        delay = self.settings.retry_delay(message.attempt)
        if self._max_lease is not None:
            delay = min(delay, self._max_lease)
        self._retry_due = max(self._retry_due, time.monotonic() + delay)
        try:
            if delay > 0:
                self.queue.extend(message, delay)
            else:
                self.queue.release(message)
        except Exception as exc:
            logger.warning(
                "could not hand message %s back (its lease will run out): %s", message.id, exc
            )
        self.stats.add("retried")

    def _send_report(
        self, target: QueueService, report: ErrorReport | DoneReport, message: Message
    ) -> bool:
        try:
            target.send(report.to_json(max_bytes=getattr(target, "max_body_bytes", None)))
            return True
        except Exception:
            logger.exception(
                "could not write report for message %s to %s; the message stays on its queue",
                message.id,
                target.url,
            )
            return False
