"""Bulk enqueue per backend: `schedule()` vs the raw client's batch publish, in one run.

One run, every contender on a fresh queue of the same backend per round, rotated round by
round; ``--messages`` no-op task messages (built beforehand, the same JSON for everyone):

* **SQS** (a moto server started here): ``schedule(queue, tasks)`` (batches of 10 on 4
  threads) vs raw boto3 ``send_message_batch`` of 10 on 4 threads;
* **Pub/Sub** (the emulator started here): ``schedule`` (batches of 1,000) vs the official
  ``PublisherClient.publish`` of every message, then waiting for all futures (its own
  batching, the same ``BATCH_SETTINGS``: ``raw_publish``, the target's baseline), and, for
  reference, the generated (GAPIC) client's ``publish`` RPC with 1,000 messages a request
  (``raw_publish_requests``: what ``send_batch`` does, through the official client's
  proto-plus types);
* **RabbitMQ** (127.0.0.1:5672): ``schedule`` (batches of 100, confirmed once per batch) vs
  raw pika publishing batches of 100 persistent messages on a confirm channel and waiting for
  the confirms once per batch (``raw_confirm_batch``), and, for reference, without confirms
  (``raw_no_confirm``, which cannot tell a lost message).

Figures: messages/s (median), the median of per-round ratios ``schedule / raw``; target
>= 0.9; and the CPU time this process spent per message (all its threads; the broker or
emulator shares the machine, so CPU spent here is throughput lost there).

Usage::

    python benchmarks/enqueue.py                      # all three, 5 rounds of 2,000
    python benchmarks/enqueue.py --backend amqp --rounds 9
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _common import emit, machine_info, rotated, setup_logging, versions
from dispatch import TASK_NAME

from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.queues import open_queue
from simpletasks.scheduler import schedule

AMQP_BASE = "amqp://127.0.0.1:5672/%2F"
Runner = Callable[[list[str]], None]  # sends every body to a fresh queue


@contextlib.contextmanager
def sqs_bench() -> Iterator[dict[str, Runner]]:
    from simpletasks.emulators.moto import MotoServer

    with MotoServer() as moto:
        client = moto.client("sqs")

        def fresh() -> tuple[str, Any]:
            name = f"enq-{uuid.uuid4().hex[:8]}"
            url = client.create_queue(QueueName=name)["QueueUrl"]
            return url, open_queue(f"sqs://{name}", client=client)

        def ours(bodies: list[str]) -> None:
            _, queue = fresh()
            schedule(queue, bodies, threads=4)

        def raw(bodies: list[str]) -> None:
            url, _ = fresh()

            def send(start: int) -> None:
                entries = [
                    {"Id": str(i), "MessageBody": b}
                    for i, b in enumerate(bodies[start : start + 10])
                ]
                answer = client.send_message_batch(QueueUrl=url, Entries=entries)
                assert not answer.get("Failed"), answer["Failed"]

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(send, range(0, len(bodies), 10)))

        yield {"simpletasks_schedule": ours, "raw_send_message_batch": raw}


@contextlib.contextmanager
def pubsub_bench() -> Iterator[dict[str, Runner]]:
    import grpc
    from google.pubsub_v1 import PublisherClient as GapicPublisher
    from google.pubsub_v1 import PubsubMessage
    from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport

    from simpletasks.emulators.pubsub import PubSubEmulator
    from simpletasks.queues import _pubsub_admin as admin
    from simpletasks.queues.pubsub import PubSubQueue

    with PubSubEmulator() as emulator:
        subscriber, publisher = admin.make_clients(emulator.host_port)

        def fresh() -> PubSubQueue:
            name = f"enq-{uuid.uuid4().hex[:8]}"
            return PubSubQueue(
                emulator.project, name, subscriber=subscriber, publisher=publisher, create=True
            )

        def ours(bodies: list[str]) -> None:
            schedule(fresh(), bodies, threads=4)

        def raw(bodies: list[str]) -> None:
            topic = fresh().topic_path
            futures = [publisher.publish(topic, b.encode()) for b in bodies]
            for future in futures:
                future.result(timeout=120)

        def raw_requests(bodies: list[str]) -> None:
            topic = fresh().topic_path
            for start in range(0, len(bodies), 1000):
                messages = [PubsubMessage(data=b.encode()) for b in bodies[start : start + 1000]]
                answer = gapic.publish(topic=topic, messages=messages, timeout=120)
                assert len(answer.message_ids) == len(messages)

        gapic = GapicPublisher(
            transport=PublisherGrpcTransport(
                channel=grpc.insecure_channel(emulator.host_port), host=emulator.host_port
            )
        )
        try:
            yield {
                "simpletasks_schedule": ours,
                "raw_publish": raw,
                "raw_publish_requests": raw_requests,
            }
        finally:
            subscriber.close()
            publisher.stop()
            gapic.transport.close()


@contextlib.contextmanager
def amqp_bench() -> Iterator[dict[str, Runner]]:
    import pika

    from simpletasks.queues._amqp import ConfirmPublisher
    from simpletasks.queues.amqp import AMQPQueue

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_BASE))
    made: list[str] = []

    def fresh() -> AMQPQueue:
        name = f"enq-{uuid.uuid4().hex[:8]}"
        made.append(name)
        return AMQPQueue.from_url(f"{AMQP_BASE}?queue={name}", create=True)

    opened: list[AMQPQueue] = []

    def ours(bodies: list[str]) -> None:
        queue = fresh()
        opened.append(queue)  # closed after the run, as the raw contenders' channels
        schedule(queue, bodies, threads=4)

    def props() -> Any:
        return pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, message_id=uuid.uuid4().hex
        )

    def raw_confirm(bodies: list[str]) -> None:
        name = fresh().name
        publisher = ConfirmPublisher(connection.channel())
        for start in range(0, len(bodies), 100):
            items = [(b.encode(), props()) for b in bodies[start : start + 100]]
            assert not publisher.publish(name, items)

    def raw_no_confirm(bodies: list[str]) -> None:
        name = fresh().name
        channel = connection.channel()
        for body in bodies:
            channel.basic_publish("", name, body.encode(), props())
        channel.queue_declare(name, passive=True)  # a round trip: the broker has them all
        channel.close()

    try:
        yield {
            "simpletasks_schedule": ours,
            "raw_confirm_batch": raw_confirm,
            "raw_no_confirm": raw_no_confirm,
        }
    finally:
        for queue in opened:
            queue.close()
        channel = connection.channel()
        for name in made:
            channel.queue_delete(name)
        connection.close()


BENCHES = {"sqs": sqs_bench, "pubsub": pubsub_bench, "amqp": amqp_bench}


def run_backend(backend: str, bodies: list[str], rounds: int) -> dict[str, Any]:
    with BENCHES[backend]() as runners:
        names = list(runners)
        rates: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for name in names:  # warm-up
            runners[name](bodies[:200])
        for r in range(rounds):
            for name in rotated(names, r):
                start, start_cpu = time.perf_counter(), time.process_time()
                runners[name](bodies)
                rates[name].append(len(bodies) / (time.perf_counter() - start))
                cpu[name].append((time.process_time() - start_cpu) / len(bodies) * 1e6)
    out: dict[str, Any] = {
        name: {
            "rate_median": round(statistics.median(v)),
            "rates": [round(x) for x in v],
            # CPU of this process (all its threads; not the broker's or emulator's)
            "cpu_us_per_message_median": round(statistics.median(cpu[name]), 1),
        }
        for name, v in rates.items()
    }
    for base in (n for n in names if n.startswith("raw_")):
        ratios = [a / b for a, b in zip(rates["simpletasks_schedule"], rates[base], strict=True)]
        out[f"simpletasks_schedule/{base}"] = {
            "paired_median": round(statistics.median(ratios), 3),
            "paired": [round(x, 3) for x in ratios],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqs,pubsub,amqp")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    setup_logging()
    bodies = [TaskMessage(BasicInfo(i, TASK_NAME, "")).to_json() for i in range(args.messages)]
    result: dict[str, Any] = {
        "benchmark": "enqueue",
        "machine": machine_info(),
        "versions": {
            "python": sys.version.split()[0],
            **versions("simpletasks", "boto3", "moto", "google-cloud-pubsub", "pika"),
        },
        "parameters": {"rounds": args.rounds, "messages": args.messages},
    }
    for backend in args.backend.split(","):
        result[backend] = run_backend(backend, bodies, args.rounds)
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
