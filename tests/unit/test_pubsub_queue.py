"""Pub/Sub specifics that need no emulator: URL forms, missing credentials, an emulator that
is down (a closed port) or exits at start, the gcloud launcher command, and how a batch is
split into Publish requests and retried.

Everything that needs the emulator is in tests/integration/test_pubsub_emulator.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from simpletasks.emulators.pubsub import Launcher, PubSubEmulator
from simpletasks.errors import ConfigError, CredentialsError, ServiceUnavailable
from simpletasks.queues import open_queue

try:
    import grpc

    from simpletasks.queues._pubsub_admin import parse_url
    from simpletasks.queues._pubsub_publish import RawPublisher, _PublishRequest, _PublishResponse
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


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"{self._code.name.lower()} here"

    def trailing_metadata(self) -> None:
        return None


class _Channel:
    """A gRPC channel whose Publish answers from ``script`` (an error code, or None: stored)."""

    def __init__(self, *script: grpc.StatusCode | None) -> None:
        self.script = list(script)
        self.requests: list[Any] = []
        self.timeouts: list[float] = []

    def unary_unary(self, path: str, **_: Any) -> Any:
        assert path == "/google.pubsub.v1.Publisher/Publish"
        return self._publish

    def _publish(self, request: Any, *, timeout: float, metadata: Any) -> Any:
        assert metadata == (("x-goog-request-params", f"topic={request.topic}"),)
        self.requests.append(request)
        self.timeouts.append(timeout)
        code = self.script.pop(0) if self.script else None
        if code is not None:
            raise _RpcError(code)
        return _PublishResponse(message_ids=[str(i) for i in range(len(request.messages))])


def _raw(channel: _Channel, max_bytes: int = 10_000_000) -> tuple[RawPublisher, list[float]]:
    publisher = RawPublisher(channel, max_bytes)  # type: ignore[arg-type]
    pauses: list[float] = []
    publisher.sleep = pauses.append
    return publisher, pauses


def test_a_batch_is_published_in_requests_of_at_most_1000_messages() -> None:
    channel = _Channel()
    payloads = [f"m{i}".encode() for i in range(2500)]
    assert _raw(channel)[0].publish("projects/p/topics/t", payloads, 120) == []
    sent = [[m.data for m in r.messages] for r in channel.requests]
    assert [len(r) for r in sent] == [1000, 1000, 500]
    assert [data for r in sent for data in r] == payloads  # in order, each once


@pytest.mark.parametrize(
    ("size", "limit"),
    [(1, 60), (1, 100), (100, 1000), (125, 666), (126, 675), (127, 1000), (128, 1000), (300, 999)],
)
def test_requests_stay_within_the_byte_limit_and_are_filled(size: int, limit: int) -> None:
    channel = _Channel()
    payloads = [bytes([97 + i % 26]) * size for i in range(40)]
    _raw(channel, limit)[0].publish("projects/p/topics/t", payloads, 120)
    sizes = [r.ByteSize() for r in channel.requests]
    assert all(n <= limit for n in sizes)
    one_more = [
        _PublishRequest(topic=r.topic, messages=[*r.messages, r.messages[0]]).ByteSize()
        for r in channel.requests[:-1]
    ]
    assert all(n > limit for n in one_more)  # a request was cut only when the next did not fit
    assert sum(len(r.messages) for r in channel.requests) == 40


def test_transient_errors_are_retried_with_backoff() -> None:
    unavailable = grpc.StatusCode.UNAVAILABLE
    channel = _Channel(unavailable, unavailable, None)
    publisher, pauses = _raw(channel)
    assert publisher.publish("projects/p/topics/t", [b"a", b"b"], 120) == []
    assert pauses == [0.1, 0.4] and len(channel.requests) == 3
    assert all(0 < t <= 60 for t in channel.timeouts)


def test_a_failed_request_lists_its_messages_and_the_others_are_sent() -> None:
    channel = _Channel(grpc.StatusCode.NOT_FOUND)  # not retried; the second request is sent
    publisher, pauses = _raw(channel)
    failures = publisher.publish("projects/p/topics/t", [b"x"] * 1500, 120)
    assert [i for i, _, _ in failures] == list(range(1000))
    assert failures[0][1:] == ("NotFound", "404 not_found here")
    assert pauses == [] and len(channel.requests) == 2


def test_retries_stop_at_the_deadline() -> None:
    channel = _Channel(*[grpc.StatusCode.UNAVAILABLE] * 100)
    publisher, pauses = _raw(channel)
    failures = publisher.publish("projects/p/topics/t", [b"a"], 0.05)  # shorter than a pause
    assert failures == [(0, "ServiceUnavailable", "503 unavailable here")]
    assert pauses == [] and len(channel.requests) == 1


def test_only_a_plain_publisher_client_is_published_to_raw() -> None:
    assert RawPublisher.of(object(), 1000) is None


def test_a_client_with_its_own_connection_on_the_real_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A reconnect needs a connection that earlier clients do not share: gRPC pools the
    # connections of channels with the same target and options process-wide.
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

    from simpletasks.queues._pubsub_admin import OWN_CONNECTION, make_client

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "p"))
    seen: list[list[Any]] = []
    real_create = SubscriberGrpcTransport.create_channel

    def create_channel(*args: Any, options: list[Any], **rest: Any) -> Any:
        seen.append(options)
        return real_create(*args, options=options, **rest)

    monkeypatch.setattr(SubscriberGrpcTransport, "create_channel", create_channel)
    make_client("subscriber").close()
    make_client("subscriber", own_connection=True).close()
    shared, own = seen
    assert not set(OWN_CONNECTION) & set(shared)
    assert own == shared + OWN_CONNECTION  # the library's options kept (keepalive, sizes)
