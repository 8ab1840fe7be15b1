"""What a daemon did: :class:`RunStats`, one typed counter per outcome."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class RunStats:
    """Counters of one :meth:`DaemonService.run`, updated by several threads.

    Attributes:
        received: Messages received.
        succeeded: Tasks that finished (finalize done, reports and follow-ups sent).
        retried: Failed deliveries handed back to the queue for another attempt.
        dead_lettered: Tasks that failed for good (reported on the error queue, deleted).
        released: Messages handed back unrun, or given up after the grace period.
        skipped: Messages deleted unrun because the daemon's skip check said so (for
            example, their job was cancelled); each has a final report with phase skipped.
        followups: Follow-up task messages sent.
        seconds: Wall time of the run.
    """

    received: int = 0
    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    released: int = 0
    skipped: int = 0
    followups: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(
        self,
        *,
        received: int = 0,
        succeeded: int = 0,
        retried: int = 0,
        dead_lettered: int = 0,
        released: int = 0,
        skipped: int = 0,
        followups: int = 0,
    ) -> None:
        """Add to the named counters at once (thread-safe); unknown names are a TypeError."""
        with self._lock:
            self.received += received
            self.succeeded += succeeded
            self.retried += retried
            self.dead_lettered += dead_lettered
            self.released += released
            self.skipped += skipped
            self.followups += followups

    def snapshot(self) -> RunStats:
        """Return a consistent copy (for progress logs)."""
        with self._lock:
            values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}
        return RunStats(**values)

    def __str__(self) -> str:
        return (
            f"{self.received} received, {self.succeeded} succeeded, {self.dead_lettered} failed "
            f"for good, {self.retried} retried, {self.released} released, {self.skipped} skipped, "
            f"{self.followups} follow-ups, {self.seconds:.1f} s"
        )
