"""Leases of the RabbitMQ backend (:mod:`.amqp`): kept here, since RabbitMQ has none.

A received message stays unacked on the receiving channel; :class:`LeaseBook` records until
when it is leased. A lease that runs out, or a release, *hands the message back*: a copy is
published (same id, to the back of the queue, its attempt in :data:`ATTEMPT_HEADER`),
confirmed, and only then is the delivery acked, so a crash in between duplicates the message
and never loses it. :class:`Pump` is the thread that expires leases (and lets pika answer
broker heartbeats) every :data:`TICK_SECONDS`.

Threads: a ``LeaseBook`` is not locked itself. The queue object calls every method with its
own lock held (the pump thread through its ``tick``), as it does for every pika call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika.exceptions

from simpletasks.queues import Message

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.1  # how often the pump thread expires leases and serves heartbeats
ATTEMPT_HEADER = "x-simpletasks-attempt"  # on a handed-back copy: the attempt it ended


@dataclass(eq=False)
class Lease:
    """One leased delivery: what is needed to hand it back."""

    until: float  # on the book's clock
    message: Message
    properties: Any  # pika.BasicProperties of the delivery
    body: bytes


def attempt_of(properties: Any, redelivered: bool) -> int:
    """The attempt number of a delivery: its handed-back attempts plus the broker's returns.

    A quorum queue counts returns (connection losses) in ``x-delivery-count``; a classic
    queue only flags a return as ``redelivered`` (+1).
    """
    headers = properties.headers or {}
    returns = headers.get("x-delivery-count", int(redelivered))
    return int(headers.get(ATTEMPT_HEADER, 0)) + int(returns) + 1


class LeaseBook:
    """The leases held on one queue object's connection, by delivery tag.

    Args:
        queue_name: The queue that handed-back copies are published to.
        url: The queue's URL (password masked), for log lines.
        clock: Monotonic seconds (tests may inject one).
    """

    def __init__(
        self, queue_name: str, url: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.queue_name = queue_name
        self.url = url
        self.clock = clock
        self._by_tag: dict[int, Lease] = {}

    def __len__(self) -> int:
        return len(self._by_tag)

    def add(self, tag: int, message: Message, properties: Any, body: bytes, seconds: float) -> None:
        """Record a new delivery, leased for ``seconds`` from now."""
        self._by_tag[tag] = Lease(self.clock() + seconds, message, properties, body)

    def get(self, tag: int) -> Lease | None:
        """The lease of delivery ``tag``, or ``None`` if it ran out or was settled."""
        return self._by_tag.get(tag)

    def extend(self, tag: int, seconds: float) -> None:
        """Move the end of a held lease to ``seconds`` from now (no broker round trip)."""
        self._by_tag[tag].until = self.clock() + seconds

    def ack(self, channel: Any, tag: int) -> None:
        """Forget the lease and ack the delivery (the message is deleted)."""
        del self._by_tag[tag]
        channel.basic_ack(tag)

    def ack_all(self, channel: Any) -> None:
        """Ack every held delivery (``purge``)."""
        for tag in list(self._by_tag):
            self.ack(channel, tag)

    def clear(self) -> int:
        """Forget every lease (the broker requeues them with the connection); return how many."""
        count = len(self._by_tag)
        self._by_tag.clear()
        return count

    def expire(self, channel: Any) -> None:
        """Hand back every message whose lease has run out."""
        now = self.clock()
        for tag in [tag for tag, lease in self._by_tag.items() if lease.until <= now]:
            self.hand_back(channel, tag)

    def hand_back(self, channel: Any, tag: int) -> None:
        """Make a leased message visible again as a confirmed copy that carries its attempt."""
        lease = self._by_tag[tag]
        properties = lease.properties
        headers = dict(properties.headers or {})
        headers.pop("x-delivery-count", None)
        headers[ATTEMPT_HEADER] = lease.message.attempt
        properties.headers, properties.message_id = headers, lease.message.id
        try:
            channel.basic_publish("", self.queue_name, lease.body, properties, mandatory=True)
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
            logger.warning("%s: requeueing %s as it is: %r", self.url, lease.message.id, exc)
            channel.basic_reject(tag, requeue=True)  # uncounted, but not lost
        else:
            channel.basic_ack(tag)
        del self._by_tag[tag]


class Pump:
    """A daemon thread that calls ``tick`` every :data:`TICK_SECONDS` until ``closed`` is set.

    ``tick`` takes the queue's lock, expires leases and lets pika process heartbeats; an
    unexpected error in it is logged and the pump goes on.
    """

    def __init__(self, name: str, tick: Callable[[], None], closed: threading.Event) -> None:
        self._tick = tick
        self._closed = closed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Pump:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._closed.wait(TICK_SECONDS):
            try:
                self._tick()
            except Exception:
                logger.exception("%s: unexpected error in the lease pump", self._thread.name)

    def join(self) -> None:
        """Wait for the thread to end (after ``closed`` was set); a no-op from the pump itself."""
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join()
