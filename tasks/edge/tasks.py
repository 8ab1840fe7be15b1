"""The edge agent's task types, EDGE_PREPROCESS and EDGE_UPLOAD, and the state they share.

Every file the watcher finds gets an arrival index ``i`` and two messages on the agent's
in-process priority queue: ``EDGE_PREPROCESS`` and ``EDGE_UPLOAD`` with ``basic_info.id = i``.
The queue views deliver them in the policy's order (see :mod:`.agent`); the tasks do the work
and report to the policy:

- ``EDGE_PREPROCESS`` runs the operator on file ``i`` into the agent's work directory,
  measures its CPU seconds (this thread's CPU time) and the size after, and reports them
  (``policy.preprocessed``). A file the operator cannot read (corrupt, not an image, changed
  or removed since it was found) or whose output cannot be written (a full disk) is reported
  and marked ``policy.preprocess_failed``: the original is uploaded as it is. A message for a
  file that was uploaded meanwhile is acknowledged without work.
- ``EDGE_UPLOAD`` sends the processed version if the policy says it is smaller, else the
  original, retrying with back-off until the target confirms it (or the agent stops); then it
  appends the file to the journal and reports ``policy.uploaded``. A refusal that no retry can
  fix (401, other 4xx) stops the agent with the reason; the file stays unjournaled.

Both task types read the shared :class:`EdgeRuntime` from the per-worker resource ``"edge"``;
the upload task reads its connection from ``"link"``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simpletasks.buckets.file import atomic_path
from simpletasks.errors import TaskCancelled
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.task import DaemonTask, Result

from .journal import UploadJournal
from .policy import FileState, Policy
from .upload import Sent, Uploader, UploadError, UploadRejected, send_with_retry

logger = logging.getLogger(__name__)

PREPROCESS = "EDGE_PREPROCESS"
UPLOAD = "EDGE_UPLOAD"


@dataclass
class EdgeFile:
    """One watched file.

    Attributes:
        index: Arrival order (0 for the first file this run).
        name: Its name in the watched directory.
        path: Its path.
        size: Size when it was found complete.
        mtime_ns: Modification time when found.
        detected: Wall-clock time it was found.
        processed: The pre-processed version, while it waits for upload.
        cpu_seconds: CPU seconds its pre-processing took (this thread's CPU time).
        wall_seconds: Wall-clock seconds its pre-processing took (more on a busy machine).
        problems: What went wrong with it (reported, not fatal).
    """

    index: int
    name: str
    path: Path
    size: int
    mtime_ns: int
    detected: float
    processed: Path | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class EdgeStats:
    """Counters for the progress line and the final summary (thread-safe)."""

    seen: int = 0
    skipped: int = 0  # confirmed by an earlier run (journal)
    processed: int = 0
    preprocess_failed: int = 0
    uploaded: int = 0
    uploaded_processed: int = 0
    vanished: int = 0
    retries: int = 0
    journal_errors: int = 0
    bytes_sent: int = 0
    bytes_saved: int = 0  # original size - sent size, over uploaded files
    cpu_seconds: float = 0.0
    first_detected: float | None = None
    last_done: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _recent: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def add(self, **counts: float) -> None:
        """Add to counters by name."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def sent(self, n: int, now: float) -> None:
        """Record a confirmed upload of ``n`` bytes at monotonic time ``now``."""
        with self._lock:
            self._recent.append((now, n))

    def throughput(self, now: float, window: float = 5.0) -> float:
        """Bytes per second confirmed over the last ``window`` seconds."""
        with self._lock:
            while self._recent and self._recent[0][0] < now - window:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / window

    def done(self) -> int:
        """Files that need nothing more: uploaded, or vanished before they could be."""
        return self.uploaded + self.vanished

    def makespan(self) -> float | None:
        """Last upload confirmed - first file found (None before the first upload)."""
        if self.first_detected is None or self.last_done is None:
            return None
        return self.last_done - self.first_detected

    def as_dict(self) -> dict[str, Any]:
        """The counters as plain data."""
        with self._lock:
            data = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        data["makespan"] = self.makespan()
        return data


def task_body(kind: str, f: EdgeFile) -> str:
    """The message body for task ``kind`` on file ``f``."""
    info = BasicInfo(id=f.index, name=kind, base_directory="")
    return TaskMessage(info, payload_info={"file": f.name}).to_json()


class EdgeRuntime:
    """What both lanes share: the files, the policy, the journal, the target, the counters.

    Args:
        policy: The scheduling policy (thread-safe).
        operator: Has ``apply(src, dst)``; makes the pre-processed version.
        uploader: The upload target.
        journal: Where confirmed uploads are recorded.
        work_dir: Where pre-processed versions wait for upload.
        wake: Called after the policy's inputs changed (wakes the queue's receivers).
        on_fatal: Called with the reason when the target refuses us for good.
    """

    def __init__(
        self,
        *,
        policy: Policy,
        operator: Any,
        uploader: Uploader,
        journal: UploadJournal,
        work_dir: Path,
        wake: Callable[[], None] = lambda: None,
        on_fatal: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.policy = policy
        self.operator = operator
        self.uploader = uploader
        self.journal = journal
        self.work_dir = Path(work_dir)
        self.wake = wake
        self.on_fatal = on_fatal
        self.stats = EdgeStats()
        self.files: dict[int, EdgeFile] = {}
        self.kinds: dict[str, tuple[str, int]] = {}  # message body -> (task name, index)
        self.problems: list[tuple[str, str]] = []  # (file name, what happened)
        self._lock = threading.Lock()

    def report(self, f: EdgeFile, problem: str) -> None:
        """Record and log something that went wrong with ``f`` (the agent goes on)."""
        f.problems.append(problem)
        with self._lock:
            self.problems.append((f.name, problem))
        logger.warning("%s: %s", f.name, problem)


class _EdgeTask(DaemonTask):
    @property
    def runtime(self) -> EdgeRuntime:
        rt: EdgeRuntime = self.context.resources["edge"]
        return rt


class EdgePreprocessTask(_EdgeTask):
    """EDGE_PREPROCESS: run the operator on file ``basic_info.id``; report the measurement."""

    name = PREPROCESS

    def execute(self, datasource: Any) -> Result:
        """Pre-process the file, or report why it cannot be (it is then sent as it is)."""
        rt = self.runtime
        i = self.id
        f = rt.files[i]
        if rt.policy.state(i) != FileState.PREPROCESSING:
            return Result(success=True, message="nothing to do: already uploaded")
        try:
            try:
                st = f.path.stat()
            except FileNotFoundError:
                raise ValueError("removed before pre-processing") from None
            if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                rt.report(f, f"changed since it was found ({f.size} -> {st.st_size} bytes)")
            dst = rt.work_dir / f"{i:06d}-{f.name}"
            started, wall = time.thread_time(), time.monotonic()
            with atomic_path(dst) as tmp:
                rt.operator.apply(f.path, tmp)
            cpu = time.thread_time() - started
            f.cpu_seconds, f.wall_seconds = cpu, time.monotonic() - wall
            size_after = dst.stat().st_size
        except Exception as exc:
            rt.report(f, f"not pre-processed, sent as it is: {type(exc).__name__}: {exc}")
            rt.policy.preprocess_failed(i)
            rt.stats.add(preprocess_failed=1)
            rt.wake()
            return Result(success=True, message=f"pre-processing failed: {exc}")
        rt.policy.preprocessed(i, size_after, cpu)
        if rt.policy.use_processed(i):
            f.processed = dst
        else:
            dst.unlink(missing_ok=True)
        rt.stats.add(processed=1, cpu_seconds=cpu)
        rt.wake()
        logger.debug("%s: %d -> %d bytes in %.3f CPU-s", f.name, f.size, size_after, cpu)
        return Result(success=True, message=f"{f.size} -> {size_after} bytes in {cpu:.3f} CPU-s")


class EdgeUploadTask(_EdgeTask):
    """EDGE_UPLOAD: send file ``basic_info.id`` (processed if smaller) until confirmed."""

    name = UPLOAD

    def execute(self, datasource: Any) -> Result:
        """Upload, journal, report; see the module docstring for the failure cases."""
        rt = self.runtime
        i = self.id
        f = rt.files[i]
        if rt.policy.state(i) == FileState.UPLOADED:
            return Result(success=True, message="already uploaded")
        try:
            sent, processed = self._send(rt, f)
        except FileNotFoundError:
            rt.report(f, "removed before upload: nothing to send")
            rt.policy.uploaded(i)  # retire it: the policy has no "gone" state
            rt.stats.add(vanished=1)
            rt.wake()
            return Result(success=True, message="file vanished")
        except UploadRejected as exc:
            rt.policy.upload_failed(i)
            rt.wake()
            rt.on_fatal(str(exc))
            raise
        except Exception:
            # Unexpected (a bug, an operator's file we cannot read...): the daemon retries the
            # message after a delay; the policy must be able to choose the file again.
            rt.policy.upload_failed(i)
            rt.wake()
            raise
        if sent is None:
            rt.policy.upload_failed(i)
            rt.wake()
            raise TaskCancelled(f"upload of {f.name} given up at stop; not journaled")
        try:
            rt.journal.record(
                f.name,
                size=f.size,
                mtime_ns=f.mtime_ns,
                sent_bytes=sent.bytes,
                processed=processed,
                target=sent.target,
            )
        except OSError as exc:
            rt.stats.add(journal_errors=1)
            logger.error(
                "%s uploaded, but the journal could not record it (%s): a restart may send it "
                "again",
                f.name,
                exc,
            )
        rt.policy.uploaded(i)
        if f.processed is not None:
            f.processed.unlink(missing_ok=True)
            f.processed = None
        now = time.time()
        rt.stats.add(
            uploaded=1,
            uploaded_processed=int(processed),
            bytes_sent=sent.bytes,
            bytes_saved=max(0, f.size - sent.bytes) if processed else 0,
        )
        rt.stats.sent(sent.bytes, time.monotonic())
        with rt._lock:
            rt.stats.last_done = max(rt.stats.last_done or now, now)
        rt.wake()
        return Result(success=True, outputs=[sent.target], message=f"{sent.bytes} bytes")

    def _backoff_sleep(self, seconds: float) -> bool:
        """Wait between tries; True (give up) as soon as the daemon is stopping."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.context.sleep(min(left, 0.2)) or self.context.stopping():
                return True
        return self.context.stopping()

    def _send(self, rt: EdgeRuntime, f: EdgeFile) -> tuple[Sent | None, bool]:
        session = self.context.resources["link"]

        def retried(n: int, exc: UploadError) -> None:
            rt.stats.add(retries=1)

        processed = f.processed is not None and rt.policy.use_processed(f.index)
        path = f.processed if processed and f.processed is not None else f.path
        try:
            sent = send_with_retry(
                session,
                path,
                name=f.name,
                original_filename=str(f.path),
                unixtime=f.mtime_ns / 1e9,
                sleep=self._backoff_sleep,
                on_retry=retried,
            )
        except FileNotFoundError:
            if not processed:
                raise
            rt.report(f, "pre-processed version vanished; sending the original")
            f.processed = None
            return self._send(rt, f)
        return sent, processed


def edge_resources(runtime: EdgeRuntime) -> dict[str, Callable[[], Any]]:
    """Per-worker resources for both lanes: ``"edge"`` (shared) and ``"link"`` (per worker)."""
    return {
        "edge": lambda: contextlib.nullcontext(runtime),
        "link": runtime.uploader.session,
    }
