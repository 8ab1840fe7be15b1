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
        #: The lowest delivery tag on the channel that is unacked but not leased (delivered
        #: to a consumer, not received yet), or None; set by the queue.
        self.unleased_floor: Callable[[], int | None] = lambda: None

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

    def ack_many(self, channel: Any, tags: list[int]) -> None:
        """Forget and ack held deliveries, with one ``multiple`` ack where they allow it.

        Every held tag below the lowest one *not* being acked (nor :attr:`unleased_floor`'s,
        the lowest delivery received on the channel but not leased yet) is acked by one
        ``basic.ack(multiple=True)`` on the highest of them; the rest one by one.
        """
        wanted = set(tags)
        limit = min((tag for tag in self._by_tag if tag not in wanted), default=None)
        floor = self.unleased_floor() if len(wanted) > 1 else None
        if floor is not None and (limit is None or floor < limit):
            limit = floor
        prefix = sorted(tag for tag in wanted if limit is None or tag < limit)
        if len(prefix) > 1:
            for tag in prefix:
                del self._by_tag[tag]
            channel.basic_ack(prefix[-1], multiple=True)
            wanted.difference_update(prefix)
        for tag in sorted(wanted):
            self.ack(channel, tag)

    def ack_all(self, channel: Any) -> None:
        """Ack every held delivery (``purge``)."""
        self.ack_many(channel, list(self._by_tag))

    def clear(self) -> int:
        """Forget every lease (the broker requeues them with the connection); return how many."""
        count = len(self._by_tag)
        self._by_tag.clear()
        return count

    def expire(self, channel: Any, publisher: Any) -> None:
        """Hand back every message whose lease has run out."""
        now = self.clock()
        expired = [tag for tag, lease in self._by_tag.items() if lease.until <= now]
        if expired:
            self.hand_back(channel, publisher, expired)

    def hand_back(self, channel: Any, publisher: Any, tags: list[int]) -> None:
        """Make leased messages visible again as confirmed copies that carry their attempt.

        The copies are published as one confirmed batch (:class:`~._amqp.ConfirmPublisher`),
        then the deliveries are acked; a copy the broker did not take is requeued as it is.
        """
        leases = [self._by_tag[tag] for tag in tags]
        items = [copy_of(lease.message, lease.properties, lease.body) for lease in leases]
        failed = publisher.publish(self.queue_name, items)
        for index, tag in enumerate(tags):
            if index in failed:
                why = failed[index]
                logger.warning(
                    "%s: requeueing %s as it is: %s", self.url, leases[index].message.id, why
                )
                channel.basic_reject(tag, requeue=True)  # uncounted, but not lost
                del self._by_tag[tag]
        self.ack_many(channel, [tag for i, tag in enumerate(tags) if i not in failed])


def copy_of(message: Message, properties: Any, body: bytes, attempt: int | None = None) -> Any:
    """``(body, properties)`` of a copy of a delivery that carries ``attempt`` (default: its own).

    The next delivery of the copy counts ``attempt + 1``.
    """
    headers = dict(properties.headers or {})
    headers.pop("x-delivery-count", None)
    headers[ATTEMPT_HEADER] = message.attempt if attempt is None else attempt
    properties.headers, properties.message_id = headers, message.id
    return body, properties


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
