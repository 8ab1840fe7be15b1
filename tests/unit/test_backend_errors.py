"""One-line errors, in seconds, when a cloud backend is down or has no credentials.

Each "down" case opens a backend against a real closed port on 127.0.0.1. (The Pub/Sub emulator's
case is in test_pubsub_queue.py, RabbitMQ's in tests/integration/test_amqp_broker.py, and
"the other backends still open" in tests/integration/test_backend_services.py.)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.errors import CredentialsError, ServiceUnavailable, SimpleTasksError
from simpletasks.queues import open_queue


def fails_fast(open_: Callable[[], Any], error: type[Exception]) -> str:
    """Open, expect ``error`` within 5 s, check it is one line; return its text."""
    start = time.monotonic()
    with pytest.raises(error) as info:
        open_()
    assert time.monotonic() - start < 5
    text = str(info.value)
    assert "\n" not in text and isinstance(info.value, SimpleTasksError)
    error = info.value  # no chained library traceback behind the one line
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return text


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.mark.parametrize(
    ("url", "service"), [("sqs://jobs", "SQS"), ("s3://data", "S3")], ids=["sqs", "s3"]
)
def test_aws_endpoint_down_is_reported_in_seconds(closed_port: int, url: str, service: str) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}"
    opener = open_queue if url.startswith("sqs") else open_bucket
    text = fails_fast(lambda: opener(url, endpoint_url=endpoint), ServiceUnavailable)
    assert text.startswith(f"cannot reach {service} at {endpoint} for {url}: connection refused")
    assert "AWS_ENDPOINT_URL" in text and "simpletasks local --stack" in text


@pytest.mark.parametrize("url", ["sqs://jobs", "s3://data"])
def test_no_aws_credentials_says_how_to_provide_them(url: str, no_aws_credentials: None) -> None:
    opener = open_queue if url.startswith("sqs") else open_bucket
    with socket.create_server(("127.0.0.1", 0)) as listener:  # answers; signing fails first
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        text = fails_fast(lambda: opener(url, endpoint_url=endpoint), CredentialsError)
    assert text.startswith("no AWS credentials for ")
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE" in text


def test_gcs_without_credentials_says_how_to_provide_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("google.cloud.storage")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    text = fails_fast(lambda: open_bucket("gs://data"), CredentialsError)
    assert text.startswith("no Google credentials for GCS (File ")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in text and "STORAGE_EMULATOR_HOST" in text


def test_gcs_endpoint_down_is_reported_in_seconds(closed_port: int) -> None:
    pytest.importorskip("google.cloud.storage")
    from google.auth.credentials import AnonymousCredentials

    endpoint = f"http://127.0.0.1:{closed_port}"
    text = fails_fast(
        lambda: open_bucket(
            "gs://data", endpoint=endpoint, credentials=AnonymousCredentials(), project="p-1"
        ),
        ServiceUnavailable,
    )
    assert text.startswith(f"cannot reach GCS at {endpoint} for gs://data: connection refused")
