"""Shared fixtures: real local endpoints for the backends, started by the tests.

A test that needs a service it cannot start skips on a laptop, but fails under ``CI=true``:
CI must never pass by skipping the backends it is there to check.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests_support import require_service

from simpletasks.emulators.moto import FAKE_AWS_ENV, MotoServer

# One module of fixtures per emulated service (each starts its service on 127.0.0.1).
pytest_plugins = ["plugins.gcp", "plugins.rabbitmq", "plugins.metadata"]


@pytest.fixture(scope="session", autouse=True)
def _fake_aws_credentials() -> Iterator[None]:
    """Never let a test reach real AWS with real credentials."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server (SQS + S3) on 127.0.0.1 for the whole test session."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        require_service(f"moto[server]/boto3 not installed ({exc.name})")
    try:
        server = MotoServer().start()
    except (RuntimeError, TimeoutError) as exc:
        require_service(f"moto server did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released): a backend that is down."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_configure(config: pytest.Config) -> None:
    """Let tests (and daemon subprocesses) import the test task types in tests/tasktypes.py."""
    import sys
    from pathlib import Path

    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)
