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

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from simpletasks.emulators import LocalService

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


class PubSubEmulator(LocalService):
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
        super().__init__(port, start_timeout=start_timeout)
        self.project = project
        self.launcher = launcher

    @property
    def host_port(self) -> str:
        """``host:port``, the value of ``PUBSUB_EMULATOR_HOST`` or ``emulator_host=``."""
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point google-cloud-pubsub at this emulator."""
        return {"PUBSUB_EMULATOR_HOST": self.host_port, "PUBSUB_PROJECT_ID": self.project}

    name = "Pub/Sub emulator"

    def command(self) -> list[str]:
        """The installed emulator's launcher on this host and port.

        Raises:
            RuntimeError: If no emulator is installed.
        """
        launcher = self.launcher or find_launcher()
        if launcher is None:
            raise RuntimeError(
                "the Pub/Sub emulator is not installed: run `gcloud components install "
                "pubsub-emulator`, or `apt-get install google-cloud-cli-pubsub-emulator` from "
                "Google's apt repository (it needs Java)"
            )
        self.launcher = launcher
        return launcher.command(self.host, self.port)

    def ready_url(self) -> str:
        """The emulator answers on its root once up."""
        return f"http://{self.host_port}/"
