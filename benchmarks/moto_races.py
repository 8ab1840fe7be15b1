"""moto's SQS under concurrent clients: lost deletes and duplicate receives (no simpletasks).

Why SQS-on-moto runs in RELIABILITY.md show a few tasks that ran again after their daemon
had finished them and deleted the message: moto's server answers each request on its own
thread, and its SQS model (``moto/sqs/models.py``) changes a queue's message list without a
lock. ``Queue.delete_message`` rebuilds the list and assigns it back, so two concurrent
deletes can each undo the other's (a "successful" delete whose message reappears when its
visibility timeout ends), and ``receive_message`` can hand one visible message to two
concurrent receivers.

Two plain boto3 checks, with a visibility timeout of 600 s so that no lease can run out:

* ``lost_deletes``: receive every message once (one thread), then delete them all with
  ``DeleteMessageBatch`` from 8 threads; every delete succeeds, and the messages that are
  still on the queue afterwards are the lost deletes.
* ``duplicate_receives``: 8 threads receive-and-delete until the queue is empty; messages
  received more than once are duplicate deliveries.

Usage::

    python benchmarks/moto_races.py [--messages 1000] [--threads 8]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from typing import Any

from _common import emit, machine_info, setup_logging, versions

from simpletasks.emulators.moto import MotoServer

VISIBILITY = 600


def _fill(sqs: Any, name: str, n: int) -> str:
    url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    for i in range(0, n, 10):
        entries = [{"Id": str(j), "MessageBody": str(i + j)} for j in range(min(10, n - i))]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return url


def _left(sqs: Any, url: str) -> dict[str, int]:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return {
        "visible": int(attrs["ApproximateNumberOfMessages"]),
        "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    }


def _run(threads: int, target: Any) -> None:
    workers = [threading.Thread(target=target, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def lost_deletes(moto: MotoServer, n: int, threads: int) -> dict[str, Any]:
    """Delete ``n`` once-received messages from ``threads`` threads; count survivors."""
    sqs = moto.client("sqs")
    url = _fill(sqs, "lost-deletes", n)
    handles: list[str] = []
    while len(handles) < n:
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=VISIBILITY
        )
        handles += [m["ReceiptHandle"] for m in got.get("Messages", [])]
    chunks = [handles[i : i + 10] for i in range(0, n, 10)]
    failed: list[Any] = []

    def delete(k: int) -> None:
        client = moto.client("sqs")
        for chunk in chunks[k::threads]:
            entries = [{"Id": str(j), "ReceiptHandle": h} for j, h in enumerate(chunk)]
            failed.extend(
                client.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
            )

    _run(threads, delete)
    left = _left(sqs, url)
    return {"messages": n, "delete_failures": len(failed), "left_after_deleting_all": left}


def duplicate_receives(moto: MotoServer, n: int, threads: int) -> dict[str, Any]:
    """Receive-and-delete ``n`` messages from ``threads`` threads; count repeats."""
    sqs = moto.client("sqs")
    url = _fill(sqs, "duplicate-receives", n)
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def consume(k: int) -> None:
        client = moto.client("sqs")
        while True:
            got = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=VISIBILITY
            ).get("Messages", [])
            if not got:
                return
            with lock:
                seen.update(m["Body"] for m in got)
            entries = [
                {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(got)
            ]
            client.delete_message_batch(QueueUrl=url, Entries=entries)

    _run(threads, consume)
    return {
        "messages": n,
        "distinct_received": len(seen),
        "received_more_than_once": sum(1 for c in seen.values() if c > 1),
        "left": _left(sqs, url),
    }


def main(argv: list[str] | None = None) -> int:
    """Run both checks on a fresh moto server; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    setup_logging()
    with MotoServer() as moto:
        started = time.monotonic()
        result = {
            "scenario": "moto_races",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": machine_info(),
            "versions": versions("boto3", "moto"),
            "threads": args.threads,
            "lost_deletes": lost_deletes(moto, args.messages, args.threads),
            "duplicate_receives": duplicate_receives(moto, args.messages, args.threads),
        }
        result["seconds"] = round(time.monotonic() - started, 1)
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
