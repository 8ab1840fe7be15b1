"""Pub/Sub specifics on the official emulator (the shared contract is in tests/contract).

Topic lookup, ack deadlines, attempt counting, publish failures, purge, the emulator
launcher, and the daemon end to end on Pub/Sub. URL parsing is in
tests/unit/test_pubsub_queue.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from simpletasks.buckets import open_bucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.emulators.pubsub import PubSubEmulator, find_launcher
from simpletasks.errors import ConfigError
from simpletasks.queues import Message, QueueCounts, QueueService, open_queue
from simpletasks.registry import TaskRegistry
from simpletasks.scheduler import schedule
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.noop import NoOpTask, make_example_job

try:
    from google.api_core import exceptions as gexc

    from simpletasks.queues._pubsub_admin import make_clients
    from simpletasks.queues.pubsub import PublishError, PubSubQueue
except ImportError as exc:  # skipped on a laptop without the gcp extra, fails under CI=true
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"google-cloud-pubsub not installed ({exc.name})", allow_module_level=True)

NO_NETWORK = "127.0.0.1:9"  # nothing listens there; URL errors must come before any call


@pytest.fixture
def clients(pubsub_emulator: PubSubEmulator) -> Iterator[tuple[Any, Any]]:
    """A (subscriber, publisher) pair on the emulator."""
    subscriber, publisher = make_clients(pubsub_emulator.host_port)
    yield subscriber, publisher
    publisher.stop()
    subscriber.close()


@pytest.fixture
def opened(pubsub_emulator: PubSubEmulator) -> Iterator[list[PubSubQueue]]:
    """Queues a test opened: closed, and their subscriptions and topics deleted, afterwards."""
    queues: list[PubSubQueue] = []
    yield queues
    for queue in queues:
        with contextlib.suppress(gexc.NotFound):
            queue.delete(topic=True)
        queue.close()


def fresh(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make(
    emulator: PubSubEmulator, opened: list[PubSubQueue], name: str | None = None, **kwargs: Any
) -> PubSubQueue:
    queue = PubSubQueue(
        emulator.project, name or fresh(), emulator_host=emulator.host_port, create=True, **kwargs
    )
    opened.append(queue)
    return queue


def one(queue: QueueService, **kwargs: Any) -> Message:
    [message] = queue.receive(wait_seconds=3, **kwargs)
    return message


def test_short_form_finds_the_topic_of_the_subscription(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    name, topic = fresh(), fresh("topic")
    make(pubsub_emulator, opened, name, topic=topic)
    queue = open_queue(
        f"pubsub://{pubsub_emulator.project}/{name}", emulator_host=pubsub_emulator.host_port
    )
    try:
        assert isinstance(queue, PubSubQueue)
        assert queue.topic_path == f"projects/{pubsub_emulator.project}/topics/{topic}"
        queue.send("via the looked-up topic")
        assert one(queue).body == "via the looked-up topic"
    finally:
        queue.close()


def test_long_form_checks_the_topic(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    name, topic, project = fresh(), fresh("topic"), pubsub_emulator.project
    make(pubsub_emulator, opened, name, topic=topic)
    url = f"pubsub://projects/{project}/topics/{topic}/subscriptions/{name}"
    queue = open_queue(url, emulator_host=pubsub_emulator.host_port)
    assert queue.url == url
    queue.close()
    wrong = f"pubsub://projects/{project}/topics/other-topic/subscriptions/{name}"
    with pytest.raises(ConfigError, match=rf"attached to projects/{project}/topics/{topic}, not"):
        open_queue(wrong, emulator_host=pubsub_emulator.host_port)


def test_opening_a_missing_subscription_says_so(pubsub_emulator: PubSubEmulator) -> None:
    url = f"pubsub://{pubsub_emulator.project}/{fresh()}"
    hint = f"create it with `simpletasks create {url}` or pass create=True"
    with pytest.raises(ConfigError, match=r"does not exist ") as info:
        open_queue(url, emulator_host=pubsub_emulator.host_port)
    assert str(info.value).endswith(hint)


def test_the_library_reads_pubsub_emulator_host_itself(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = make(pubsub_emulator, opened).subscription_path.rsplit("/", 1)[1]
    for key, value in pubsub_emulator.env().items():
        monkeypatch.setenv(key, value)
    queue = open_queue(f"pubsub://{pubsub_emulator.project}/{name}")
    queue.send("env")
    assert one(queue).body == "env"
    queue.close()


def test_create_clamps_the_ack_deadline_and_checks_dead_letter_attempts(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    assert make(pubsub_emulator, opened, ack_deadline_seconds=3).ack_deadline_seconds == 10
    assert make(pubsub_emulator, opened, ack_deadline_seconds=5000).ack_deadline_seconds == 600
    with pytest.raises(ConfigError, match="dead_letter_attempts must be 5-100, got 3"):
        make(pubsub_emulator, [], dead_letter_attempts=3)


def test_leases_over_ten_minutes_are_rejected(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    queue = make(pubsub_emulator, opened)
    with pytest.raises(ValueError, match=r"at most 600 \(10 min\) on Pub/Sub, got 601"):
        queue.receive(lease_seconds=601)
    queue.send("x")
    message = one(queue, lease_seconds=600)
    with pytest.raises(ValueError, match=r"at most 600 .* got 900"):
        queue.extend(message, 900)
    queue.ack(message)


class CountingSubscriber:
    """A real subscriber client that counts ModifyAckDeadline calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.modified: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def modify_ack_deadline(self, **kwargs: Any) -> None:
        self.modified.append(kwargs["ack_deadline_seconds"])
        self._client.modify_ack_deadline(**kwargs)


def test_receive_changes_the_deadline_only_when_the_lease_differs(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue], clients: tuple[Any, Any]
) -> None:
    name = make(pubsub_emulator, opened, ack_deadline_seconds=20).subscription_path.split("/")[-1]
    spy = CountingSubscriber(clients[0])
    queue = PubSubQueue(pubsub_emulator.project, name, subscriber=spy, publisher=clients[1])
    queue.send_batch(["a", "b"])
    first = queue.receive(wait_seconds=3, lease_seconds=20)
    assert spy.modified == []
    rest = queue.receive(wait_seconds=3, lease_seconds=2.5)
    assert spy.modified == [3]  # rounded up to whole seconds
    queue.ack_many(first + rest)


def test_an_empty_receive_pulls_again_until_wait_seconds_passed(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    queue = make(pubsub_emulator, opened)  # the emulator answers long empty pulls early
    start = time.monotonic()
    assert queue.receive(wait_seconds=2.5) == []
    assert 2.5 <= time.monotonic() - start < 3.5


def test_attempts_come_from_pubsub_with_a_dead_letter_policy(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    first = make(pubsub_emulator, opened)
    assert first.counts_attempts
    other = PubSubQueue.from_url(first.url, emulator_host=pubsub_emulator.host_port)
    opened.append(other)  # another daemon, as far as attempts go
    first.send("retry me")
    message = one(first)
    first.release(message)
    again = one(other)
    assert (again.id, again.attempt) == (message.id, 2)
    other.ack(again)


def test_without_a_dead_letter_policy_this_queue_counts_attempts(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    queue = make(pubsub_emulator, opened, dead_letter_attempts=None)
    assert not queue.counts_attempts
    queue.send("retry me")
    attempts = []
    for _ in range(3):
        message = one(queue)
        attempts.append(message.attempt)
        queue.release(message)
    other = PubSubQueue.from_url(queue.url, emulator_host=pubsub_emulator.host_port)
    opened.append(other)
    assert attempts == [1, 2, 3]
    assert one(other).attempt == 1  # counted per process (per queue object)


def test_acked_messages_are_forgotten_by_the_attempt_count(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    queue = make(pubsub_emulator, opened, dead_letter_attempts=None)
    queue.send("once")
    queue.ack(one(queue))
    assert queue._attempts == {}


class FailingPublisher:
    """A real publisher client whose publishes of chosen bodies fail without being sent."""

    def __init__(self, client: Any, fail: set[bytes]) -> None:
        self._client = client
        self.fail = fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def publish(self, topic: str, data: bytes) -> Future:
        if data in self.fail:
            future: Future = Future()
            future.set_exception(gexc.ServiceUnavailable("try again"))
            return future
        return self._client.publish(topic, data)


def test_send_batch_reports_every_body_it_could_not_publish(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue], clients: tuple[Any, Any]
) -> None:
    name = make(pubsub_emulator, opened).subscription_path.split("/")[-1]
    flaky = FailingPublisher(clients[1], {b"b2", b"b5"})
    queue = PubSubQueue(pubsub_emulator.project, name, subscriber=clients[0], publisher=flaky)
    with pytest.raises(PublishError, match=r"2 of 8 messages were not published to") as info:
        queue.send_batch([f"b{i}" for i in range(8)])
    error = ("ServiceUnavailable", "503 try again")
    assert info.value.failures == [(2, *error), (5, *error)]
    assert info.value.failed_indexes == [2, 5]
    got: list[Message] = []
    while batch := queue.receive(10, wait_seconds=1):
        got += batch
        queue.ack_many(batch)
    assert sorted(m.body for m in got) == [f"b{i}" for i in range(8) if i not in (2, 5)]
    with pytest.raises(PublishError, match=r"1 of 1 messages .*\[0\]: ServiceUnavailable"):
        queue.send("b2")


def test_publishing_to_a_deleted_topic_raises(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue], clients: tuple[Any, Any]
) -> None:
    queue = make(pubsub_emulator, opened)
    clients[1].delete_topic(topic=queue.topic_path)
    with pytest.raises(PublishError, match=r"3 of 3 messages were not published .*NotFound"):
        queue.send_batch(["a", "b", "c"])


def test_bodies_larger_than_a_publish_request_are_rejected(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    queue = make(pubsub_emulator, opened)
    too_big = queue.capabilities.max_body_bytes + 1
    with pytest.raises(ValueError, match=rf"bodies\[1\] is {too_big} bytes of UTF-8; a Pub/Sub"):
        queue.send_batch(["fine", "x" * too_big])
    assert queue.receive(wait_seconds=0.5) == []


def test_bodies_that_are_not_utf8_are_received_with_replacement_characters(
    pubsub_emulator: PubSubEmulator,
    opened: list[PubSubQueue],
    clients: tuple[Any, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = make(pubsub_emulator, opened)
    clients[1].publish(queue.topic_path, b"ok \xff").result()
    with caplog.at_level(logging.WARNING):
        message = one(queue)
    assert message.body == "ok \ufffd"
    assert "is not UTF-8" in caplog.text
    queue.ack(message)


def test_a_message_of_another_subscription_is_rejected(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]
) -> None:
    first, second = make(pubsub_emulator, opened), make(pubsub_emulator, opened)
    first.send("x")
    message = one(first)
    with pytest.raises(ValueError, match=rf"received from {first.subscription_path}, not from"):
        second.ack(message)
    first.ack(message)


def test_counts_are_unknown(pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue]) -> None:
    assert make(pubsub_emulator, opened).counts() == QueueCounts(visible=None, in_flight=None)


def test_purge_falls_back_to_pulling_when_seek_is_refused(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue], clients: tuple[Any, Any]
) -> None:
    class NoSeek(CountingSubscriber):
        def seek(self, **kwargs: Any) -> None:
            raise gexc.MethodNotImplemented("seek")

    name = make(pubsub_emulator, opened).subscription_path.split("/")[-1]
    queue = PubSubQueue(
        pubsub_emulator.project, name, subscriber=NoSeek(clients[0]), publisher=clients[1]
    )
    queue.send_batch([str(i) for i in range(25)])
    queue.purge()
    assert queue.receive(wait_seconds=0.5) == []


def test_close_leaves_injected_clients_open(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue], clients: tuple[Any, Any]
) -> None:
    name = make(pubsub_emulator, opened).subscription_path.split("/")[-1]
    subscriber, publisher = clients
    PubSubQueue(pubsub_emulator.project, name, subscriber=subscriber, publisher=publisher).close()
    queue = PubSubQueue(pubsub_emulator.project, name, subscriber=subscriber, publisher=publisher)
    queue.send("still open")
    queue.ack(one(queue))
    queue.close()
    queue.close()  # idempotent


def test_emulator_env_points_the_client_at_it(pubsub_emulator: PubSubEmulator) -> None:
    assert pubsub_emulator.env() == {
        "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{pubsub_emulator.port}",
        "PUBSUB_PROJECT_ID": pubsub_emulator.project,
    }
    assert pubsub_emulator.launcher is not None
    assert pubsub_emulator.launcher.kind in ("path", "sdk", "gcloud")
    assert find_launcher() == pubsub_emulator.launcher


def test_stop_ends_the_whole_process_group(pubsub_emulator: PubSubEmulator) -> None:
    emulator = PubSubEmulator(launcher=pubsub_emulator.launcher).start()
    pgid = emulator._proc.pid if emulator._proc else 0
    emulator.stop()
    emulator.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # signal 0: is any process of the group left?


def test_daemon_runs_the_noop_job_on_pubsub_until_drained(
    pubsub_emulator: PubSubEmulator, opened: list[PubSubQueue], tmp_path: Path
) -> None:
    tasks_q, errors_q, done_q = (make(pubsub_emulator, opened) for _ in range(3))
    bucket = open_bucket((tmp_path / "bucket").as_uri(), create=True)
    job = make_example_job(bucket)
    schedule(tasks_q, job)
    registry = TaskRegistry()
    registry.register(NoOpTask)
    daemon = DaemonService(
        queue=tasks_q,
        registry=registry,
        datasource=BucketCacheDatasource(bucket, FileSystemCache(tmp_path / "cache")),
        error_queue=errors_q,
        done_queue=done_q,
        settings=DaemonSettings(
            concurrency=2, wait_seconds=1, burst=True, poll_frequency_seconds=0.2, lease_seconds=30
        ),
    )
    stats = daemon.run()
    assert (stats.received, stats.succeeded, stats.dead_lettered) == (9, 9, 0)
    for task in job:
        for name in task.basic_info.inputs:
            out = io.BytesIO()
            bucket.download_fileobj(task.basic_info.key(f"0_output/{Path(name).name}"), out)
            assert out.getvalue() == f"input file {Path(name).stem}\n".encode()
    done = []
    while batch := done_q.receive(10, wait_seconds=1):
        done += [json.loads(m.body) for m in batch]
        done_q.ack_many(batch)
    assert sorted(d["task_id"] for d in done) == list(range(1, 10))
    assert errors_q.receive(wait_seconds=0.5) == []
    start = time.monotonic()
    assert tasks_q.receive(wait_seconds=1) == []  # everything was acked
    assert time.monotonic() - start >= 1
