"""The per-task series of the metrics middleware: plain numbers, exposed by a collector.

A task costs the metrics middleware seven updates: received, in flight up and down, three
phase durations and its outcome. ``prometheus_client``'s metric objects take a lock and
several Python calls for each (a histogram observe ~1.3 µs); at tens of thousands of short
tasks a second those updates were the largest part of what ``--metrics-port`` cost. Here
each daemon's numbers are plain lists under one lock, and :class:`TaskSeriesCollector` turns
them into the same families (names, labels, buckets) when ``/metrics`` is scraped.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

# Counter families with labels (daemon, task), in the order of TaskSeries.counts.
COUNTERS = (
    ("tasks_received", "Messages a worker started on."),
    ("tasks_succeeded", "Tasks acked after finalize."),
    ("tasks_failed", "Failed attempts (retried or dead-lettered)."),
    ("tasks_retried", "Failed attempts handed back for a retry."),
    ("tasks_dead_lettered", "Tasks that failed for good."),
    ("tasks_released", "Messages released unrun or given up at stop."),
    ("tasks_skipped", "Messages deleted unrun by the skip check."),
)
RECEIVED, SUCCEEDED, FAILED, RETRIED, DEAD_LETTERED, RELEASED, SKIPPED = range(len(COUNTERS))

PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
AGE_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Histogram:
    """Observations per bucket (not cumulative; the last bucket is +Inf) and their sum.

    Not thread-safe by itself: callers hold their :class:`DaemonSeries` lock.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> Histogram:
        """A snapshot (taken under the lock, exposed outside it)."""
        other = Histogram(self.bounds)
        other.counts, other.total = list(self.counts), self.total
        return other

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs as Prometheus expects them, +Inf last."""
        from prometheus_client.utils import floatToGoString

        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((floatToGoString(bound), running))
        return out


class TaskSeries:
    """The numbers of one daemon and task name.

    Attributes:
        counts: One number per family of :data:`COUNTERS`.
        in_flight: Tasks of this name on workers now.
        age: Seconds from send to receipt (``None`` until the queue tells a send time).
        phases: Durations by ``(phase, ok)``.
        created: Unix time the series was made (the counters' ``_created``).
    """

    __slots__ = ("age", "counts", "created", "in_flight", "phases")

    def __init__(self) -> None:
        self.counts = [0] * len(COUNTERS)
        self.in_flight = 0
        self.age: Histogram | None = None
        self.phases: dict[tuple[str, bool], Histogram] = {}
        self.created = time.time()

    def phase(self, phase: str, ok: bool) -> Histogram:
        """The histogram of ``phase`` ending ok or not (made on first use; hold the lock)."""
        found = self.phases.get((phase, ok))
        if found is None:
            found = self.phases[phase, ok] = Histogram(PHASE_BUCKETS)
        return found

    def observe_age(self, seconds: float) -> None:
        """Observe a message's age (hold the lock)."""
        if self.age is None:
            self.age = Histogram(AGE_BUCKETS)
        self.age.observe(seconds)

    def copy(self) -> TaskSeries:
        """A snapshot (hold the lock)."""
        other = TaskSeries.__new__(TaskSeries)
        other.counts, other.in_flight = list(self.counts), self.in_flight
        other.created = self.created
        other.age = None if self.age is None else self.age.copy()
        other.phases = {key: h.copy() for key, h in self.phases.items()}
        return other


class DaemonSeries:
    """Every task series of one daemon, and the lock that guards their numbers."""

    def __init__(self, daemon: str) -> None:
        self.daemon = daemon
        self.lock = threading.Lock()
        self._tasks: dict[str, TaskSeries] = {}

    def of(self, task: str) -> TaskSeries:
        """The series of task name ``task`` (made on first use)."""
        found = self._tasks.get(task)
        if found is None:
            with self.lock:
                found = self._tasks.setdefault(task, TaskSeries())
        return found

    def snapshot(self) -> list[tuple[str, TaskSeries]]:
        """A consistent copy of every series, by task name."""
        with self.lock:
            return [(name, series.copy()) for name, series in self._tasks.items()]


class TaskSeriesCollector:
    """A ``prometheus_client`` collector of every :class:`DaemonSeries` added to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._daemons: list[DaemonSeries] = []

    def add(self, series: DaemonSeries) -> None:
        """Expose ``series`` from the next scrape on."""
        with self._lock:
            self._daemons.append(series)

    def describe(self) -> Iterator[Any]:
        """The families, empty (the registry checks their names against other collectors)."""
        counters, *others = self._families()
        return iter([*counters, *others])

    def collect(self) -> Iterator[Any]:
        """The families with every daemon's numbers."""
        counters, in_flight, phases, ages = self._families()
        with self._lock:
            daemons = list(self._daemons)
        for daemon in daemons:
            for task, series in daemon.snapshot():
                labels = [daemon.daemon, task]
                for family, count in zip(counters, series.counts, strict=True):
                    family.add_metric(labels, count, created=series.created)
                in_flight.add_metric(labels, series.in_flight)
                for (phase, ok), h in sorted(series.phases.items()):
                    outcome = "ok" if ok else "error"
                    phases.add_metric([*labels, phase, outcome], h.buckets(), h.total)
                if series.age is not None:
                    ages.add_metric(labels, series.age.buckets(), series.age.total)
        yield from (*counters, in_flight, phases, ages)

    @staticmethod
    def _families() -> tuple[list[Any], Any, Any, Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        labels = ["daemon", "task"]
        counters = [
            CounterMetricFamily(f"simpletasks_{name}", doc, labels=labels) for name, doc in COUNTERS
        ]
        in_flight = GaugeMetricFamily(
            "simpletasks_tasks_in_flight", "Tasks running on workers.", labels=labels
        )
        phases = HistogramMetricFamily(
            "simpletasks_phase_seconds",
            "Duration of task phases.",
            labels=[*labels, "phase", "outcome"],
        )
        ages = HistogramMetricFamily(
            "simpletasks_message_age_seconds",
            "Seconds from send to receipt, where the queue tells the send time.",
            labels=labels,
        )
        return counters, in_flight, phases, ages
