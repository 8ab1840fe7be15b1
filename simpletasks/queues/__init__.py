"""Queue services: the small interface the daemon talks to, and ``open_queue(url)``.

A queue moves opaque text bodies. Receiving a message *leases* it: it stays invisible to
other receivers until the lease runs out, is extended, released or the message is acked.
Delivery is therefore at least once. Encoding and decoding task messages happens elsewhere
(:mod:`simpletasks.message`).

Backends, one module each, are picked by URL scheme: ``sqs://name``,
``pubsub://project/subscription``, ``amqp://host/vhost?queue=name``, ``file:///dir`` and
``mem://name``; more can be added with :func:`register_queue_backend`. What a backend can do
(batch size, longest lease, largest body, whether it counts) is its :attr:`capabilities`.

Batch operations (``ack_many``, ``extend_many``, ``send_batch``) try every entry and then
raise one :class:`~simpletasks.errors.BatchError` listing the entries that failed (by index);
every other entry went through. Settling a message whose lease was already lost is not a
failure: it is logged and ignored (``extend_many`` returns those messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from simpletasks.urls import QUEUE_BACKENDS, open_backend, register_queue_backend


@dataclass(frozen=True, init=False)
class Message:
    """One received message.

    Attributes:
        id: The backend's identifier of the message (stable across deliveries).
        body: The message text, exactly as sent.
        attempt: How many times the message has been received, this delivery included
            (1 on first delivery).
        handle: The backend's handle for this delivery (SQS receipt handle, lease token...).
            Pass the message back to ``ack``/``release``/``extend``; do not inspect it.
        sent_at: Unix time the message was sent, where the backend tells (metrics report the
            age of a message at receipt); ``None`` elsewhere.
    """

    id: str
    body: str
    attempt: int = 1
    handle: Any = field(default=None, repr=False, compare=False)
    sent_at: float | None = field(default=None, compare=False)

    def __init__(
        self,
        id: str,
        body: str,
        attempt: int = 1,
        handle: Any = None,
        sent_at: float | None = None,
    ) -> None:
        # Frozen fields go straight into the instance dict: what the generated __init__ does
        # through object.__setattr__, at half the cost (a backend builds one per message).
        fields = self.__dict__
        fields["id"] = id
        fields["body"] = body
        fields["attempt"] = attempt
        fields["handle"] = handle
        fields["sent_at"] = sent_at


@dataclass(frozen=True)
class QueueCounts:
    """Approximate message counts; ``None`` where the backend cannot tell."""

    visible: int | None
    in_flight: int | None


@dataclass(frozen=True)
class QueueCapabilities:
    """What a queue backend can do; the daemon reads these instead of assuming SQS.

    Attributes:
        max_batch: Most messages one ``receive`` (and one ack or send batch) may move.
        max_lease_seconds: Longest lease the backend grants (``None``: no limit).
        max_body_bytes: Largest message body in UTF-8 bytes (``None``: no limit).
        counts: Whether :meth:`QueueService.counts` knows the numbers.
        ordered: Delivery order is a priority that can change while messages wait (the
            in-process priority queue): the daemon then receives only for idle workers and
            never buffers messages locally, so stale low-priority work cannot run ahead of a
            newer urgent message.
    """

    max_batch: int = 10
    max_lease_seconds: float | None = None
    max_body_bytes: int | None = None
    counts: bool = True
    ordered: bool = False


@runtime_checkable
class ReportSink(Protocol):
    """What a report (error or done) queue needs: somewhere to send bodies to.

    Every :class:`QueueService` is one; so is any object with these three members.
    """

    url: str

    @property
    def capabilities(self) -> QueueCapabilities:
        """Read for ``max_body_bytes`` (reports are cut to fit)."""
        ...

    def send(self, body: str) -> None:
        """Enqueue one message."""
        ...


@runtime_checkable
class QueueService(Protocol):
    """What the daemon needs from a queue. Every backend implements exactly this."""

    url: str

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> QueueService:
        """Open the queue ``url`` names; with ``create``, create it first if missing.

        Raises:
            ConfigError: If the URL is malformed for this backend, or the queue does not
                exist and ``create`` is false.
        """
        ...

    @property
    def capabilities(self) -> QueueCapabilities:
        """What this backend can do (batch size, lease and body limits, counts)."""
        ...

    def receive(
        self, max_messages: int = 1, *, wait_seconds: float = 0.0, lease_seconds: float = 30.0
    ) -> list[Message]:
        """Lease up to ``max_messages`` messages, waiting up to ``wait_seconds`` for the first.

        Returns an empty list when nothing arrived in time.
        """
        ...

    def ack(self, message: Message) -> None:
        """Delete a received message for good."""
        ...

    def ack_many(self, messages: Sequence[Message]) -> None:
        """Delete several received messages, in as few round trips as the backend allows."""
        ...

    def release(self, message: Message) -> None:
        """Give the lease back: the message becomes visible to receivers at once."""
        ...

    def extend(self, message: Message, lease_seconds: float) -> None:
        """Set the message's lease to end ``lease_seconds`` from now."""
        ...

    def extend_many(self, messages: Sequence[Message], lease_seconds: float) -> list[Message]:
        """Set several messages' leases to end ``lease_seconds`` from now, in batches.

        Returns:
            The messages whose lease had already been lost (ran out, settled, or lost with
            a connection): they were not extended. Empty when every lease was extended.

        Raises:
            BatchError: If some could not be extended for another reason; its ``failures``
                list them by index and every other message was extended.
        """
        ...

    def send(self, body: str) -> None:
        """Enqueue one message."""
        ...

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Enqueue many messages, in as few round trips as the backend allows."""
        ...

    def counts(self) -> QueueCounts:
        """Return approximate visible and in-flight counts."""
        ...

    def purge(self) -> None:
        """Delete every message in the queue."""
        ...

    def close(self) -> None:
        """Release client resources. The queue must not be used afterwards."""
        ...


def open_queue(url: str, *, create: bool = False, **kwargs: Any) -> QueueService:
    """Open the queue that ``url`` names, choosing the backend by scheme.

    Args:
        url: ``sqs://name``, ``pubsub://project/subscription``,
            ``amqp://user:pass@host/vhost?queue=name``, ``file:///absolute/dir`` or
            ``mem://name`` (or a scheme added with :func:`register_queue_backend`).
        create: Create the queue if it does not exist (SQS queue, Pub/Sub topic and
            subscription, RabbitMQ queue, file queue directory). Without it a missing queue
            is an error that says how to create it.
        **kwargs: Passed to the backend's ``from_url`` (for example ``client=`` for SQS).

    Raises:
        UnsupportedScheme: For an unknown scheme (the message lists the known ones).
        MissingDependency: If the backend's optional package is missing.
        ConfigError: If the queue does not exist and ``create`` is false.
    """
    if create:
        kwargs["create"] = True
    queue: QueueService = open_backend(url, QUEUE_BACKENDS, "queue", **kwargs)
    return queue


__all__ = [
    "Message",
    "QueueCapabilities",
    "QueueCounts",
    "QueueService",
    "ReportSink",
    "open_queue",
    "register_queue_backend",
]
