"""The daemon: receive task messages, run them on worker threads, report, ack.

A message is acked only after its task's ``finalize`` succeeded (and its follow-ups and done
report were sent) or its error report was written. A failed task is retried after a growing
delay up to its attempt limit; malformed messages and permanent failures are reported at
once; a stop request lets running tasks finish within a grace period and then gives them up.

Threads and what each owns:

- the **caller** of :meth:`DaemonService.run` starts the others, logs progress, and on exit
  waits for running tasks (drained or at ``max_tasks``) or for the reaper (stopped);
- the **loop** thread receives messages and hands them to the workers through ``_work``; it
  alone decides how many to ask for;
- **workers** (``concurrency`` of them) run one message at a time through the
  :class:`~simpletasks.execution.MessageRunner`; each owns its per-worker resources;
- the lease keeper's **heartbeat** and **acker** threads extend and delete leases
  (:mod:`simpletasks.leases`, whose condition variable guards the held-message state);
- the **reaper** (after :meth:`stop`) releases buffered messages at once and running ones when
  the grace period ends, setting their tasks' cancel events.

Shared values written by workers (mean duration, retry deadline) live in the runner behind
its lock; counters live in :class:`~simpletasks.stats.RunStats` behind its own.
"""

from __future__ import annotations

import itertools
import logging
import queue as stdqueue
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from simpletasks.context import WorkerResources, check_factories
from simpletasks.errors import ConfigError
from simpletasks.execution import MessageRunner
from simpletasks.leases import LeaseKeeper, State
from simpletasks.message import TaskMessage
from simpletasks.middleware import Middleware, MiddlewareChain
from simpletasks.outbox import Targets
from simpletasks.queues import Message, QueueService
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.stats import RunStats

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 10.0  # how often a busy daemon logs its progress at INFO
#: The least time of work the daemon holds ahead of its workers to cover a receive (short
#: tasks on a queue that answers in well under this): see ``DaemonService._prefetch``.
PREFETCH_FLOOR_SECONDS = 0.05


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
        followup_queue: Where follow-up tasks returned by tasks go (optional; a task that
            returns follow-ups without one fails for good).
        settings: Polling, concurrency and retry settings.
        middleware: Observers of every message (:mod:`simpletasks.middleware`).
        resources: Per-worker resources, name → factory (:mod:`simpletasks.context`); they
            override the registered task types' own :meth:`~DaemonTask.resources`.
        name: Names this daemon in logs, thread names and reports (several daemons may run
            in one process under a :class:`~simpletasks.supervisor.Supervisor`).
        skip: Called with each parsed message before it runs; a non-empty string returned is
            the reason to delete it unrun, with a final report of phase ``skipped`` (the job
            API uses it for cancelled jobs).

    Raises:
        ConfigError: If the lease is longer than the queue allows, or the error or done
            queue is the task queue itself (every report would come back as a bad task).
    """

    def __init__(
        self,
        *,
        queue: QueueService,
        registry: TaskRegistry,
        datasource: Any = None,
        error_queue: QueueService | None = None,
        done_queue: QueueService | None = None,
        followup_queue: QueueService | None = None,
        settings: DaemonSettings | None = None,
        middleware: Sequence[Middleware] = (),
        resources: Mapping[str, Any] | None = None,
        name: str = "daemon",
        skip: Callable[[TaskMessage], str | None] | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.registry = registry
        self.settings = settings or DaemonSettings()
        self.middleware = MiddlewareChain(middleware)
        self.stats = RunStats()
        for role, other in (("error queue", error_queue), ("done queue", done_queue)):
            if other is not None and other.url == queue.url:
                raise ConfigError(
                    f"the {role} is the task queue itself ({queue.url}): every report would "
                    "come back as a malformed task; give it a queue of its own"
                )
        self.capabilities = queue.capabilities
        max_lease = self.capabilities.max_lease_seconds
        if max_lease is not None and self.settings.lease_seconds > max_lease:
            raise ConfigError(
                f"lease_seconds={self.settings.lease_seconds:g} is more than {queue.url} allows "
                f"({max_lease:g} s); the heartbeat renews it, so a shorter lease is fine"
            )
        self._factories = check_factories({**registry.resources(), **(resources or {})})
        self._leases = LeaseKeeper(queue, self.settings.lease_seconds)
        self._work: stdqueue.SimpleQueue[Message | None] = stdqueue.SimpleQueue()
        self._stopping = threading.Event()
        self._reaped = threading.Event()
        self._hurry = threading.Event()  # a second stop(): skip the rest of the grace period
        self._loop_done = threading.Event()
        self._workers: list[threading.Thread] = []
        self._workers_lock = threading.Lock()
        self._replaced = 0  # workers started in place of ones stuck in a timed-out task
        self._worker_numbers = itertools.count()  # unique thread names, replacements too
        self._last_received = 0  # size of the last non-empty receive (the loop's own)
        self._last_asked = 0  # what that receive asked for
        self._receive_seconds: float | None = None  # smoothed latency of a receive
        self.stop_reason: str | None = None  # set when the daemon stopped itself
        self.runner = MessageRunner(
            name=name,
            queue=queue,
            registry=registry,
            datasource=datasource,
            targets=Targets(error_queue, done_queue, followup_queue),
            settings=self.settings,
            leases=self._leases,
            middleware=self.middleware,
            stats=self.stats,
            stopping=self._stopping,
            skip=skip,
        )

    # -- public --------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested (the daemon may still be finishing tasks)."""
        return self._stopping.is_set()

    def stop(self, grace_seconds: float | None = None) -> None:
        """Stop taking work; finish running tasks within the grace period. Signal-safe.

        Args:
            grace_seconds: How long running tasks may take before they are given up; the
                settings' ``grace_seconds`` when ``None`` (a preemption notice passes what is
                left of its window).

        A second call releases the running tasks at once instead of waiting out the grace.
        """
        if self._stopping.is_set():
            if not self._hurry.is_set():
                logger.warning("[%s] second stop request: releasing running tasks now", self.name)
                self._hurry.set()
            return
        grace = self.settings.grace_seconds if grace_seconds is None else max(0.0, grace_seconds)
        self._stopping.set()
        self._leases.notify()  # the loop may be waiting for room
        running = self._leases.counts()[1]
        if running:
            logger.info(
                "[%s] stopping: no new tasks; %.0f s grace for %d running task(s)",
                self.name,
                grace,
                running,
            )
        else:
            logger.info("[%s] stopping", self.name)
        self.middleware.emit("on_stopping", self)
        reaper = threading.Thread(
            target=self._reap, args=(grace,), name=f"st-{self.name}-stop", daemon=True
        )
        reaper.start()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT call :meth:`stop` (main thread only).

        With several daemons in one process, use a :class:`Supervisor` instead.
        """
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop())

    def run(self) -> RunStats:
        """Receive and run tasks until stopped, drained (burst) or ``max_tasks`` reached."""
        s = self.settings
        started = time.monotonic()
        logger.info(
            "[%s] daemon on %s: tasks %s, concurrency %d, lease %.0f s",
            self.name,
            self.queue.url,
            ", ".join(self.registry.names()),
            s.concurrency,
            s.lease_seconds,
        )
        self.middleware.emit("on_start", self)
        self._leases.start_threads()
        for _ in range(s.concurrency):
            self._start_worker()
        loop = threading.Thread(target=self._loop, name=f"st-{self.name}-loop", daemon=True)
        loop.start()
        self._watch(loop, started)
        if self._stopping.is_set():
            # The loop may sit in a long poll; it releases whatever that poll returns.
            loop.join(1.0)
            self._reaped.wait()
        else:  # drained or at max_tasks: let every held task finish (or time out)
            while not self._leases.wait_until(
                lambda buffered, running: not buffered and not running, timeout=0.2
            ):
                self._time_out_tasks()
            if self._stopping.is_set():  # stopped meanwhile (a signal, max_stuck_tasks)
                self._reaped.wait()
        workers = list(self._workers)
        for _ in workers:
            self._work.put(None)
        deadline = time.monotonic() + 1.0  # in all: a worker stuck in a given-up task stays
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._leases.stop_threads()
        self.stats.seconds = time.monotonic() - started
        logger.info("[%s] daemon done: %s", self.name, self.stats)
        self.middleware.emit("on_stop", self)
        return self.stats

    # -- loop ----------------------------------------------------------------------------

    def _watch(self, loop: threading.Thread, started: float) -> None:
        """Wait for the loop to end or a stop; log progress every :data:`PROGRESS_SECONDS`."""
        last, last_time = 0, started
        while loop.is_alive() and not self._stopping.is_set():
            loop.join(0.2)
            self._time_out_tasks()
            now = time.monotonic()
            if now - last_time >= PROGRESS_SECONDS:
                snap = self.stats.snapshot()
                if snap.received != last:
                    done = snap.succeeded + snap.dead_lettered
                    logger.info(
                        "[%s] progress: %d succeeded, %d failed for good, %d retried, %.1f tasks/s",
                        self.name,
                        snap.succeeded,
                        snap.dead_lettered,
                        snap.retried,
                        done / max(now - started, 1e-9),
                    )
                last, last_time = snap.received, now

    def _loop(self) -> None:
        try:
            self._receive_until_done()
        except Exception:
            logger.exception("[%s] receive loop failed; stopping", self.name)
            self.stop()
        finally:
            self._loop_done.set()

    def _receive_until_done(self) -> None:
        s = self.settings
        idle_delay = 0.0
        wait = s.wait_seconds
        while not self._stopping.is_set():
            if s.max_tasks is not None and self.stats.received >= s.max_tasks:
                logger.info(
                    "[%s] received %d tasks (max_tasks): finishing",
                    self.name,
                    self.stats.received,
                )
                return
            want = self._wait_for_room()
            if want == 0:
                continue
            if s.max_tasks is not None:
                want = min(want, s.max_tasks - self.stats.received)
            full_wait = wait >= s.wait_seconds
            try:
                # While work is in hand (the queue is not idle) a receive that gets messages
                # took about the queue's latency, not a wait for new work.
                busy = any(self._leases.counts())
                asked = time.monotonic()
                messages = self.queue.receive(
                    want, wait_seconds=wait, lease_seconds=s.lease_seconds
                )
                if busy and messages:
                    self._note_receive(time.monotonic() - asked)
                self.middleware.emit("after_receive", self, len(messages), None)
            except Exception as exc:
                logger.warning("[%s] receive from %s failed: %s", self.name, self.queue.url, exc)
                self.middleware.emit("after_receive", self, 0, exc)
                messages = []
            if self._stopping.is_set():
                self._release(messages)
                return
            # In burst mode a short batch means the queue is nearly drained: poll without
            # waiting from now on, so the exit is not delayed by a final long poll.
            if s.burst and len(messages) < want:
                wait = 0.0
            if messages:
                idle_delay = 0.0
                self._last_received, self._last_asked = len(messages), want
                self.stats.add(received=len(messages))
                self._leases.add(messages)
                put = self._work.put
                for message in messages:
                    put(message)
                continue
            if s.burst:
                drained, counts_known = self._drained(full_wait=full_wait)
                if drained:
                    logger.info("[%s] queue drained (burst): finishing", self.name)
                    return
                if not counts_known:  # only a full long poll can tell us it is empty
                    wait = s.wait_seconds
            if self.capabilities.ordered and wait > 0:
                continue  # its receive blocked until work or a wake(): no back-off to miss one
            idle_delay = min(max(0.05, idle_delay * 2), s.poll_frequency_seconds)
            self._stopping.wait(idle_delay * random.uniform(0.75, 1.0))

    def _note_receive(self, seconds: float) -> None:
        mean = self._receive_seconds
        self._receive_seconds = seconds if mean is None else 0.8 * mean + 0.2 * seconds

    def _prefetch(self) -> int:
        """How many messages to hold beyond the workers' (see ``prefetch_seconds``).

        Enough to cover a receive: twice its smoothed latency (at least
        :data:`PREFETCH_FLOOR_SECONDS`; before the first is measured, that floor) of work
        for all the workers at the mean task duration, at least one, never more than
        ``prefetch_seconds`` of work or a batch. Holding more than that would not
        run sooner, and at the end of a queue it is work that other daemons, idle by then,
        could have run (1 s of it per daemon before).
        """
        s = self.settings
        mean = self.runner.mean_seconds
        if not s.prefetch_seconds or mean is None or self.capabilities.ordered:
            return 0
        mean = max(mean, 1e-4)
        if mean >= s.prefetch_seconds:
            return 0  # long tasks: never prefetched
        cover = max(2 * (self._receive_seconds or 0.0), PREFETCH_FLOOR_SECONDS)
        ahead = min(s.prefetch_seconds, cover)
        drained_per_second = s.concurrency / mean
        return min(self.capabilities.max_batch, max(1, int(ahead * drained_per_second)))

    def _wait_for_room(self) -> int:
        """Wait (briefly) until a receive is worth it; return how many messages to ask for.

        An ordered queue (priority) gets one receive per idle worker and nothing buffered,
        so a newer urgent message is never stuck behind a stale local buffer.
        """
        batch = self.capabilities.max_batch
        limit = self.settings.concurrency + self._prefetch()
        ordered = self.capabilities.ordered
        # A receive's worth: what the last one brought (Pub/Sub pulls ~100 of the 1,000
        # asked for), so the next receive is in flight while the workers drain the buffer.
        # If it brought all it asked for, the queue may have had more: wait for half the
        # limit's room (the half still held covers a receive), else a receive of one message
        # per finished task would only ever bring one (RabbitMQ's pushed deliveries).
        last = self._last_received
        if last and last >= self._last_asked:
            last = max(last, limit // 2)
        step = min(last or batch, batch, limit)

        def has_room(buffered: int, running: int) -> bool:
            room = limit - buffered - running
            if ordered:
                return room > 0 and buffered == 0
            # refill when the local buffer is empty, or when another receive's worth fits
            return room > 0 and (buffered == 0 or room >= step)

        def wake(buffered: int, running: int) -> bool:
            return self._stopping.is_set() or has_room(buffered, running)

        if not self._leases.wait_until(wake, timeout=0.2) or self._stopping.is_set():
            return 0
        buffered, running = self._leases.counts()
        room = limit - buffered - running
        return min(room, batch)

    def _drained(self, *, full_wait: bool) -> tuple[bool, bool]:
        """Return (whether the queue is drained, whether the queue could count its messages).

        Without counts (Pub/Sub), "drained" means: nothing held here, no retry of ours still
        pending, and the last receive was an empty full-length long poll.
        """
        buffered, running = self._leases.counts()
        if buffered or running:
            return False, True
        if not self.capabilities.counts:
            return full_wait and time.monotonic() >= self.runner.retry_due, False
        try:
            counts = self.queue.counts()
        except Exception as exc:
            logger.warning(
                "[%s] could not count messages on %s: %s", self.name, self.queue.url, exc
            )
            return False, True
        return not counts.visible and not counts.in_flight, True

    def _release(self, messages: list[Message]) -> None:
        self._leases.release_all(messages)
        self.stats.add(released=len(messages))
        for message in messages:
            self.middleware.emit("on_released", message)

    def _reap(self, grace_seconds: float) -> None:
        """After stop(): release buffered leases, wait the grace period, release the rest."""
        try:
            self._release(self._leases.take(State.BUFFERED))
            deadline = time.monotonic() + grace_seconds
            while not self._hurry.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._leases.wait_until(
                    lambda buffered, running: not running, timeout=min(0.2, remaining)
                ):
                    break
            # A receive in flight would get the released messages again: let it end first.
            self._loop_done.wait(1.0)
            running = self._leases.take(State.RUNNING)
            if running:
                logger.warning(
                    "[%s] grace period over: releasing %d running task(s)", self.name, len(running)
                )
            self._release(running)
        finally:
            self._reaped.set()

    def _time_out_tasks(self) -> None:
        """Give up the tasks running longer than ``task_timeout_seconds`` (if set).

        Their workers are replaced first, then each attempt is reported and handed back (or
        ended at the attempt limit) by the runner, as a failed attempt. Once
        ``max_stuck_tasks`` given-up tasks still hold their threads, the daemon stops instead
        of replacing them (:attr:`stop_reason`).
        """
        s = self.settings
        limit = s.task_timeout_seconds
        if limit is None:
            return
        overdue = self._leases.take_overdue(limit)
        if not overdue:
            return
        with self._workers_lock:
            self._replaced += len(overdue)
            stuck = self._replaced
        too_many = s.max_stuck_tasks is not None and stuck >= s.max_stuck_tasks
        if not too_many:
            for _ in overdue:
                self._start_worker()
        for message in overdue:
            logger.error(
                "[%s] message %s (attempt %d) has run for more than %g s (task_timeout): "
                "given up%s",
                self.name,
                message.id,
                message.attempt,
                limit,
                "" if too_many else "; a new worker took this one's place",
            )
            self.runner.timed_out(message, limit)
        if too_many and not self._stopping.is_set():
            self.stop_reason = (
                f"{stuck} task(s) given up after task_timeout_seconds={limit:g} are still "
                f"running on their threads (max_stuck_tasks={s.max_stuck_tasks}); Python "
                "cannot kill a thread: restart the process to free them"
            )
            logger.error("[%s] stopping: %s", self.name, self.stop_reason)
            self.stop()

    # -- workers -------------------------------------------------------------------------

    def _start_worker(self) -> None:
        with self._workers_lock:
            name = f"st-{self.name}-worker-{next(self._worker_numbers)}"
            worker = threading.Thread(target=self._worker, name=name, daemon=True)
            self._workers.append(worker)
        worker.start()

    def _worker(self) -> None:
        resources = WorkerResources(self._factories)
        try:
            while (message := self._work.get()) is not None:
                cancel = self._leases.start(message)
                if cancel is None:
                    continue  # released at stop before it started
                self.runner.run(message, cancel, resources)
                if cancel.is_set() and self._retire():
                    return  # a task that timed out: a new worker took this one's place
        finally:
            resources.close()

    def _retire(self) -> bool:
        """Whether this worker, whose task was given up, should end (it was replaced)."""
        with self._workers_lock:
            if self._replaced == 0:
                return False
            self._replaced -= 1
            self._workers.remove(threading.current_thread())
            return True
