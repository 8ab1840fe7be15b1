"""Daemon processes on real queues, for the reliability runs and their tests.

A :class:`Cluster` is one run's task, error and done queues and its bucket, on SQS + S3 (a
moto server) or on the file backends, plus the environment daemon subprocesses need. A
:class:`DaemonProcess` is one ``python -m simpletasks run`` child on that cluster, started
with ``PYTHONPATH`` set so that it can import :mod:`chaos_tasks`. :func:`read_executions`
parses the per-task logs :class:`chaos_tasks.ChaosTask` writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simpletasks.buckets import BucketService, open_bucket
from simpletasks.emulators.moto import MotoServer
from simpletasks.queues import QueueCounts, QueueService, open_queue

logger = logging.getLogger(__name__)

BENCH = Path(__file__).resolve().parent
BACKENDS = ("sqs", "file", "amqp")
AMQP_BASE = "amqp://127.0.0.1:5672/%2F"  # the machine's broker (guest/guest)


@dataclass
class Cluster:
    """The queues and bucket of one run, and how daemon subprocesses reach them.

    Attributes:
        backend: ``"sqs"`` (SQS + S3 on ``moto``) or ``"file"`` (file queue and bucket).
        workdir: Scratch directory: cache, task logs, daemon logs, file queues.
        queue_url: Task queue.
        error_url: Error queue.
        done_url: Done queue.
        bucket_url: Bucket the tasks write to.
        env: Environment for daemon subprocesses.
        moto: The moto server (``"sqs"`` only).
    """

    backend: str
    workdir: Path
    queue_url: str
    error_url: str
    done_url: str
    bucket_url: str
    env: dict[str, str]
    moto: MotoServer | None = None
    _opened: dict[str, Any] = field(default_factory=dict, repr=False)

    def _open(self, url: str, opener: Callable[..., Any], service: str) -> Any:
        if url not in self._opened:
            kwargs = {"client": self.moto.client(service)} if self.moto else {}
            self._opened[url] = opener(url, **kwargs)
        return self._opened[url]

    def queue(self, url: str | None = None) -> QueueService:
        """Open ``url`` (default: the task queue) in this process."""
        queue: QueueService = self._open(url or self.queue_url, open_queue, "sqs")
        return queue

    def bucket(self) -> BucketService:
        """Open the bucket in this process."""
        bucket: BucketService = self._open(self.bucket_url, open_bucket, "s3")
        return bucket

    def close(self) -> None:
        """Close what this process opened; on RabbitMQ also delete the run's queues.

        The machine's broker is shared by every run and test: a quorum queue left behind
        keeps a process and its log there until the broker restarts (hundreds of them
        piled up in an afternoon of runs before this).
        """
        for opened in self._opened.values():
            with contextlib.suppress(Exception):
                opened.close()
        self._opened.clear()
        if self.backend != "amqp":
            return
        from simpletasks.queues.amqp import AMQPQueue

        for url in (self.queue_url, self.error_url, self.done_url):
            try:
                queue = AMQPQueue.from_url(url)
                try:
                    queue.delete()
                finally:
                    queue.close()
            except Exception as exc:  # cleanup: report, go on with the rest
                logger.warning("could not delete %s: %s", url, exc)

    def counts(self, url: str | None = None) -> QueueCounts:
        """Visible and in-flight counts of ``url`` (default: the task queue)."""
        return self.queue(url).counts()

    def read_outputs(self, keys: list[str]) -> dict[str, bytes | None]:
        """Read ``keys`` from the bucket (None for a missing one), 8 at a time."""
        bucket = self.bucket()

        def read(key: str) -> bytes | None:
            if not bucket.exists(key):
                return None
            path = self.workdir / "read" / uuid.uuid4().hex
            bucket.download(key, path)
            data = path.read_bytes()
            path.unlink()
            return data

        (self.workdir / "read").mkdir(exist_ok=True)
        with ThreadPoolExecutor(8) as pool:
            return dict(zip(keys, pool.map(read, keys), strict=True))

    def drain_reports(self, url: str, limit: int = 10) -> list[dict[str, Any]]:
        """Receive (and leave leased) up to ``limit`` reports from ``url``, parsed."""
        found: list[dict[str, Any]] = []
        queue = self.queue(url)
        while len(found) < limit:
            batch = queue.receive(10, wait_seconds=0.5, lease_seconds=60)
            if not batch:
                break
            found += [json.loads(m.body) for m in batch]
        return found[:limit]


def make_cluster(backend: str, workdir: Path, moto: MotoServer | None = None) -> Cluster:
    """Create fresh queues and a bucket for one run.

    Args:
        backend: ``"sqs"`` (needs ``moto``) or ``"file"``.
        workdir: An empty scratch directory (created if missing).
        moto: The moto server for ``"sqs"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    if backend == "amqp":  # the machine's RabbitMQ; a file bucket
        from simpletasks.queues.amqp import AMQPQueue

        tag = uuid.uuid4().hex[:8]
        urls = {}
        for name in ("tasks", "errors", "done"):
            urls[name] = f"{AMQP_BASE}?queue=rel-{tag}-{name}"
            AMQPQueue.from_url(urls[name], create=True).close()
        urls["bucket"] = f"file://{workdir}/bucket"
        (workdir / "bucket").mkdir(exist_ok=True)
        moto = None
    elif backend == "file":
        urls = {name: f"file://{workdir}/{name}" for name in ("tasks", "errors", "done", "bucket")}
        for name in ("tasks", "errors", "done", "bucket"):  # file:// is not created on open
            (workdir / name).mkdir(exist_ok=True)
        moto = None
    else:
        if moto is None:
            raise ValueError("the sqs backend needs a moto server")
        tag = uuid.uuid4().hex[:8]
        sqs = moto.client("sqs")
        urls = {}
        for name in ("tasks", "errors", "done"):
            sqs.create_queue(QueueName=f"rel-{tag}-{name}")
            urls[name] = f"sqs://rel-{tag}-{name}"
        moto.client("s3").create_bucket(Bucket=f"rel-{tag}")
        urls["bucket"] = f"s3://rel-{tag}/data"
        env.update(moto.env())
    return Cluster(
        backend=backend,
        workdir=workdir,
        queue_url=urls["tasks"],
        error_url=urls["errors"],
        done_url=urls["done"],
        bucket_url=urls["bucket"],
        env=env,
        moto=moto,
    )


class DaemonProcess:
    """``python -m simpletasks run`` on ``cluster``, as a child process.

    Its stdout (the final stats JSON) and stderr (logs) go to files under
    ``cluster.workdir/daemons``.

    Args:
        cluster: Where it works.
        name: A label, unique within the cluster (names its log files).
        task: The task class to register, ``module:Class``.
        lease: ``--lease`` seconds.
        concurrency: ``--concurrency``.
        grace: ``--grace`` seconds.
        extra: More command-line arguments of ``run``.
        log_level: ``--log-level`` (``debug`` logs every message's id and attempt).
    """

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        *,
        task: str = "chaos_tasks:ChaosTask",
        lease: float = 5,
        concurrency: int = 1,
        grace: float = 10,
        extra: tuple[str, ...] = (),
        log_level: str = "info",
    ) -> None:
        self.name = name
        logs = cluster.workdir / "daemons"
        logs.mkdir(exist_ok=True)
        self.stdout_path = logs / f"{name}.out"
        self.stderr_path = logs / f"{name}.err"
        cmd = [
            *(sys.executable, "-m", "simpletasks", "--log-level", log_level, "run"),
            *("--queue", cluster.queue_url, "--error-queue", cluster.error_url),
            *("--bucket", cluster.bucket_url, "--cache-dir", str(cluster.workdir / "cache")),
            *("--task", task, "--lease", str(lease), "--concurrency", str(concurrency)),
            *("--grace", str(grace), "--wait", "1", "--poll-frequency", "0.2"),
            *extra,
        ]
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, env=cluster.env, stdout=out, stderr=err, text=True)
        self.started = time.time()

    @property
    def pid(self) -> int:
        """The process id (what :class:`chaos_tasks.ChaosTask` logs)."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def ready(self) -> bool:
        """Whether the daemon has logged its start line (it is about to receive)."""
        return "daemon on " in self.stderr_path.read_text()

    def kill(self) -> float:
        """SIGKILL the process, reap it, and return the Unix time of the kill."""
        at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return at

    def terminate(self) -> None:
        """Send SIGTERM (a graceful stop)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s; return the exit code, or None if still running."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stats(self) -> dict[str, Any] | None:
        """The run statistics the daemon printed on exit (None if it printed none)."""
        lines = self.stdout_path.read_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def warnings(self) -> list[str]:
        """The WARNING and ERROR lines of its log."""
        return [
            line
            for line in self.stderr_path.read_text().splitlines()
            if " WARNING " in line or " ERROR " in line
        ]

    def stderr_tail(self, n: int = 20) -> str:
        """The last ``n`` lines of its log."""
        return "\n".join(self.stderr_path.read_text().splitlines()[-n:])


def stop_all(daemons: list[DaemonProcess], timeout: float = 30) -> dict[str, int | None]:
    """SIGTERM every live daemon; return each one's exit code (None = did not exit, killed)."""
    for daemon in daemons:
        daemon.terminate()
    codes: dict[str, int | None] = {}
    deadline = time.monotonic() + timeout
    for daemon in daemons:
        code = daemon.wait(max(0.1, deadline - time.monotonic()))
        if code is None:
            logger.error("daemon %s did not exit: %s", daemon.name, daemon.stderr_tail())
            daemon.kill()
        codes[daemon.name] = code
    return codes


@dataclass
class Execution:
    """One execution of a task, from its log: who ran it and when (Unix seconds)."""

    pid: int
    start: float
    end: float | None = None  # None: cut short (its process died or gave the task up)


def read_executions(log_dir: Path) -> dict[int, list[Execution]]:
    """Parse the ``start``/``end`` lines of every task log in ``log_dir``, by task id.

    An ``end`` is matched to the earliest unfinished ``start`` of the same process.
    """
    runs: dict[int, list[Execution]] = {}
    for path in log_dir.iterdir():
        executions: list[Execution] = []
        for line in path.read_text().splitlines():
            event, pid, at = line.split()
            if event == "start":
                executions.append(Execution(int(pid), float(at)))
                continue
            for execution in executions:
                if execution.pid == int(pid) and execution.end is None:
                    execution.end = float(at)
                    break
        runs[int(path.name)] = executions
    return runs


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 20 ms; return the seconds it took, or raise TimeoutError."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - started
