"""The edge agent: watcher -> policy -> two queue views -> two daemon lanes, one supervisor.

- the watcher thread gives each complete file an arrival index ``i``, adds it to the policy
  and sends ``EDGE_PREPROCESS i`` and ``EDGE_UPLOAD i`` to one in-process
  :class:`~simpletasks.queues.priority.PriorityQueue`;
- view "edge-preprocess" feeds DaemonService "cpu" (C workers), view "edge-upload" feeds
  DaemonService "upload" (K workers); one :class:`~simpletasks.supervisor.Supervisor` runs
  both and owns the signals.

The policy's order *is* the queues' order: the pre-process view's chooser asks
``policy.next_preprocess()`` and delivers that file's ``EDGE_PREPROCESS`` message; the upload
view's chooser asks ``policy.next_upload()``. Each lane's daemon receives only for idle
workers (the queue is ``ordered``), so a pick is made at the moment a worker can start it.
Tasks report measurements and uploads to the policy and wake the queue so that idle receivers
choose again. ``EDGE_PREPROCESS`` messages of files uploaded unprocessed are delivered and
acknowledged without work, so the queue drains.

The agent stops on SIGTERM/SIGINT (running uploads get the grace period; what is not confirmed
stays unjournaled and is sent by the next run), when the target refuses the credentials, or,
for runs with an end, after ``max_files`` files or ``exit_when_idle`` seconds without work.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simpletasks.daemon import DaemonService
from simpletasks.errors import ConfigError
from simpletasks.queues.priority import Pending, PriorityQueue
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.supervisor import Supervisor

from .journal import JOURNAL_NAME, UploadJournal
from .operator import get_operator
from .policy import FileState, make_policy
from .tasks import (
    PREPROCESS,
    UPLOAD,
    EdgeFile,
    EdgePreprocessTask,
    EdgeRuntime,
    EdgeStats,
    EdgeUploadTask,
    edge_resources,
    task_body,
)
from .upload import Uploader
from .watcher import DirectoryWatcher, WatchedFile, WatcherThread

logger = logging.getLogger(__name__)

STATE_DIR_NAME = ".simpletasks-edge"


@dataclass(frozen=True)
class AgentConfig:
    """How the agent runs.

    Attributes:
        directory: The watched directory.
        include: Keep only names ending with one of these suffixes.
        policy: A policy name (see ``tasks.edge.policy.policy_names``).
        cores: Pre-processing workers (C); 0 runs no CPU lane (every file sent as it is).
        uploads: Upload workers sharing the link (K).
        state_dir: Journal and work files (default: ``<directory>/.simpletasks-edge``).
        operator: Operator name for ``get_operator``.
        poll_seconds: Directory poll interval.
        settle_seconds: How long a file must stay unchanged to count as complete.
        grace_seconds: At stop, how long running tasks may take to finish.
        max_files: Stop after this many files are uploaded (or vanished).
        exit_when_idle: Stop once every file found is done, none is still settling, and none
            arrived for this long.
        seed: Seeds the policy's random picks.
        oracle_scores: True score by arrival index (the ``oracle`` policy; measurement only).
    """

    directory: Path
    include: tuple[str, ...] = ()
    policy: str = "splines"
    cores: int = 1
    uploads: int = 4
    state_dir: Path | None = None
    operator: str = "border-dark"
    poll_seconds: float = 0.25
    settle_seconds: float = 0.5
    grace_seconds: float = 10.0
    max_files: int | None = None
    exit_when_idle: float | None = None
    seed: int = 0
    oracle_scores: Sequence[float] | None = None


class _PreprocessChooser:
    """The pre-process view's order: the policy's ``next_preprocess``."""

    def __init__(self, rt: EdgeRuntime) -> None:
        self.rt = rt

    def choose(self, pending: Sequence[Pending]) -> Pending | None:
        policy = self.rt.policy
        mine: dict[int, Pending] = {}
        for p in pending:
            kind, index = self.rt.kinds[p.body]
            if kind != PREPROCESS:
                continue
            if policy.state(index) == FileState.UPLOADED:
                return p  # uploaded unprocessed: deliver it to be acked without work
            mine[index] = p
        if not mine:
            return None
        chosen = policy.next_preprocess()
        if chosen is None:
            return None
        index = chosen
        if index not in mine:  # cannot happen while every waiting file has its message
            logger.error(
                "policy chose file %d to pre-process but its message is not waiting", index
            )
            policy.preprocess_failed(index)
            return None
        return mine[index]


class _UploadChooser:
    """The upload view's order: the policy's ``next_upload``."""

    def __init__(self, rt: EdgeRuntime) -> None:
        self.rt = rt

    def choose(self, pending: Sequence[Pending]) -> Pending | None:
        mine = {}
        for p in pending:
            kind, index = self.rt.kinds[p.body]
            if kind == UPLOAD:
                mine[index] = p
        if not mine:
            return None
        chosen = self.rt.policy.next_upload()
        if chosen is None:
            return None
        index = chosen
        if index not in mine:  # its message is still being released: choose again later
            self.rt.policy.upload_failed(index)
            return None
        return mine[index]


def _lane_settings(concurrency: int, grace: float) -> DaemonSettings:
    return DaemonSettings(
        concurrency=concurrency,
        lease_seconds=60.0,
        wait_seconds=1.0,  # a receive blocks on the queue and is woken by new work
        poll_frequency_seconds=0.0,
        max_attempts=None,  # never drop a file; uploads retry inside the task anyway
        retry_delay_seconds=1.0,
        retry_delay_max_seconds=30.0,
        grace_seconds=grace,
        prefetch_seconds=0.0,
    )


class EdgeAgent:
    """Watches a directory and uploads every complete file, pre-processing by the policy.

    Args:
        config: How to run.
        uploader: The upload target.
        progress: Called about every ``progress_seconds`` with the agent (for a live line).
        progress_seconds: Interval of ``progress`` calls.

    Raises:
        ConfigError: If the watched directory does not exist (a mistyped path would
            otherwise be created and watched in silence).
    """

    def __init__(
        self,
        config: AgentConfig,
        uploader: Uploader,
        *,
        progress: Callable[[EdgeAgent], None] | None = None,
        progress_seconds: float = 1.0,
    ) -> None:
        self.config = config
        if not Path(config.directory).is_dir():
            raise ConfigError(
                f"the directory to watch, {config.directory}, does not exist or is not a "
                "directory: check the path (create it first if the instrument has not yet)"
            )
        self.state_dir = Path(config.state_dir or Path(config.directory) / STATE_DIR_NAME)
        work_dir = self.state_dir / "work"
        shutil.rmtree(work_dir, ignore_errors=True)  # leftovers of a run that was stopped
        work_dir.mkdir(parents=True, exist_ok=True)
        self._hint: Callable[[Path], float] | None = None
        if config.policy == "content":
            from .hint import quick_hint

            self._hint = quick_hint
        self.queue = PriorityQueue("edge")
        self.runtime = EdgeRuntime(
            policy=make_policy(config.policy, seed=config.seed, oracle_scores=config.oracle_scores),
            operator=get_operator(config.operator),
            uploader=uploader,
            journal=UploadJournal(self.state_dir / JOURNAL_NAME),
            work_dir=work_dir,
            wake=self.queue.wake,
            on_fatal=self._fatal,
        )
        self.fatal: str | None = None
        self.progress = progress
        self.progress_seconds = progress_seconds
        resources = edge_resources(self.runtime)
        cpu_registry, upload_registry = TaskRegistry(), TaskRegistry()
        cpu_registry.register(EdgePreprocessTask)
        upload_registry.register(EdgeUploadTask)
        grace = config.grace_seconds
        lanes = []
        if config.cores > 0:  # with no CPU lane, files are sent as they are
            lanes.append(
                DaemonService(
                    queue=self.queue.view(_PreprocessChooser(self.runtime), "edge-preprocess"),
                    registry=cpu_registry,
                    settings=_lane_settings(config.cores, grace),
                    resources={"edge": resources["edge"]},
                    name="cpu",
                )
            )
        lanes.append(
            DaemonService(
                queue=self.queue.view(_UploadChooser(self.runtime), "edge-upload"),
                registry=upload_registry,
                settings=_lane_settings(config.uploads, grace),
                resources=resources,
                name="upload",
            )
        )
        self.supervisor = Supervisor(lanes, on_stop=[self._stop_watching])
        self.watcher = DirectoryWatcher(
            Path(config.directory), include=config.include, settle_seconds=config.settle_seconds
        )
        self._watcher_thread = WatcherThread(
            self.watcher, self._on_file, interval=config.poll_seconds
        )
        self._stopped = threading.Event()
        self._last_arrival = time.monotonic()

    @property
    def stats(self) -> EdgeStats:
        """The live counters."""
        return self.runtime.stats

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop watching and stop both lanes (a second call skips the grace period)."""
        self.supervisor.stop()

    def _stop_watching(self) -> None:
        self._stopped.set()
        self._watcher_thread.stop()

    def _stop_once(self) -> None:
        if not self._stopped.is_set():
            self.supervisor.stop()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT call :meth:`stop` (main thread only)."""
        self.supervisor.install_signal_handlers()

    def _fatal(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = reason
            logger.error("stopping the agent: %s", reason)
        self._stop_once()

    def run(self) -> dict[str, Any]:
        """Run until stopped; return the counters, the problems and any fatal reason."""
        logger.info(
            "edge agent: watching %s (include %s), policy %s, %d CPU + %d upload workers -> %s",
            self.config.directory,
            ",".join(self.config.include) or "all",
            self.config.policy,
            self.config.cores,
            self.config.uploads,
            self.runtime.uploader.description,
        )
        self._watcher_thread.start()
        monitor = threading.Thread(target=self._monitor, name="edge-monitor", daemon=True)
        monitor.start()
        try:
            lanes = self.supervisor.run()
        finally:
            self._stop_once()
            self._watcher_thread.join(5)
            monitor.join(5)
        if self.progress is not None:
            self.progress(self)
        return {
            **self.stats.as_dict(),
            "fatal": self.fatal,
            "problems": [f"{name}: {what}" for name, what in self.runtime.problems],
            "lanes": {name: str(s) for name, s in lanes.items()},
            "policy_counts": self.runtime.policy.counts(),
        }

    # -- threads ---------------------------------------------------------------------------

    def _on_file(self, found: WatchedFile) -> None:
        rt = self.runtime
        if rt.journal.is_done(found.name, found.size, found.mtime_ns):
            rt.stats.add(skipped=1)
            return
        index = len(rt.files)
        f = EdgeFile(index, found.name, found.path, found.size, found.mtime_ns, found.detected)
        hint = None
        if self._hint is not None:
            try:
                hint = float(self._hint(found.path))
            except Exception as exc:  # a corrupt image: no hint, the policy still has it
                rt.report(f, f"no content hint: {type(exc).__name__}: {exc}")
        kinds = [PREPROCESS, UPLOAD] if self.config.cores > 0 else [UPLOAD]
        bodies = [task_body(kind, f) for kind in kinds]
        rt.files[index] = f
        for kind, body in zip(kinds, bodies, strict=True):
            rt.kinds[body] = (kind, index)
        if rt.stats.first_detected is None:
            rt.stats.first_detected = found.detected
        rt.stats.add(seen=1)
        self._last_arrival = time.monotonic()
        rt.policy.add(index, found.size, hint)
        self.queue.send_batch(bodies)

    def _monitor(self) -> None:
        cfg = self.config
        next_progress = time.monotonic() + self.progress_seconds
        while not self._stopped.wait(0.05):
            stats = self.stats
            now = time.monotonic()
            if cfg.max_files is not None and stats.done() >= cfg.max_files:
                logger.info("%d files done (max_files): stopping", stats.done())
                self._stop_once()
            elif (
                cfg.exit_when_idle is not None
                and self._watcher_thread.quiet  # files written just before start still settling
                and stats.done() == stats.seen
                and now - self._last_arrival >= cfg.exit_when_idle
            ):
                logger.info("idle for %.1f s with every file done: stopping", cfg.exit_when_idle)
                self._stop_once()
            if self.progress is not None and now >= next_progress:
                next_progress = now + self.progress_seconds
                try:
                    self.progress(self)
                except Exception:
                    logger.exception("progress callback failed")


def progress_line(agent: EdgeAgent) -> str:
    """One line: files seen, processed, uploaded, bytes saved, link throughput."""
    s = agent.stats
    line = (
        f"seen {s.seen} | processed {s.processed} | uploaded {s.uploaded}/{s.seen} "
        f"| saved {s.bytes_saved / 1e6:.2f} MB | link {s.throughput(time.monotonic()) / 1e6:.2f} "
        f"MB/s"
    )
    extras = [
        f"{name} {value}"
        for name, value in (
            ("skipped", s.skipped),
            ("failed pre-processing", s.preprocess_failed),
            ("vanished", s.vanished),
            ("retries", s.retries),
        )
        if value
    ]
    return " | ".join([line, *extras])
