"""The RabbitMQ backend beyond the queue contract, against the broker on 127.0.0.1:5672.

Attempt counting, connection loss (through a TCP proxy the test cuts), login and
connection errors, threads, publisher confirms, and the daemon end to end. URL parsing is
in tests/unit/test_amqp_queue.py; the contract suite covers the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from tasktypes import FailTask

from simpletasks.buckets import open_bucket
from simpletasks.cache import FileSystemCache
from simpletasks.daemon import DaemonService
from simpletasks.datasource import BucketCacheDatasource
from simpletasks.errors import ConfigError
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import Message, QueueCounts, open_queue
from simpletasks.queues.amqp import (
    AMQPQueue,
    BrokerError,
    BrokerLoginRefused,
    BrokerUnavailable,
    PublishError,
)
from simpletasks.registry import TaskRegistry
from simpletasks.settings import DaemonSettings
from simpletasks.tasks.noop import NoOpTask, make_example_job


@pytest.fixture
def opened(rabbitmq_url: str) -> Iterator[Callable[..., AMQPQueue]]:
    """Open queues by name (``base=`` for another base URL); close and delete them afterwards."""
    queues: list[AMQPQueue] = []

    def open_(name: str, base: str = rabbitmq_url, **kwargs: Any) -> AMQPQueue:
        kwargs.setdefault("create", True)
        queue = AMQPQueue.from_url(f"{base}?queue={name}", **kwargs)
        queues.append(queue)
        return queue

    yield open_
    for queue in queues:
        queue.close()
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    for name in {queue.name for queue in queues}:
        channel.queue_delete(name)
    connection.close()


@pytest.fixture
def name() -> str:
    return f"amqp-{uuid.uuid4().hex[:12]}"


def receive_one(queue: AMQPQueue, lease: float = 60.0) -> Message:
    [message] = queue.receive(wait_seconds=3, lease_seconds=lease)
    return message


def test_open_queue_picks_the_amqp_backend(opened: Callable[..., AMQPQueue], name: str) -> None:
    queue = opened(name)
    assert isinstance(queue, AMQPQueue)
    again = open_queue(queue.url)
    assert isinstance(again, AMQPQueue) and again.name == name
    again.close()


def test_url_and_repr_mask_the_password(rabbitmq_url: str, name: str) -> None:
    url = rabbitmq_url.replace("amqp://", "amqp://guest:guest@") + f"?queue={name}"
    queue = AMQPQueue.from_url(url, create=True)
    try:
        assert queue.url == rabbitmq_url.replace("amqp://", "amqp://guest:***@") + f"?queue={name}"
        assert "guest:guest" not in repr(queue)
    finally:
        queue.delete()
        queue.close()


def test_missing_queue_without_create_says_so(
    opened: Callable[..., AMQPQueue], name: str, rabbitmq_url: str
) -> None:
    with pytest.raises(
        ConfigError, match=rf"queue '{name}' does not exist at amqp://.*pass create"
    ):
        opened(name, create=False)
    with pytest.raises(ConfigError, match="does not exist"):
        open_queue(f"{rabbitmq_url}?queue={name}")  # create=False is the default
    opened(name)  # create=True declares it
    assert opened(name, create=False).counts() == QueueCounts(visible=0, in_flight=0)


@pytest.mark.parametrize(
    ("base", "error", "match"),
    [
        (
            "amqp://guest:wrong-pw@127.0.0.1:5672/%2F",
            BrokerLoginRefused,
            r"^RabbitMQ at 127\.0\.0\.1:5672 refused the login of user 'guest' "
            r"\(amqp://guest:\*\*\*@127.*\): check the user and password in the URL",
        ),
        (
            "amqp://127.0.0.1:5672/no-such-vhost",
            BrokerLoginRefused,
            r"does not let user 'guest' use vhost 'no-such-vhost' .*: check the vhost in the URL",
        ),
        (
            "amqp://guest:wrong-pw@127.0.0.1:{closed}/%2F",
            BrokerUnavailable,
            r"^cannot connect to RabbitMQ at 127\.0\.0\.1:\d+ \(amqp://guest:\*\*\*@.*\): "
            r"connection refused\. Is the broker running",
        ),
    ],
)
def test_unreachable_broker_or_bad_login_says_so_once_without_the_password(
    closed_port: int,
    rabbitmq_url: str,
    base: str,
    error: type,
    match: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    start = time.monotonic()
    with pytest.raises(error, match=match) as info:
        AMQPQueue.from_url(base.format(closed=closed_port) + "?queue=x")
    assert time.monotonic() - start < 5
    assert isinstance(info.value, BrokerError)
    assert "\n" not in str(info.value)  # one line
    assert "wrong-pw" not in str(info.value) and "wrong-pw" not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    pika_errors = [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= 40]
    assert pika_errors == []  # pika's own ERROR lines are silenced; we said it once
    assert "wrong-pw" not in caplog.text


def test_an_existing_classic_queue_is_used_as_it_is(
    opened: Callable[..., AMQPQueue], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    classic = opened(name, arguments={"x-queue-type": "classic"})
    with pytest.raises(
        ConfigError, match=r"cannot declare amqp://.*: PRECONDITION_FAILED - inequivalent arg"
    ):
        opened(name, arguments={"x-max-length": 5})
    queue = opened(name)
    assert f"{queue.url} exists with other arguments" in caplog.text
    queue.send("x")
    first = receive_one(queue)
    queue.release(first)
    second = receive_one(queue, lease=0.2)
    time.sleep(0.4)
    third = receive_one(queue)  # hand-backs are counted on any queue type...
    queue.close()
    fourth = receive_one(classic)
    classic.close()  # ...but a classic queue only flags returns as redelivered, once
    fifth = receive_one(opened(name))
    assert [m.attempt for m in (first, second, third, fourth, fifth)] == [1, 2, 3, 4, 4]


def test_a_foreign_message_without_an_id_keeps_one_across_hand_backs(
    opened: Callable[..., AMQPQueue], name: str, rabbitmq_url: str
) -> None:
    queue = opened(name)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    connection.channel().basic_publish("", name, "café".encode() + b"\xff")
    connection.close()
    first = receive_one(queue)
    queue.release(first)
    second = receive_one(queue)
    assert (first.body, len(first.id)) == ("café\ufffd", 32)  # undecodable bytes replaced
    assert (second.id, second.body, second.attempt) == (first.id, first.body, 2)


def test_attempts_count_releases_expiries_delays_and_lost_connections(
    opened: Callable[..., AMQPQueue], name: str
) -> None:
    queue = opened(name)
    queue.send("task")
    first = receive_one(queue)
    queue.release(first)
    second = receive_one(queue, lease=0.3)  # let this lease run out
    time.sleep(0.5)
    third = receive_one(queue)
    queue.extend(third, 1.0)  # the daemon's retry delay: visible again in 1 s
    assert queue.receive(wait_seconds=0.3) == []
    fourth = receive_one(queue)
    queue.close()  # the broker requeues what a closed connection held
    fifth = receive_one(opened(name))
    messages = [first, second, third, fourth, fifth]
    assert [m.attempt for m in messages] == [1, 2, 3, 4, 5]
    assert {m.id for m in messages} == {first.id}


def test_in_flight_counts_only_this_objects_leases(
    opened: Callable[..., AMQPQueue], name: str
) -> None:
    holder, other = opened(name), opened(name)
    holder.send_batch(["a", "b"])
    receive_one(holder)
    assert holder.counts() == QueueCounts(visible=1, in_flight=1)
    assert other.counts() == QueueCounts(visible=1, in_flight=0)  # AMQP cannot tell more


def test_settling_another_objects_message_is_rejected(
    opened: Callable[..., AMQPQueue], name: str
) -> None:
    first, second = opened(name), opened(name)
    first.send("x")
    message = receive_one(first)
    with pytest.raises(ValueError, match="was received by another queue object"):
        second.ack(message)
    first.ack(message)


def test_purge_acks_messages_leased_here(opened: Callable[..., AMQPQueue], name: str) -> None:
    queue = opened(name)
    queue.send_batch(["a", "b"])
    held = receive_one(queue)
    queue.purge()
    queue.ack(held)  # stale now: ignored
    assert queue.counts() == QueueCounts(visible=0, in_flight=0)
    assert queue.receive(wait_seconds=0.3) == []


def test_a_closed_queue_says_so(opened: Callable[..., AMQPQueue], name: str) -> None:
    queue = opened(name)
    queue.close()
    with pytest.raises(BrokerError, match=r"amqp://.* is closed"):
        queue.send("x")


class CuttableProxy:
    """A TCP forwarder to the broker whose open connections the test can cut."""

    def __init__(self, port: int = 5672) -> None:
        self.target = ("127.0.0.1", port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection made so far, as a network failure would."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets.clear()

    def close(self) -> None:
        self.cut()
        with contextlib.suppress(OSError):  # wakes the accept() thread, stops listening
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()


@pytest.fixture
def proxy(rabbitmq_url: str) -> Iterator[CuttableProxy]:
    server = CuttableProxy()
    yield server
    server.close()


def test_messages_held_on_a_lost_connection_come_back(
    opened: Callable[..., AMQPQueue],
    name: str,
    proxy: CuttableProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    direct = opened(name)
    remote = opened(name, base=f"amqp://127.0.0.1:{proxy.port}/%2F")
    direct.send("held")
    held = receive_one(remote)
    proxy.cut()
    back = receive_one(direct)
    assert (back.id, back.body, back.attempt) == (held.id, "held", 2)
    with caplog.at_level(logging.WARNING):
        remote.ack(held)  # its lease went with the connection: ignored, not raised
        remote.extend(held, 10)
    assert f"ack of message {held.id} ignored" in caplog.text
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pika")] == []
    remote.send("after the cut")  # reconnects through the proxy
    direct.ack(back)
    assert receive_one(direct).body == "after the cut"
    assert remote.counts() == QueueCounts(visible=0, in_flight=0)


def test_a_cut_noticed_by_an_operation_is_retried_on_a_new_connection(
    opened: Callable[..., AMQPQueue], name: str, proxy: CuttableProxy, rabbitmq_url: str
) -> None:
    remote = opened(name, base=f"amqp://127.0.0.1:{proxy.port}/%2F")
    for _ in range(3):
        proxy.cut()
        remote.send("sent anyway")
    reader, bodies = opened(name), []
    deadline = time.monotonic() + 10
    while len(bodies) < 3 and time.monotonic() < deadline:  # a receive may return fewer
        bodies += [m.body for m in reader.receive(10, wait_seconds=1)]
    assert bodies == ["sent anyway"] * 3
    assert reader.receive(10, wait_seconds=0.5) == []  # and no more than three


def test_threads_share_one_queue_object(opened: Callable[..., AMQPQueue], name: str) -> None:
    queue = opened(name)
    bodies = [f"b{i}" for i in range(200)]
    got: list[str] = []
    errors: list[BaseException] = []

    def produce(part: list[str]) -> None:
        for i in range(0, len(part), 10):
            queue.send_batch(part[i : i + 10])

    def consume() -> None:
        try:
            deadline = time.monotonic() + 15
            while len(got) < len(bodies) and time.monotonic() < deadline:
                batch = queue.receive(5, wait_seconds=0.2, lease_seconds=30)
                for message in batch:
                    queue.extend(message, 30)
                got.extend(m.body for m in batch)
                queue.ack_many(batch)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(bodies[i::4],)) for i in range(4)]
    threads += [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert sorted(got) == sorted(bodies)
    assert queue.counts() == QueueCounts(visible=0, in_flight=0)


def test_a_nacked_publish_is_an_error(opened: Callable[..., AMQPQueue], name: str) -> None:
    queue = opened(name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    queue.send("a")
    # A quorum queue enforces its limit late: one batch (confirmed as a whole) may overshoot
    # it, and every publish after that is nacked.
    with contextlib.suppress(PublishError):
        queue.send_batch(["b", "c"])
    with pytest.raises(PublishError, match=r"body 0 not sent: the broker nacked it") as info:
        queue.send_batch(["d", "e", "f"])
    assert info.value.sent == 0
    with pytest.raises(PublishError, match="body 0 not sent: the broker nacked it"):
        queue.send("g")
    got = queue.receive(10, wait_seconds=1)
    assert [m.body for m in got][:1] == ["a"] and len(got) <= 3


def test_a_publish_to_a_deleted_queue_is_an_error(
    opened: Callable[..., AMQPQueue], name: str
) -> None:
    queue = opened(name)
    opened(name).delete()
    with pytest.raises(PublishError, match="body 0 not sent: it could not be routed"):
        queue.send("lost?")


def test_daemon_runs_tasks_from_rabbitmq(
    opened: Callable[..., AMQPQueue], name: str, tmp_path: Path
) -> None:
    tasks, errors, done = opened(name), opened(f"{name}-errors"), opened(f"{name}-done")
    bucket = open_bucket((tmp_path / "bucket").as_uri(), create=True)
    job = make_example_job(bucket, n_files=4)
    failing = TaskMessage(
        BasicInfo(99, "FAIL", "d"), {"phase": "execute", "log": str(tmp_path / "log"), "times": 1}
    )
    tasks.send_batch([t.to_json() for t in job] + [failing.to_json()])
    registry = TaskRegistry()
    registry.register(NoOpTask)
    registry.register(FailTask)
    daemon = DaemonService(
        queue=tasks,
        registry=registry,
        datasource=BucketCacheDatasource(bucket, FileSystemCache(tmp_path / "cache")),
        error_queue=errors,
        done_queue=done,
        settings=DaemonSettings(
            concurrency=2,
            lease_seconds=2,
            wait_seconds=0.1,
            poll_frequency_seconds=0.1,
            retry_delay_seconds=0.3,
            burst=True,
        ),
    )
    stats = daemon.run()
    assert (stats.received, stats.succeeded, stats.retried) == (5, 4, 1)
    reports: list[dict] = []
    deadline = time.monotonic() + 10
    while len(reports) < 4 and time.monotonic() < deadline:  # a receive may return fewer
        reports += [json.loads(m.body) for m in done.receive(10, wait_seconds=1)]
    assert sorted(r["task_id"] for r in reports) == [1, 2, 3, 99]
    assert [r["attempt"] for r in reports if r["task_id"] == 99] == [2]
    [error] = errors.receive(10, wait_seconds=1)
    assert json.loads(error.body)["attempt"] == 1
    assert len(list(bucket.list("datasets/noop_dataset/0_output/"))) == 4
    assert tasks.counts() == QueueCounts(visible=0, in_flight=0)


def test_a_broker_that_goes_away_is_reported_once_by_us_not_by_pika(
    opened: Callable[..., AMQPQueue],
    name: str,
    proxy: CuttableProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    queue = opened(name, base=f"amqp://127.0.0.1:{proxy.port}/%2F")
    queue.send("x")
    [held] = queue.receive(wait_seconds=2)
    proxy.close()  # the connection drops and nothing answers at that port any more
    time.sleep(0.3)  # the pump notices
    with pytest.raises(BrokerUnavailable, match=r"^cannot connect to RabbitMQ at 127\.0\.0\.1"):
        queue.receive()
    queue.ack(held)  # lost with the connection: a warning of ours
    pika_says = [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= 30]
    assert pika_says == []
    assert caplog.text.count(f"ack of message {held.id} ignored") == 1


# the consumer: prefetch window, multiple acks, batched confirms


def receive_all(queue: AMQPQueue, n: int) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        got += queue.receive(100, wait_seconds=0.5)
    return got


def test_acks_in_any_order_delete_exactly_those(
    opened: Callable[..., AMQPQueue], name: str
) -> None:
    queue = opened(name)
    queue.send_batch([f"m{i}" for i in range(30)])
    got = receive_all(queue, 30)
    by_body = {m.body: m for m in got}
    assert sorted(by_body) == sorted(f"m{i}" for i in range(30))
    acked = ["m0", "m1", "m2", "m5", "m6", "m29", "m28", "m10"]
    queue.ack_many([by_body[b] for b in acked])  # a prefix (multiple ack), then singles
    queue.ack(by_body["m3"])
    queue.release(by_body["m4"])
    queue.close()  # the rest go back with the connection
    other = opened(name)
    left = receive_all(other, 30 - len(acked) - 1)
    assert sorted(m.body for m in left) == sorted(set(by_body) - set(acked) - {"m3"})
    assert other.receive(wait_seconds=0.3) == []
    # m4's hand-back keeps its attempt (1 + 1 for the next delivery); if the copy had come
    # back into this connection's buffer before the close, the broker counted more.
    assert {m.body: m.attempt for m in left}["m4"] >= 2


def test_close_returns_buffered_deliveries_once_each(
    opened: Callable[..., AMQPQueue], name: str
) -> None:
    queue = opened(name)
    queue.send_batch([f"m{i}" for i in range(50)])
    [first] = queue.receive(1, wait_seconds=2)
    [second] = queue.receive(1, wait_seconds=2)  # leases 1 + wants 1: the window grows to 2...
    more = queue.receive(40, wait_seconds=2)  # ...then to 52: deliveries wait in the buffer
    assert 1 <= len(more) <= 40
    assert queue.counts() == QueueCounts(visible=50 - 2 - len(more), in_flight=2 + len(more))
    queue.ack(first)
    queue.close()
    other = opened(name)
    back = receive_all(other, 49)
    time.sleep(0.2)
    back += other.receive(100, wait_seconds=0.2)  # a duplicate would show up here
    assert sorted(m.body for m in back) == sorted(f"m{i}" for i in range(1, 50))
    leased = {second.body, *(m.body for m in more)}
    # The broker counts a delivery for what was leased, and for what was buffered here if it
    # had reached this connection (it never ran, but RabbitMQ cannot tell).
    assert all(m.attempt == 2 for m in back if m.body in leased)
    assert all(m.attempt in (1, 2) for m in back)


def test_send_batch_of_many_arrives_whole_once_each(
    opened: Callable[..., AMQPQueue], name: str
) -> None:
    queue = opened(name)
    bodies = [f"b{i:04d}" for i in range(350)]  # 4 confirmed chunks
    queue.send_batch(bodies)
    got = receive_all(opened(name), 350)
    # Not in order: a basic.get may overtake deliveries still on their way to the consumer.
    assert sorted(m.body for m in got) == bodies
