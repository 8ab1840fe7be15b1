"""Small helpers shared by the benchmark scripts in this folder.

Each benchmark is a standalone script (``python benchmarks/NAME.py``) that starts its own
moto server, runs its contenders, and prints one JSON document on stdout (progress goes to
stderr). This module holds what they share: describing the machine, measuring a run (wall
time, CPU of this process and of the moto server, API calls), and printing the result.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def setup_logging(verbose: bool = False) -> None:
    """Progress to stderr; library logs only from warnings up (stdout is for the JSON)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    logging.getLogger("__main__").setLevel(logging.INFO)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what ``platform`` knows elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Describe the machine: CPUs, CPU model, OS, Python."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def versions(*distributions: str) -> dict[str, str | None]:
    """Installed versions of ``distributions`` (None for the missing ones)."""
    found: dict[str, str | None] = {}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def child_pids() -> list[int]:
    """PIDs of this process's direct children (Linux /proc; empty elsewhere)."""
    me = os.getpid()
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:  # fields[0] is the state, fields[1] the parent's PID
            pids.append(int(stat.parent.name))
    return pids


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


class CallCounter:
    """Counts the API calls boto3 clients make, by operation, and times them.

    ``attach(client)`` registers hooks on the client's own event system, so only calls
    made through attached clients are seen. A call's time runs from botocore's
    ``before-call`` to its ``after-call`` event (request building, the HTTP round trip and
    response parsing, retries included).
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.intervals: list[tuple[str, float, float]] = []  # (operation, start, end)
        self._open: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def attach(self, client: Any) -> Any:
        """Count and time the calls of ``client`` from now on; return it."""
        client.meta.events.register("before-call.*.*", self._before)
        client.meta.events.register("after-call.*.*", self._after)
        client.meta.events.register("after-call-error.*.*", self._after)
        return client

    def _before(self, model: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1
            self._open[(threading.get_ident(), model.name)] = time.perf_counter()

    def _after(self, model: Any, **kwargs: Any) -> None:
        end = time.perf_counter()
        with self._lock:
            start = self._open.pop((threading.get_ident(), model.name), None)
            if start is not None:
                self.intervals.append((model.name, start, end))

    def mark(self) -> tuple[Counter[str], int]:
        """Where the records stand now (for :meth:`since`)."""
        with self._lock:
            return Counter(self.calls), len(self.intervals)

    def since(
        self, mark: tuple[Counter[str], int], t0: float, t1: float
    ) -> tuple[dict[str, int], dict[str, float], float]:
        """Calls, seconds in calls by operation, and seconds with no call in flight.

        Counts what happened after ``mark``, within the window ``[t0, t1]``.
        """
        calls0, first = mark
        with self._lock:
            calls = dict(self.calls - calls0)
            spans = [(op, max(a, t0), min(b, t1)) for op, a, b in self.intervals[first:]]
        busy: Counter[str] = Counter()
        covered = 0.0
        cur: tuple[float, float] | None = None
        for op, a, b in sorted(spans, key=lambda span: span[1]):
            busy[op] += max(0.0, b - a)
            if cur is None or a > cur[1]:
                if cur is not None:
                    covered += cur[1] - cur[0]
                cur = (a, b)
            else:
                cur = (cur[0], max(cur[1], b))
        if cur is not None:
            covered += cur[1] - cur[0]
        return calls, dict(busy), max(0.0, (t1 - t0) - covered)


def add_latency(client: Any, seconds: float) -> Any:
    """Make every HTTP request of boto3 ``client`` wait ``seconds`` first; return it.

    moto answers on 127.0.0.1 in well under a millisecond of network time, where a real
    SQS round trip takes milliseconds; this models that delay on the client side.
    """
    if seconds > 0:

        def delay(**kwargs: Any) -> None:
            time.sleep(seconds)

        client.meta.events.register("before-send.*.*", delay)
    return client


@dataclass
class Sample:
    """One timed run of one contender.

    Attributes:
        seconds: Wall time.
        items: Tasks handled.
        client_cpu: CPU seconds of this process (all threads).
        server_cpu: CPU seconds of the moto server, if known.
        calls: API calls by operation.
        call_seconds: Wall seconds spent inside API calls, by operation (calls made
            concurrently from several threads each count in full).
        no_call_seconds: Wall seconds with no API call in flight at all.
    """

    seconds: float
    items: int
    client_cpu: float
    server_cpu: float | None
    calls: dict[str, int] = field(default_factory=dict)
    call_seconds: dict[str, float] = field(default_factory=dict)
    no_call_seconds: float | None = None

    @property
    def rate(self) -> float:
        """Items per second."""
        return self.items / self.seconds


@contextmanager
def measure(
    items: int, *, server_pid: int | None = None, counter: CallCounter | None = None
) -> Iterator[list[Sample]]:
    """Time the ``with`` body; on exit the yielded list holds one :class:`Sample`.

    Client CPU is this whole process's (all threads); server CPU is ``server_pid``'s.
    """
    out: list[Sample] = []
    mark = counter.mark() if counter else None
    server0 = process_cpu_seconds(server_pid) if server_pid else None
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    yield out
    t1 = time.perf_counter()
    cpu = time.process_time() - cpu0
    server1 = process_cpu_seconds(server_pid) if server_pid else None
    server = server1 - server0 if server0 is not None and server1 is not None else None
    sample = Sample(t1 - t0, items, cpu, server)
    if counter is not None and mark is not None:
        sample.calls, sample.call_seconds, sample.no_call_seconds = counter.since(mark, t0, t1)
    out.append(sample)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Median rate and per-item costs of a contender's samples (costs pooled over samples)."""
    rates = [s.rate for s in samples]
    items = sum(s.items for s in samples)

    def per_item_ms(seconds: float) -> float:
        return round(1000 * seconds / items, 3)

    calls: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    for s in samples:
        calls.update(s.calls)
        busy.update(s.call_seconds)
    server = [s.server_cpu for s in samples if s.server_cpu is not None]
    no_call = [s.no_call_seconds for s in samples if s.no_call_seconds is not None]
    return {
        "rate_median": round(statistics.median(rates), 1),
        "rate_min": round(min(rates), 1),
        "rate_max": round(max(rates), 1),
        "rates": [round(r, 1) for r in rates],
        "wall_ms_per_item": per_item_ms(sum(s.seconds for s in samples)),
        "client_cpu_ms_per_item": per_item_ms(sum(s.client_cpu for s in samples)),
        "server_cpu_ms_per_item": per_item_ms(sum(server)) if server else None,
        "api_calls_per_100_items": {
            op: round(100 * n / items, 1) for op, n in sorted(calls.items())
        },
        "in_api_call_ms_per_item": {op: per_item_ms(t) for op, t in sorted(busy.items())},
        "no_call_in_flight_ms_per_item": per_item_ms(sum(no_call)) if no_call else None,
        "samples": len(samples),
    }


def compare(a: list[Sample], b: list[Sample]) -> dict[str, Any]:
    """How ``a`` compares to ``b``: ratio of median rates, and per-round ratios.

    Samples are paired by index (by round), so drift between rounds cancels out in the
    per-round ratios; their median and quartiles are reported with them.
    """
    paired = [round(x.rate / y.rate, 3) for x, y in zip(a, b, strict=False)]
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
    return {
        "of_medians": round(
            statistics.median(s.rate for s in a) / statistics.median(s.rate for s in b), 3
        ),
        "paired_median": round(statistics.median(paired), 3),
        "paired_q1_q3": [round(quartiles[0], 3), round(quartiles[2], 3)],
        "paired": paired,
    }


def rotated(items: list[Any], shift: int) -> list[Any]:
    """``items`` rotated left by ``shift`` (to interleave contenders across rounds)."""
    if not items:
        return []
    shift %= len(items)
    return items[shift:] + items[:shift]


def emit(result: dict[str, Any], output: str | None = None) -> None:
    """Print ``result`` as JSON on stdout, and write it to ``output`` if given."""
    text = json.dumps(result, indent=2, sort_keys=False)
    print(text)
    if output:
        Path(output).write_text(text + "\n")
