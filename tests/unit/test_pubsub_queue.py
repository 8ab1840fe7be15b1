"""Pub/Sub specifics that need no emulator: URL forms, missing credentials, an emulator that
is down (a closed port) or exits at start, and the gcloud launcher command.

Everything that needs the emulator is in tests/integration/test_pubsub_emulator.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from simpletasks.emulators.pubsub import Launcher, PubSubEmulator
from simpletasks.errors import ConfigError, CredentialsError, ServiceUnavailable
from simpletasks.queues import open_queue

try:
    from simpletasks.queues._pubsub_admin import parse_url
    from simpletasks.queues.pubsub import PubSubQueue
except ImportError as exc:  # skipped on a laptop without the gcp extra, fails under CI=true
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"google-cloud-pubsub not installed ({exc.name})", allow_module_level=True)

NO_NETWORK = "127.0.0.1:9"  # nothing listens there; URL errors must come before any call


def test_both_url_forms_parse() -> None:
    assert parse_url("pubsub://my-project/jobs") == ("my-project", "jobs", None)
    long = "pubsub://projects/my-project/topics/work/subscriptions/jobs"
    assert parse_url(long) == ("my-project", "jobs", "work")
    assert parse_url("pubsub://example.com:my-project/jobs")[0] == "example.com:my-project"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqs://jobs", "not a Pub/Sub queue URL: 'sqs://jobs' \\(expected pubsub://PROJECT/"),
        ("pubsub:/my-project/jobs", "not a Pub/Sub queue URL"),
        ("pubsub://", "must be pubsub://PROJECT/SUBSCRIPTION or pubsub://projects/P/topics/T/"),
        ("pubsub://my-project", "must be pubsub://PROJECT/SUBSCRIPTION or"),
        ("pubsub://my-project/", "must be pubsub://PROJECT/SUBSCRIPTION or"),
        ("pubsub://my-project/a/b", "must be pubsub://PROJECT/SUBSCRIPTION or"),
        ("pubsub://my-project/jobs?x=1", "with nothing else"),
        ("pubsub://projects/my-project/subscriptions/jobs", "with nothing else"),
        ("pubsub://projects/my-project/topics/work", "with nothing else"),
        ("pubsub://projects/my-project/topics/work/subscriptions/", "with nothing else"),
        ("pubsub://projects/p/topics/work/subscriptions/jobs/x", "with nothing else"),
        ("pubsub://My_Project/jobs", "project 'My_Project' in .* is invalid: use 6-30 lower"),
        ("pubsub://proj/jobs", "project 'proj' .* is invalid"),
        ("pubsub://my-project/ab", "subscription 'ab' .* is invalid: use 3-255 letters"),
        ("pubsub://my-project/googjobs", "subscription 'googjobs' .* not with 'goog'"),
        ("pubsub://my-project/1jobs", "subscription '1jobs' .* starting with a letter"),
        ("pubsub://projects/my-project/topics/w!/subscriptions/jobs", "topic 'w!' .* invalid"),
    ],
)
def test_bad_urls_are_rejected_before_any_call(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PubSubQueue.from_url(url, emulator_host=NO_NETWORK)


def test_a_topic_argument_that_contradicts_the_url_is_rejected() -> None:
    url = "pubsub://projects/my-project/topics/work/subscriptions/jobs"
    with pytest.raises(ConfigError, match="topic='other' contradicts the URL"):
        PubSubQueue.from_url(url, topic="other", emulator_host=NO_NETWORK)


def test_missing_credentials_say_how_to_provide_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(
        CredentialsError, match=r"no Google credentials for Pub/Sub .*emulator_host="
    ):
        PubSubQueue.from_url("pubsub://my-project/jobs")


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_an_emulator_that_is_down_is_reported_within_seconds(
    closed_port: int, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"127.0.0.1:{closed_port}"
    kwargs = {"emulator_host": address} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", address)
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable) as info:
        open_queue("pubsub://my-project/jobs", **kwargs)
    assert time.monotonic() - start < 5  # was a 45 s hang, then RetryError
    source = "emulator_host=" if how == "argument" else "PUBSUB_EMULATOR_HOST"
    assert str(info.value) == (
        f"the Pub/Sub emulator at {address} (from {source}) does not answer for "
        f"pubsub://my-project/jobs: connection refused; start it (`simpletasks local --stack`, "
        "or `gcloud beta emulators pubsub start --host-port=HOST:PORT`) or fix the address"
    )


def test_emulator_that_exits_at_start_reports_its_output() -> None:
    launcher = Launcher("path", "/bin/sh")  # `sh --host=... --port=...`: an invalid option
    with pytest.raises(RuntimeError, match=r"exited with code \d+ at start; its output ends:"):
        PubSubEmulator(launcher=launcher, start_timeout=10).start()


def test_gcloud_launcher_command() -> None:
    assert Launcher("gcloud", "/usr/bin/gcloud").command("127.0.0.1", 8085) == [
        "/usr/bin/gcloud",
        *("beta", "emulators", "pubsub", "start", "--quiet", "--host-port=127.0.0.1:8085"),
    ]
