"""Local stand-ins for cloud services, started on 127.0.0.1 for tests and ``simpletasks local``.

One module per service, each a class usable as a context manager that starts the service in
a child process on a free loopback port and stops it on exit:
:class:`~simpletasks.emulators.moto.MotoServer` (SQS and S3),
:class:`~simpletasks.emulators.gcs.FakeGcsServer` (GCS) and
:class:`~simpletasks.emulators.pubsub.PubSubEmulator` (Pub/Sub), all :class:`LocalService`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import IO, Self

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers any HTTP status, or raise ``TimeoutError``.

    Raises:
        RuntimeError: If ``proc`` exits while we wait.
        TimeoutError: If nothing answers within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} at start")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered at {url} within {timeout:.0f} s") from None
            time.sleep(0.05)


class LocalService:
    """A service in a child process on 127.0.0.1, with its own process group.

    Subclasses say how to start it (:meth:`command`) and where it answers once ready
    (:meth:`ready_url`). :meth:`start` waits for that; :meth:`stop` ends the whole process
    group (launchers such as the Pub/Sub emulator's start a JVM of their own). Use it as a
    context manager.

    Args:
        port: Port to listen on; a free one by default.
        start_timeout: Seconds to wait for the service to answer.
    """

    #: Name used in logs and errors.
    name = "service"

    def __init__(self, port: int | None = None, *, start_timeout: float = 30.0) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts the service on ``self.host:self.port``."""
        raise NotImplementedError

    def ready_url(self) -> str:
        """A URL that answers (any HTTP status) once the service is ready."""
        raise NotImplementedError

    def child_env(self) -> dict[str, str] | None:
        """The child's environment (``None``: inherit ours)."""
        return None

    def start(self) -> Self:
        """Start the service and wait until it answers.

        Raises:
            RuntimeError: If it exits at start (the message ends with its output).
            TimeoutError: If it does not answer within ``start_timeout``.
        """
        command = self.command()
        logger.info("starting %s on %s:%d", self.name, self.host, self.port)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.child_env(),
            start_new_session=True,
        )
        try:
            wait_for_http(self.ready_url(), self.start_timeout, self._proc)
        except (RuntimeError, TimeoutError) as exc:
            output = self._output_tail()
            self.stop()
            raise type(exc)(f"{self.name} ({' '.join(command)}): {exc}; {output}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the service and everything it started (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # anything the launcher left behind
        if self._log is not None:
            self._log.close()
            self._log = None

    def _output_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return "no output"
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip()
        return f"its output ends: {text[-limit:]}" if text else "no output"

    def __enter__(self) -> Self:
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
