"""Prometheus metrics of a daemon: a middleware, an instrumented queue, bucket and cache.

One :class:`Metrics` per process holds one ``prometheus_client`` registry; every daemon of
the process gets its own :meth:`Metrics.middleware` and its series carry ``daemon="<name>"``,
so several daemons (one process under a supervisor, or several processes each on its own
port) never collide. Served over HTTP by :mod:`simpletasks.metrics_server`.

Series (``task`` is the task type name, ``?`` when a message could not be parsed):

=================================================  ============================================
``simpletasks_tasks_received_total``               messages a worker started on
``simpletasks_tasks_succeeded_total``              acked after finalize
``simpletasks_tasks_failed_total``                 failed attempts (retried + dead-lettered)
``simpletasks_tasks_retried_total``                failed attempts handed back for a retry
``simpletasks_tasks_dead_lettered_total``          failed for good (report on the error queue)
``simpletasks_tasks_released_total``               handed back unrun or given up at stop
``simpletasks_tasks_skipped_total``                deleted unrun by the skip check
``simpletasks_phase_seconds``                      histogram by ``phase`` (prepare, execute,
                                                   finalize) and ``outcome`` (ok, error)
``simpletasks_tasks_in_flight``                    tasks on workers now
``simpletasks_message_age_seconds``                time from send to receipt, where the backend
                                                   tells it (a ``sent_at`` on the message)
``simpletasks_bucket_bytes_total``                 ``direction`` down or up
``simpletasks_cache_hits_total`` / ``_misses_``    datasource gets served by / missing from the
                                                   cache; ``_evictions_total`` entries evicted
``simpletasks_queue_last_call_timestamp_seconds``  last answer of the task queue, ``ok`` or not
=================================================  ============================================

In Python (``simpletasks run --metrics-port`` does the same for one daemon)::

    metrics = Metrics()
    MetricsServer(metrics, 9100).start()            # simpletasks.metrics_server
    daemons = []
    for name in ("cpu", "upload"):
        m = metrics.middleware(name)
        ds = BucketCacheDatasource(m.bucket(bucket), m.cache(cache_dir))
        daemons.append(DaemonService(queue=m.queue(queue), datasource=ds, middleware=[m],
                                     name=name, ...))
    Supervisor(daemons).run()

The wrapped queue feeds ``/healthz`` and ``/readyz``; the wrapped bucket and cache count
bytes, hits, misses and evictions (without them those series stay at zero).

The per-task series (received ... message age) are kept by :mod:`simpletasks.metrics_series`
as plain numbers and exposed by a collector; the others are ``prometheus_client`` metrics.
``prometheus_client`` is imported when a :class:`Metrics` is made, never at import time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simpletasks.cache import FileSystemCache
from simpletasks.errors import ConfigError
from simpletasks.message import peek_basic_info
from simpletasks.metrics_series import (
    DEAD_LETTERED,
    FAILED,
    RECEIVED,
    RELEASED,
    RETRIED,
    SKIPPED,
    SUCCEEDED,
    DaemonSeries,
    TaskSeries,
    TaskSeriesCollector,
)
from simpletasks.middleware import Middleware

if TYPE_CHECKING:
    from simpletasks.queues import Message
    from simpletasks.reports import ErrorReport
    from simpletasks.task import DaemonTask, Result

logger = logging.getLogger(__name__)

INSTALL_HINT = "metrics need prometheus_client: pip install 'simpletasks[metrics]'"
UNKNOWN = "?"


def task_name_of(body: str) -> str:
    """The task type name in a message body, or ``?`` if it has none (cheap, never raises)."""
    peeked = peek_basic_info(body)
    name = None if peeked is None else peeked[0]
    return name if isinstance(name, str) and name else UNKNOWN


class Metrics:
    """The metric families of one process, in a registry of their own.

    Raises:
        ConfigError: If ``prometheus_client`` is not installed.
    """

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        self.registry = prom.CollectorRegistry()
        reg = self.registry
        labels = ("daemon", "task")

        def counter(name: str, doc: str, names: tuple[str, ...] = labels) -> Any:
            return prom.Counter(f"simpletasks_{name}", doc, names, registry=reg)

        # Per-task series: plain numbers exposed by a collector (see metrics_series).
        self.tasks = TaskSeriesCollector()
        reg.register(self.tasks)
        self.bucket_bytes = counter(
            "bucket_bytes", "Bytes moved to or from the bucket.", ("daemon", "direction")
        )
        self.cache_hits = counter("cache_hits", "Datasource gets found in the cache.", ("daemon",))
        self.cache_misses = counter(
            "cache_misses", "Datasource gets fetched from the bucket.", ("daemon",)
        )
        self.cache_evictions = counter(
            "cache_evictions", "Cache entries evicted to fit the bound.", ("daemon",)
        )
        self.queue_last_call = prom.Gauge(
            "simpletasks_queue_last_call_timestamp_seconds",
            "Unix time the task queue last answered (ok=true) or failed (ok=false).",
            ("daemon", "ok"),
            registry=reg,
        )
        self._lock = threading.Lock()
        self._daemons: dict[str, DaemonHealth] = {}

    def middleware(self, daemon: str) -> MetricsMiddleware:
        """Return the middleware that records daemon ``daemon``'s events here.

        Raises:
            ConfigError: If a middleware for that name exists already (labels would mix).
        """
        with self._lock:
            if daemon in self._daemons:
                raise ConfigError(f"metrics for a daemon named {daemon!r} exist already")
            health = self._daemons[daemon] = DaemonHealth(daemon)
        series = DaemonSeries(daemon)
        self.tasks.add(series)
        return MetricsMiddleware(self, health, series)

    def health(self) -> list[DaemonHealth]:
        """The health trackers of every daemon recorded here."""
        with self._lock:
            return list(self._daemons.values())

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        import prometheus_client as prom

        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST


class DaemonHealth:
    """When a daemon's loop and queue last showed signs of life (for /healthz and /readyz).

    Times are ``time.monotonic()``; ``None`` until the first event.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.started: float | None = None
        self.stopped: float | None = None
        self.last_call: float | None = None  # any answer of the queue, ok or failed
        self.last_ok: float | None = None  # last answer without an error
        self.stale_seconds = 60.0

    def configure(self, daemon: Any) -> None:
        """Derive how long silence may last from the daemon's settings.

        An idle loop receives at least every ``wait + poll`` seconds; a busy one extends
        leases every third of the lease. Twice the longer of the two, plus 10 s.
        """
        s = getattr(daemon, "settings", None)
        if s is not None:
            idle = s.wait_seconds + s.poll_frequency_seconds
            self.stale_seconds = 2 * max(idle, s.lease_seconds / 3) + 10.0

    def live(self, now: float) -> tuple[bool, str]:
        """Whether the loop is alive and ticked recently, and why not."""
        if self.started is None:
            return False, "not started"
        if self.stopped is not None:
            return False, "stopped"
        last = self.last_call if self.last_call is not None else self.started
        if now - last > self.stale_seconds:
            return False, f"no queue call for {now - last:.0f} s"
        return True, "ok"

    def ready(self, now: float) -> tuple[bool, str]:
        """Whether the queue answered without an error lately, and why not."""
        live, why = self.live(now)
        if not live:
            return live, why
        if self.last_ok is None:
            return False, "the queue has not answered yet"
        if now - self.last_ok > self.stale_seconds:
            return False, f"no good answer from the queue for {now - self.last_ok:.0f} s"
        return True, "ok"


class MetricsMiddleware(Middleware):
    """Records one daemon's message events into a :class:`Metrics`."""

    def __init__(self, metrics: Metrics, health: DaemonHealth, series: DaemonSeries) -> None:
        self.metrics = metrics
        self.health = health
        self.daemon = health.name
        self.series = series
        self._lock = series.lock  # guards the numbers and _running
        self._running: dict[str, TaskSeries] = {}  # message id -> series, receive to end
        self._last_call = {
            ok: metrics.queue_last_call.labels(self.daemon, "true" if ok else "false")
            for ok in (True, False)
        }

    def on_start(self, daemon: Any) -> None:
        """Note the start and the daemon's timing settings."""
        self.health.configure(daemon)
        self.health.started = time.monotonic()
        self.health.stopped = None

    def on_stop(self, daemon: Any) -> None:
        """Note the stop (/healthz fails from now on)."""
        self.health.stopped = time.monotonic()

    def on_received(self, message: Message) -> None:
        """Count the message under its task name; observe its age if the queue told it."""
        series = self.series.of(task_name_of(message.body))
        sent_at = getattr(message, "sent_at", None)
        with self._lock:
            self._running[message.id] = series
            series.counts[RECEIVED] += 1
            series.in_flight += 1
            if isinstance(sent_at, float | int):
                series.observe_age(max(0.0, time.time() - sent_at))

    def after_phase(
        self,
        task: DaemonTask,
        message: Message,
        phase: str,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """Observe the phase's duration."""
        series = self.series.of(task.name)
        with self._lock:
            series.phase(phase, error is None).observe(seconds)

    def on_acked(self, task: DaemonTask, message: Message, result: Result) -> None:
        """Count a success."""
        self._end(message, SUCCEEDED)

    def on_retried(self, task: DaemonTask | None, message: Message, report: ErrorReport) -> None:
        """Count a failed attempt that will be retried."""
        self._end(message, FAILED, RETRIED)

    def on_dead_lettered(
        self, task: DaemonTask | None, message: Message, report: ErrorReport
    ) -> None:
        """Count a final failure."""
        self._end(message, FAILED, DEAD_LETTERED)

    def on_released(self, message: Message) -> None:
        """Count a message handed back without a result."""
        self._end(message, RELEASED)

    def on_skipped(self, task: DaemonTask, message: Message, reason: str) -> None:
        """Count a message deleted unrun."""
        self._end(message, SKIPPED)

    def _end(self, message: Message, *counters: int) -> None:
        """Forget a running message and count its end (in flight goes down if it ran)."""
        with self._lock:
            series = self._running.pop(message.id, None)
            if series is not None:
                series.in_flight -= 1
                for counter in counters:
                    series.counts[counter] += 1
                return
        # released from the local buffer, or parsed by nobody: it never reached a worker
        series = self.series.of(task_name_of(message.body))  # takes the lock: not under it
        with self._lock:
            for counter in counters:
                series.counts[counter] += 1

    # -- instrumented parts ----------------------------------------------------------------

    def queue(self, queue: Any) -> MeteredQueue:
        """Wrap the daemon's task queue so that its answers feed /healthz and /readyz."""
        return MeteredQueue(queue, self._queue_answered)

    def bucket(self, bucket: Any) -> MeteredBucket:
        """Wrap a bucket so that its transfers are counted in bytes."""
        return MeteredBucket(bucket, self.metrics.bucket_bytes, self.daemon)

    def cache(self, root: Path | str, *, max_bytes: int | None = None) -> MeteredCache:
        """A file cache whose hits, misses and evictions are counted."""
        return MeteredCache(root, max_bytes=max_bytes, metrics=self.metrics, daemon=self.daemon)

    def _queue_answered(self, ok: bool) -> None:
        now = time.monotonic()
        self.health.last_call = now
        if ok:
            self.health.last_ok = now
        self._last_call[ok].set(time.time())


_QUEUE_CALLS = frozenset(
    {"receive", "ack", "ack_many", "extend", "extend_many", "release", "counts", "send"}
)


class MeteredQueue:
    """A queue that reports every answer (or failure) of its calls; otherwise the queue itself.

    Args:
        queue: The queue.
        answered: Called with ``True`` after a call returned, ``False`` after it raised.
    """

    def __init__(self, queue: Any, answered: Callable[[bool], None]) -> None:
        self._queue = queue
        self._answered = answered

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._queue, name)
        if name not in _QUEUE_CALLS or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = value(*args, **kwargs)
            except Exception:
                self._answered(False)
                raise
            self._answered(True)
            return result

        return call

    def __repr__(self) -> str:
        return f"MeteredQueue({self._queue!r})"


class MeteredBucket:
    """A bucket whose downloads and uploads are counted in bytes; otherwise the bucket itself."""

    def __init__(self, bucket: Any, counter: Any, daemon: str) -> None:
        self._bucket = bucket
        self._down = counter.labels(daemon, "down")
        self._up = counter.labels(daemon, "up")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bucket, name)

    def download(self, key: str, path: Path) -> None:
        """Download ``key`` to ``path`` and count its size."""
        self._bucket.download(key, path)
        self._down.inc(_size(path))

    def upload(self, path: Path, key: str) -> None:
        """Upload ``path`` as ``key`` and count its size."""
        self._bucket.upload(path, key)
        self._up.inc(_size(path))

    def download_fileobj(self, key: str, fileobj: Any) -> None:
        """Download into a file object and count what it gained."""
        start = _tell(fileobj)
        self._bucket.download_fileobj(key, fileobj)
        end = _tell(fileobj)
        if start is not None and end is not None:
            self._down.inc(max(0, end - start))

    def upload_fileobj(self, fileobj: Any, key: str) -> None:
        """Upload from a file object and count what was read."""
        start = _tell(fileobj)
        self._bucket.upload_fileobj(fileobj, key)
        end = _tell(fileobj)
        if start is not None and end is not None:
            self._up.inc(max(0, end - start))

    def __repr__(self) -> str:
        return f"MeteredBucket({self._bucket!r})"


class MeteredCache(FileSystemCache):
    """A :class:`FileSystemCache` that counts hits, misses and evictions.

    A ``lookup`` that found the entry, or a ``fill`` that found it, is a hit; a ``fill`` that
    had to fetch it is a miss.
    """

    def __init__(
        self, root: Path | str, *, max_bytes: int | None = None, metrics: Metrics, daemon: str
    ) -> None:
        super().__init__(root, max_bytes=max_bytes)
        self._hits = metrics.cache_hits.labels(daemon)
        self._misses = metrics.cache_misses.labels(daemon)
        self._evictions = metrics.cache_evictions.labels(daemon)

    def lookup(self, key: str) -> bool:
        """As :meth:`FileSystemCache.lookup`, counting a hit when the entry is here."""
        found = super().lookup(key)
        if found:
            self._hits.inc()
        return found

    def fill(
        self,
        key: str,
        fetch: Callable[[Path], None],
        *,
        force: bool = False,
        seen_missing: bool = False,
        locked: bool = False,
    ) -> Path:
        """As :meth:`FileSystemCache.fill`, counting a hit or a miss."""
        fetched = False

        def counted(tmp: Path) -> None:
            nonlocal fetched
            fetched = True
            fetch(tmp)

        path = super().fill(key, counted, force=force, seen_missing=seen_missing, locked=locked)
        (self._misses if fetched else self._hits).inc()
        return path

    def evict(self, *, keep: str | None = None) -> int:
        """As :meth:`FileSystemCache.evict`, counting the entries evicted."""
        evicted = super().evict(keep=keep)
        if evicted:
            self._evictions.inc(evicted)
        return evicted

    def make_room(self, free_bytes: int, *, keep: str | None = None) -> int:
        """As :meth:`FileSystemCache.make_room` (a full disk), counting the entries evicted."""
        evicted = super().make_room(free_bytes, keep=keep)
        if evicted:
            self._evictions.inc(evicted)
        return evicted


def _size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _tell(fileobj: Any) -> int | None:
    try:
        return int(fileobj.tell())
    except (AttributeError, OSError, ValueError):
        return None
