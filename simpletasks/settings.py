"""Daemon settings: how a daemon polls, runs and retries."""

from __future__ import annotations

from dataclasses import dataclass

from simpletasks.errors import ConfigError


@dataclass(frozen=True)
class DaemonSettings:
    """How a daemon polls, runs and retries. All times are in seconds.

    Attributes:
        concurrency: Worker threads, i.e. tasks run at once.
        lease_seconds: Lease (visibility timeout / ack deadline) asked for on receive and
            renewed by the heartbeat every third of it while a task runs.
        wait_seconds: Long-poll wait of one receive call (SQS caps it at 20).
        poll_frequency_seconds: Cap of the back-off between receives while the queue is
            empty (`run --poll-frequency`, SimpleTasks.jl's poll frequency).
        max_attempts: Deliveries of a message before it is reported as final and dropped;
            ``None`` retries without limit (a permanent failure is still final at once).
        retry_delay_seconds: Delay before a failed task is delivered again; doubles with
            each attempt. 0 retries at once.
        retry_delay_max_seconds: Cap of that delay.
        grace_seconds: On stop, how long running tasks may take to finish before their
            leases are released.
        prefetch_seconds: The most work (in time, for all workers at the mean task duration
            so far) received ahead of the workers. The daemon holds less when less covers a
            receive: twice the queue's measured receive latency, at least 50 ms of work and
            one message (and at most the queue's ``max_batch`` messages, received again
            whenever another receive's worth fits), so that at the end of a queue daemons
            are not left idle while one still holds work. Long tasks are never prefetched;
            0 turns prefetch off.
        burst: Exit once the queue is drained instead of waiting for work.
        max_tasks: Exit after receiving this many messages (None = no limit).
        task_timeout_seconds: A task still running after this long is given up: its cancel
            flag is set, a new worker thread takes the stuck one's place, and the attempt is
            a failure like any other (error report of phase ``timeout``, type
            ``TaskTimedOut``; retried after the retry delay, final at ``max_attempts``);
            whatever the stuck task returns later is dropped. ``None`` (default): tasks may
            run for ever.
        max_stuck_tasks: With ``task_timeout_seconds``: once this many given-up tasks are
            still running on their threads, the daemon stops (as on SIGTERM) and
            :attr:`DaemonService.stop_reason` says why, so that a supervisor can restart the
            process and free them (Python threads cannot be killed; ``simpletasks run``
            exits 1). ``None`` (default): no limit.
    """

    concurrency: int = 1
    lease_seconds: float = 60.0
    wait_seconds: float = 10.0
    poll_frequency_seconds: float = 10.0
    max_attempts: int | None = 5
    retry_delay_seconds: float = 1.0
    retry_delay_max_seconds: float = 300.0
    grace_seconds: float = 30.0
    prefetch_seconds: float = 1.0
    burst: bool = False
    max_tasks: int | None = None
    task_timeout_seconds: float | None = None
    max_stuck_tasks: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.concurrency >= 1, "concurrency must be >= 1"),
            (self.lease_seconds >= 1, "lease_seconds must be >= 1"),
            (0 <= self.wait_seconds <= 20, "wait_seconds must be between 0 and 20"),
            (self.poll_frequency_seconds >= 0, "poll_frequency_seconds must be >= 0"),
            (self.max_attempts is None or self.max_attempts >= 1, "max_attempts must be >= 1"),
            (self.retry_delay_seconds >= 0, "retry_delay_seconds must be >= 0"),
            (self.grace_seconds >= 0, "grace_seconds must be >= 0"),
            (self.prefetch_seconds >= 0, "prefetch_seconds must be >= 0"),
            (self.max_tasks is None or self.max_tasks >= 1, "max_tasks must be >= 1"),
            (
                self.task_timeout_seconds is None or self.task_timeout_seconds > 0,
                "task_timeout_seconds must be > 0",
            ),
            (
                self.max_stuck_tasks is None or self.max_stuck_tasks >= 1,
                "max_stuck_tasks must be >= 1",
            ),
            (
                self.max_stuck_tasks is None or self.task_timeout_seconds is not None,
                "max_stuck_tasks needs task_timeout_seconds (only timed-out tasks get stuck)",
            ),
        ]
        for ok, text in checks:
            if not ok:
                raise ConfigError(text)

    def retry_delay(self, attempt: int) -> float:
        """Delay before delivery ``attempt + 1`` of a message that failed ``attempt``."""
        delay = self.retry_delay_seconds * 2 ** max(0, attempt - 1)
        return min(delay, self.retry_delay_max_seconds)
