"""The official Google Cloud Pub/Sub emulator on 127.0.0.1.

:class:`PubSubEmulator` runs Google's emulator (a Java program) in a child process. It is
the real Pub/Sub gRPC API, in memory, so the backend under test is the code that talks to
Google. Get it with ``gcloud components install pubsub-emulator`` or, on Debian/Ubuntu with
Google's apt repository, ``apt-get install google-cloud-cli-pubsub-emulator``; it needs Java
(11 or later).

The launcher is looked for, in order: ``cloud-pubsub-emulator`` on ``PATH``; the emulator
inside a Google Cloud SDK (the Debian package's ``/usr/lib/google-cloud-sdk``, or the SDK
that holds the ``gcloud`` found on ``PATH``); else ``gcloud beta emulators pubsub start``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from simpletasks.emulators import free_port, wait_for_http

logger = logging.getLogger(__name__)

LAUNCHER = "cloud-pubsub-emulator"
#: Where SDK installs keep the emulator, relative to the SDK root.
SDK_LAUNCHER = Path("platform/pubsub-emulator/bin") / LAUNCHER
#: SDK roots of the system packages (Debian/Ubuntu apt, RPM).
SYSTEM_SDK_ROOTS = (Path("/usr/lib/google-cloud-sdk"), Path("/usr/lib64/google-cloud-sdk"))
DEFAULT_PROJECT = "simpletasks-test"


@dataclass(frozen=True)
class Launcher:
    """How to start the emulator.

    Attributes:
        kind: ``"path"`` (``cloud-pubsub-emulator`` on PATH), ``"sdk"`` (the launcher inside
            a Cloud SDK) or ``"gcloud"`` (``gcloud beta emulators pubsub start``).
        executable: The program that is run.
    """

    kind: str
    executable: str

    def command(self, host: str, port: int) -> list[str]:
        """Return the command line that serves on ``host:port``."""
        if self.kind == "gcloud":
            return [
                self.executable,
                *("beta", "emulators", "pubsub", "start", "--quiet"),
                f"--host-port={host}:{port}",
            ]
        return [self.executable, f"--host={host}", f"--port={port}"]


def find_launcher() -> Launcher | None:
    """Find the Pub/Sub emulator on this machine (see the module docstring); ``None`` if absent."""
    on_path = shutil.which(LAUNCHER)
    if on_path:
        return Launcher("path", on_path)
    gcloud = shutil.which("gcloud")
    roots = list(SYSTEM_SDK_ROOTS)
    if gcloud:  # <sdk>/bin/gcloud, often reached through a symlink
        roots.insert(0, Path(gcloud).resolve().parent.parent)
    for root in roots:
        candidate = root / SDK_LAUNCHER
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return Launcher("sdk", str(candidate))
    return Launcher("gcloud", gcloud) if gcloud else None


class PubSubEmulator:
    """The Pub/Sub emulator on 127.0.0.1, in a child process (its own process group).

    Use it as a context manager::

        with PubSubEmulator() as emulator:
            queue = open_queue(f"pubsub://{emulator.project}/jobs",
                               emulator_host=emulator.host_port, create=True)

    Args:
        port: Port to listen on; a free one by default.
        project: The project id that tests use (the emulator accepts any).
        launcher: How to start it; found with :func:`find_launcher` by default.
        start_timeout: Seconds to wait for it to answer (the JVM takes a few).

    Raises:
        RuntimeError: From :meth:`start`, if no emulator is installed or it exits at start
            (the message includes the end of its output).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        project: str = DEFAULT_PROJECT,
        launcher: Launcher | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.project = project
        self.launcher = launcher
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def host_port(self) -> str:
        """``host:port``, the value of ``PUBSUB_EMULATOR_HOST`` or ``emulator_host=``."""
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point google-cloud-pubsub at this emulator."""
        return {"PUBSUB_EMULATOR_HOST": self.host_port, "PUBSUB_PROJECT_ID": self.project}

    def start(self) -> PubSubEmulator:
        """Start the emulator and wait until it answers."""
        launcher = self.launcher or find_launcher()
        if launcher is None:
            raise RuntimeError(
                "the Pub/Sub emulator is not installed: run `gcloud components install "
                "pubsub-emulator`, or `apt-get install google-cloud-cli-pubsub-emulator` from "
                "Google's apt repository (it needs Java)"
            )
        self.launcher = launcher
        command = launcher.command(self.host, self.port)
        logger.info("starting Pub/Sub emulator (%s) on %s", launcher.kind, self.host_port)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the launcher starts java: stop the whole group
        )
        try:
            wait_for_http(f"http://{self.host_port}/", self.start_timeout, self._proc)
        except (RuntimeError, TimeoutError) as exc:
            output = self._output_tail()
            self.stop()
            raise RuntimeError(f"Pub/Sub emulator ({' '.join(command)}): {exc}; {output}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def _output_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return "no output"
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip()
        return f"its output ends: {text[-limit:]}" if text else "no output"

    def stop(self) -> None:
        """Stop the emulator and its JVM (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # a JVM left behind by the launcher
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
