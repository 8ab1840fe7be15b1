"""Task types for the reliability runs, importable by daemon subprocesses.

Start a daemon with ``PYTHONPATH=benchmarks`` and ``--task chaos_tasks:ChaosTask`` (or
``chaos_tasks:WorkTask``).

* ``CHAOS`` writes a deterministic output (:func:`expected_output` of its id) to
  ``out/<id>`` through the datasource and appends a line per execution to ``<log_dir>/<id>``:
  ``start <pid> <unix time>`` when it begins and ``end <pid> <unix time>`` once its output is
  written. A run's log therefore tells how often each task ran, where, and which runs were
  cut short.
* ``WORK`` sleeps ``seconds`` (0 = no-op) and, if ``log`` is set, appends one line
  ``<pid> <start> <end>`` to that file (one short ``O_APPEND`` write per task).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

from simpletasks.task import DaemonTask, Result


def expected_output(task_id: int) -> bytes:
    """The bytes task ``task_id`` writes: the hex SHA-256 of its decimal id."""
    return hashlib.sha256(str(task_id).encode()).hexdigest().encode()


def output_key(task_id: int) -> str:
    """The bucket key task ``task_id`` writes."""
    return f"out/{task_id}"


def append_line(path: str, line: str) -> None:
    """Append ``line`` to ``path`` with one ``O_APPEND`` write (atomic across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dataclass
class ChaosPayload:
    log_dir: str
    seconds: float = 0.0


class ChaosTask(DaemonTask):
    """Sleep ``seconds``, write ``out/<id>``, and log every execution to ``log_dir/<id>``."""

    name = "CHAOS"
    payload_type = ChaosPayload

    def _log(self, event: str) -> None:
        path = os.path.join(self.payload.log_dir, str(self.id))
        append_line(path, f"{event} {os.getpid()} {time.time():.6f}")

    def execute(self, datasource: Any) -> Result:
        self._log("start")
        if self.payload.seconds > 0:
            time.sleep(self.payload.seconds)
        key = output_key(self.id)
        datasource.put(key, expected_output(self.id))
        return Result(success=True, outputs=[key])

    def finalize(self, datasource: Any, result: Result) -> None:
        self._log("end")


@dataclass
class WorkPayload:
    seconds: float = 0.0
    log: str | None = None


class WorkTask(DaemonTask):
    """Simulated work: sleep ``seconds`` (a negative value: burn ``-seconds`` of CPU); log
    ``<pid> <start> <end>`` if ``log`` is set."""

    name = "WORK"
    payload_type = WorkPayload

    def execute(self, datasource: Any) -> Result:
        started = time.time()
        if self.payload.seconds < 0:  # CPU-bound: spin for -seconds of this thread's CPU
            until = time.thread_time() - self.payload.seconds
            while time.thread_time() < until:
                sum(range(1000))
        elif self.payload.seconds > 0:
            time.sleep(self.payload.seconds)
        if self.payload.log:
            append_line(self.payload.log, f"{os.getpid()} {started:.6f} {time.time():.6f}")
        return Result(success=True)
