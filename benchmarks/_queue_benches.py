"""Queue benches for ``dispatch_gcp_amqp.py``: Pub/Sub (emulator) and RabbitMQ sides.

Each bench knows its server (PID for CPU figures), makes fresh queues through the simpletasks
backend (:meth:`open`), fills them with :func:`fill` (timed), runs its raw client loops
(``raw``) and checks and deletes a queue after a run (:meth:`finish`). API calls of the
clients are counted and timed through a proxy (:class:`MethodCounter`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import CallCounter, Sample, child_pids, measure
from dispatch import TASK_NAME, verify

from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import QueueService
from simpletasks.scheduler import schedule

LEASE_SECONDS = 60  # also the subscriptions' ack deadline, so receive needs no ModifyAckDeadline
AMQP_BASE = "amqp://127.0.0.1:5672/%2F"
CONSUME_PREFETCH = 100
CONSUME_ACK_EVERY = 10
PUBSUB_METHODS = {"pull", "acknowledge", "modify_ack_deadline"}
AMQP_METHODS = {"basic_get", "basic_ack", "basic_publish", "queue_declare"}


class MethodCounter(CallCounter):
    """A :class:`CallCounter` for clients that are not boto3: it counts through a proxy.

    It also adds up the ``ack_ids`` of every counted call in :attr:`acked` (Pub/Sub).
    """

    def __init__(self) -> None:
        super().__init__()
        self.acked = 0

    def wrap(self, target: Any, methods: set[str]) -> Any:
        """Return a proxy of ``target`` whose ``methods`` are counted and timed."""
        return _Counted(target, self, methods)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        model = SimpleNamespace(name=name)
        self._before(model)
        try:
            yield
        finally:
            self._after(model)


class _Counted:
    def __init__(self, target: Any, counter: MethodCounter, methods: set[str]) -> None:
        self._target, self._counter, self._methods = target, counter, methods

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._methods:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._counter.timed(name):
                result = attr(*args, **kwargs)
            if name == "acknowledge":  # the client's keyword call or RawSubscriber's positional
                ack_ids = kwargs["ack_ids"] if "ack_ids" in kwargs else args[1]
                with self._counter._lock:
                    self._counter.acked += len(ack_ids)
            return result

        return call


Runner = Callable[[str, int], tuple[Sample, Any]]  # (queue name, n) -> (sample, queue)


class PubSubBench:
    """The Pub/Sub side: one emulator, one subscriber and one publisher client for all."""

    label = "pubsub"

    def __init__(self, emulator: Any, counter: MethodCounter, wait: float) -> None:
        from simpletasks.queues._pubsub_admin import make_clients

        self.emulator, self.counter, self.wait = emulator, counter, wait
        subscriber, self.publisher = make_clients(emulator.host_port)
        self.client = subscriber  # given to the queues, whose raw-protobuf calls are counted
        self.subscriber = counter.wrap(subscriber, PUBSUB_METHODS)
        pids = child_pids()
        self.server_pid = pids[0] if len(pids) == 1 else None
        self.fills: list[Sample] = []
        self.acked_before = 0  # counter.acked when the current contender's queue was opened
        self.raw: dict[str, Runner] = {
            "raw_pull100": partial(self.run_raw, 100),
            "raw_pull1000": partial(self.run_raw, 1000),
            "raw_streaming": self.run_streaming,
        }
        self.counts_acks = True  # False after a contender whose acks are not counted

    def open(self, name: str) -> QueueService:
        from simpletasks.queues.pubsub import PubSubQueue

        self.acked_before = self.counter.acked
        self.counts_acks = True
        queue = PubSubQueue(
            self.emulator.project,
            name,
            subscriber=self.client,
            publisher=self.publisher,
            create=True,
            ack_deadline_seconds=LEASE_SECONDS,
        )
        assert queue._raw is not None, "a real SubscriberClient gets the raw-protobuf calls"
        queue._raw = self.counter.wrap(queue._raw, PUBSUB_METHODS)
        return queue

    def run_raw(self, batch: int, name: str, n: int) -> tuple[Sample, Any]:
        """Baseline: pull ``batch``, acknowledge them all, until ``n`` are done."""
        queue = fill(self, name, n)
        sub, path = self.subscriber, queue.subscription_path
        with timed(self, n) as out:
            done = 0
            while done < n:
                got = sub.pull(
                    request={"subscription": path, "max_messages": batch},
                    timeout=self.wait,
                    retry=None,
                ).received_messages
                if got:
                    sub.acknowledge(subscription=path, ack_ids=[m.ack_id for m in got])
                    done += len(got)
        verify(done == n, f"raw pull got {done} of {n}")
        return out[0], queue

    def run_streaming(self, name: str, n: int) -> tuple[Sample, Any]:
        """Baseline: the official client's ``subscribe`` (StreamingPull) with flow control.

        The callback acks each message (the client sends acks in batches, in the
        background); the run ends when ``n`` callbacks have acked. Flow control allows
        1,000 outstanding messages (the client's default).
        """
        from google.cloud import pubsub_v1

        queue = fill(self, name, n)
        done = 0
        lock, finished = threading.Lock(), threading.Event()

        def callback(message: Any) -> None:
            nonlocal done
            message.ack()
            with lock:
                done += 1
                if done == n:
                    finished.set()

        flow = pubsub_v1.types.FlowControl(max_messages=1000)
        with timed(self, n) as out:
            future = self.client.subscribe(
                queue.subscription_path, callback=callback, flow_control=flow
            )
            finished.wait(60)
        future.cancel()
        with contextlib.suppress(Exception):
            future.result(timeout=10)
        verify(done >= n, f"streaming subscribe got {done} of {n}")
        self.counts_acks = False  # its acks go through the client's own dispatcher
        return out[0], queue

    def finish(self, queue: Any, name: str, n: int) -> None:
        """Check that all ``n`` were acked and none is left, then delete the subscription."""
        from google.api_core import exceptions as gexc

        from simpletasks.queues import _pubsub_admin as admin

        try:
            left = self.subscriber.pull(
                request={"subscription": queue.subscription_path, "max_messages": 100},
                timeout=0.5,
                retry=None,
            ).received_messages
        except gexc.DeadlineExceeded:
            left = []
        verify(not left, f"{len(left)} messages left on {queue.url}")
        acked = self.counter.acked - self.acked_before
        verify(not self.counts_acks or acked == n, f"{acked} of {n} acknowledged on {queue.url}")
        admin.delete(self.subscriber, self.publisher, queue.subscription_path, topics=True)
        queue.close()

    def close(self) -> None:
        self.subscriber.close()
        self.publisher.stop()


class AMQPBench:
    """The RabbitMQ side: the broker on 127.0.0.1:5672, an admin connection for checks."""

    label = "amqp"

    def __init__(self, counter: MethodCounter, wait: float, queue_type: str) -> None:
        import pika
        import pika.exceptions

        self.pika, self.counter, self.wait = pika, counter, wait
        self.arguments = None if queue_type == "quorum" else {"x-queue-type": queue_type}
        self.parameters = pika.URLParameters(AMQP_BASE)
        try:
            self.admin = pika.BlockingConnection(self.parameters)
        except pika.exceptions.AMQPConnectionError as exc:
            raise SystemExit(
                f"RabbitMQ does not answer at {AMQP_BASE} ({exc!r}); "
                "start it with: rabbitmq-server -detached"
            ) from None
        self.server_pid = find_pid("beam.smp")
        self.fills: list[Sample] = []
        self.raw: dict[str, Runner] = {
            "raw_get": self.run_get,
            "raw_consume": self.run_consume,
        }

    def open(self, name: str) -> QueueService:
        from simpletasks.queues.amqp import AMQPQueue

        url = f"{AMQP_BASE}?queue={name}"
        queue = AMQPQueue.from_url(url, create=True, arguments=self.arguments)
        with queue._lock:  # count the calls of the queue's own channel (made at declare)
            queue._channel = self.counter.wrap(queue._channel, AMQP_METHODS)
        return queue

    @contextlib.contextmanager
    def channel(self) -> Iterator[Any]:
        connection = self.pika.BlockingConnection(self.parameters)
        try:
            yield self.counter.wrap(connection.channel(), AMQP_METHODS)
        finally:
            connection.close()

    def run_get(self, name: str, n: int) -> tuple[Sample, Any]:
        """Baseline as the backend does it: ``basic_get`` and ``basic_ack`` per message."""
        fill(self, name, n).close()  # the raw loop uses a connection of its own
        with self.channel() as ch, timed(self, n) as out:
            done = 0
            while done < n:
                method, _, _ = ch.basic_get(name, auto_ack=False)
                if method is None:
                    time.sleep(0.001)
                    continue
                ch.basic_ack(method.delivery_tag)
                done += 1
        return out[0], None

    def run_consume(self, name: str, n: int) -> tuple[Sample, Any]:
        """Fastest raw consumer: prefetch 100, one multiple-ack per 10 messages."""
        fill(self, name, n).close()
        with self.channel() as ch, timed(self, n) as out:
            ch.basic_qos(prefetch_count=CONSUME_PREFETCH)
            deliveries = ch.consume(name, inactivity_timeout=self.wait + 4)
            for done, (method, _, _) in enumerate(deliveries, start=1):
                verify(method is not None, f"consumer idle after {done - 1} of {n}")
                if done % CONSUME_ACK_EVERY == 0 or done == n:
                    ch.basic_ack(method.delivery_tag, multiple=True)
                if done == n:
                    break
            ch.cancel()
        return out[0], None

    def finish(self, queue: Any, name: str, n: int) -> None:
        """Close the consumer's connection (requeues anything unacked), check, delete."""
        if queue is not None:
            queue.close()
        channel = self.admin.channel()
        left = channel.queue_declare(name, passive=True).method.message_count
        verify(left == 0, f"{left} messages left on RabbitMQ queue {name}")
        channel.queue_delete(name)
        channel.close()

    def close(self) -> None:
        self.admin.close()


Bench = PubSubBench | AMQPBench


def timed(bench: Bench, n: int) -> Any:
    """:func:`_common.measure` with the bench's server PID and call counter."""
    return measure(n, server_pid=bench.server_pid, counter=bench.counter)


def fill(bench: Bench, name: str, n: int) -> Any:
    """Create queue ``name``, send ``n`` task messages with ``schedule()`` (timed)."""
    queue = bench.open(name)
    tasks = [TaskMessage(BasicInfo(id=i, name=TASK_NAME, base_directory="")) for i in range(n)]
    with timed(bench, n) as out:
        sent = schedule(queue, tasks, threads=4)
    verify(sent == n, f"schedule() sent {sent} of {n}")
    bench.fills.append(out[0])
    return queue


def find_pid(comm: str) -> int | None:
    """The PID of the one process named ``comm`` (None if there are none or several)."""
    found = []
    for path in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if path.read_text().strip() == comm:
                found.append(int(path.parent.name))
    return found[0] if len(found) == 1 else None
