"""A daemon's status file: what ``simpletasks fleet status`` reads on each host.

:class:`StatusFileMiddleware` (``simpletasks run --status-file PATH``) rewrites a small JSON
file atomically (temp file + rename) at start, every ``interval`` seconds while tasks end,
and at stop::

    {"pid": 4242, "host": "lab-3", "daemon": "lab-3-0", "state": "running",
     "started": 1764643200.0, "updated": 1764643260.5, "received": 12, "succeeded": 11,
     "retried": 1, "dead_lettered": 0, "released": 0, "skipped": 0, "metrics_port": 9101}

``state`` is ``running``, then ``stopping`` after a stop request (seen as a release or the
stop event), then ``stopped``. Times are Unix seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from simpletasks.middleware import Middleware

logger = logging.getLogger(__name__)

COUNTERS = ("received", "succeeded", "retried", "dead_lettered", "released", "skipped")


class StatusFileMiddleware(Middleware):
    """Keeps ``path`` up to date with a daemon's pid, state and counters.

    Args:
        path: The file to write (its directory is created).
        interval: Seconds between two writes while tasks end (start and stop always write).
        extra: More fields to write (e.g. the metrics port).
    """

    def __init__(self, path: Path | str, *, interval: float = 1.0, **extra: Any) -> None:
        self.path = Path(path).expanduser()
        self.interval = interval
        self.extra = extra
        self._daemon: Any = None
        self._state = "starting"
        self._started = time.time()
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stopped = threading.Event()

    def on_start(self, daemon: Any) -> None:
        """Write the first status; start the thread that writes changes."""
        self._daemon = daemon
        self._state = "running"
        self._write()
        threading.Thread(target=self._flush, name="st-status-file", daemon=True).start()

    def on_stop(self, daemon: Any) -> None:
        """Write the final status."""
        self._state = "stopped"
        self._stopped.set()
        self._write()

    def on_acked(self, task: Any, message: Any, result: Any) -> None:
        """A task succeeded: write soon."""
        self._dirty.set()

    def on_retried(self, task: Any, message: Any, report: Any) -> None:
        """A task failed and will be retried: write soon."""
        self._dirty.set()

    def on_dead_lettered(self, task: Any, message: Any, report: Any) -> None:
        """A task failed for good: write soon."""
        self._dirty.set()

    def on_skipped(self, task: Any, message: Any, reason: str) -> None:
        """A message was skipped: write soon."""
        self._dirty.set()

    def on_released(self, message: Any) -> None:
        """Only a stopping daemon releases messages: note it."""
        self._state = "stopping"
        self._dirty.set()

    def _flush(self) -> None:
        while not self._stopped.wait(self.interval):
            if self._dirty.is_set():
                self._dirty.clear()
                try:
                    self._write()
                except OSError as exc:
                    logger.warning("cannot write the status file %s: %s", self.path, exc)

    def status(self) -> dict[str, Any]:
        """The current status as a dict."""
        stats = self._daemon.stats.snapshot() if self._daemon is not None else None
        out: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "daemon": getattr(self._daemon, "name", None),
            "state": self._state,
            "started": self._started,
            "updated": time.time(),
        }
        out.update({name: getattr(stats, name, 0) for name in COUNTERS})
        out.update(self.extra)
        return out

    def _write(self) -> None:
        with self._lock:
            if self._state == "stopped" and not self._stopped.is_set():
                return
            text = json.dumps(self.status())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, self.path)
