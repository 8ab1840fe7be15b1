"""Several daemons in one process: :class:`Supervisor` runs them and owns the signals.

The edge agent runs two daemons (a CPU lane and an upload lane) over one in-process queue;
a supervisor starts each on a thread of its own, makes SIGTERM/SIGINT stop all of them (a
second signal skips their grace periods), and returns when every daemon has returned::

    supervisor = Supervisor([cpu_daemon, upload_daemon])
    supervisor.install_signal_handlers()
    stats = supervisor.run()          # {"cpu": RunStats, "upload": RunStats}

A daemon that ends on its own (burst mode drained its queue) does not stop the others unless
``stop_together`` is set.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence

from simpletasks.daemon import DaemonService
from simpletasks.errors import ConfigError
from simpletasks.stats import RunStats

logger = logging.getLogger(__name__)


class Supervisor:
    """Runs named daemons on threads of one process.

    Args:
        daemons: The daemons; their names must differ.
        stop_together: When one daemon returns, stop the others too.
        on_stop: Called (once, errors logged) when a stop is requested, before the daemons
            are told: to stop what feeds them (the edge agent's directory watcher).

    Raises:
        ConfigError: If there are no daemons or two share a name.
    """

    def __init__(
        self,
        daemons: Sequence[DaemonService],
        *,
        stop_together: bool = False,
        on_stop: Sequence[Callable[[], None]] = (),
    ) -> None:
        names = [d.name for d in daemons]
        if not daemons:
            raise ConfigError("a supervisor needs at least one daemon")
        if len(set(names)) != len(names):
            raise ConfigError(f"daemon names must differ, got {names}")
        self.daemons = list(daemons)
        self.stop_together = stop_together
        self._on_stop = list(on_stop)
        self._stop_called = threading.Event()
        self._stats: dict[str, RunStats] = {}
        self._errors: dict[str, BaseException] = {}
        self._ended = threading.Condition()

    def stop(self) -> None:
        """Ask every daemon to stop (a second call skips their grace periods). Signal-safe."""
        if not self._stop_called.is_set():
            self._stop_called.set()
            for callback in self._on_stop:
                try:
                    callback()
                except Exception:
                    logger.exception("stop callback %r failed", callback)
        for daemon in self.daemons:
            daemon.stop()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT call :meth:`stop` (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop())

    def run(self) -> dict[str, RunStats]:
        """Run every daemon until all have returned; return their stats by name.

        Raises:
            RuntimeError: If a daemon's ``run`` raised (the others are stopped first).
        """
        threads = [
            threading.Thread(target=self._run_one, args=(d,), name=f"st-{d.name}", daemon=True)
            for d in self.daemons
        ]
        for thread in threads:
            thread.start()
        with self._ended:
            while len(self._stats) + len(self._errors) < len(self.daemons):
                self._ended.wait(0.5)
        for thread in threads:
            thread.join()
        if self._errors:
            name, error = next(iter(self._errors.items()))
            raise RuntimeError(f"daemon {name!r} failed: {error!r}") from error
        return {d.name: self._stats[d.name] for d in self.daemons}

    def _run_one(self, daemon: DaemonService) -> None:
        try:
            stats = daemon.run()
        except BaseException as exc:
            logger.exception("daemon %s failed; stopping the others", daemon.name)
            self.stop()
            with self._ended:
                self._errors[daemon.name] = exc
                self._ended.notify_all()
            return
        if self.stop_together:
            self.stop()
        with self._ended:
            self._stats[daemon.name] = stats
            self._ended.notify_all()
