"""``amqp://user:pass@host[:port]/vhost?queue=name``: a RabbitMQ queue through pika.

The vhost is percent-encoded as in the AMQP URI spec (``%2F`` is ``/``; none means ``/``);
other query options (``heartbeat``...) go to pika's ``URLParameters``. Without credentials
pika logs in as guest/guest. :attr:`AMQPQueue.url` masks the password.

* **Threads.** pika's ``BlockingConnection`` is not thread-safe: each object owns one
  connection and channel and makes every pika call under one lock. ``receive`` polls with
  ``basic.get``, sleeping *outside* the lock (at most 4 polls a second). A pump thread
  (:class:`~simpletasks.queues._amqp_leases.Pump`) takes the lock every 0.1 s to expire
  leases and answer heartbeats.
* **Leases.** A received message stays unacked on our channel, with its lease deadline
  kept in a :class:`~simpletasks.queues._amqp_leases.LeaseBook` (RabbitMQ has none);
  ``extend`` moves it without a round trip, which is also how the daemon's retry delay
  works. ``basic.get``, not a prefetching consumer, so no message waits unseen in a local
  buffer. The broker's ``consumer_timeout`` (default 30 min) closes a channel that holds a
  delivery longer: raise it for longer tasks or retry delays.
* **Hand-backs.** A released or expired message is published again (same id, to the back of
  the queue, its attempt in the ``x-simpletasks-attempt`` header), confirmed, then acked: a
  crash between them duplicates it, never loses it. (``basic.reject`` is applied after the
  broker answers later requests, so a count just after it would miss the message and a
  burst daemon quit.)
* **Attempts** are that header + 1, plus the returns the broker counted since: a lost
  connection requeues what it held. Queues declared here are durable *quorum* queues, which
  count those in ``x-delivery-count``; a classic queue only flags them as redelivered (+1).
* **Connection loss.** The next call reconnects; receive, send, counts and purge are retried
  once (a send may be duplicated, never lost). Settling a message from a lost connection,
  or one whose lease ran out, is logged and ignored.
* **Counts.** ``visible`` is the broker's ready count; AMQP does not tell other clients'
  unacked messages, so ``in_flight`` counts this object's leases only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import pika
import pika.exceptions

from simpletasks.errors import ConfigError
from simpletasks.queues import Message, QueueCapabilities, QueueCounts, _checks, _common
from simpletasks.queues._amqp import (
    BrokerError,
    BrokerLoginRefused,
    BrokerUnavailable,
    PublishError,
    check_name,
    connect,
    parse_url,
    quiet_pika,
)
from simpletasks.queues._amqp_leases import LeaseBook, Pump, attempt_of
from simpletasks.urls import create_hint, redact

logger = logging.getLogger(__name__)

__all__ = ["AMQPQueue", "BrokerError", "BrokerLoginRefused", "BrokerUnavailable", "PublishError"]

MAX_BATCH = 100  # messages per receive / settled under one hold of the lock
#: RabbitMQ's default ``max_message_size`` since 4.0 (3.x allowed 128 MiB): a body that fits
#: works on every broker with default settings.
MAX_BODY_BYTES = 16 * 1024 * 1024
CAPABILITIES = QueueCapabilities(
    max_batch=MAX_BATCH, max_lease_seconds=None, max_body_bytes=MAX_BODY_BYTES, counts=True
)
_T = TypeVar("_T")
# A closed or broken connection/channel: the broker has requeued what we held.
_LOST = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ChannelClosed,
    pika.exceptions.ChannelWrongStateError,
)


@dataclass(frozen=True, eq=False)
class _Delivery:
    queue: AMQPQueue
    generation: int  # which connection of ``queue`` delivered it
    tag: int


class AMQPQueue:
    """A RabbitMQ queue with client-side leases and counted attempts.

    Args:
        name: Queue name.
        parameters: pika connection parameters (default: guest on localhost, vhost ``/``).
        create: Declare the queue (a durable quorum queue) if missing. An existing queue
            with other arguments is used as it is, with a warning, unless ``arguments`` were
            given. If false (the default), the queue must exist.
        arguments: Extra ``x-`` arguments for the declaration, e.g. ``{"x-max-length": 1000}``.
        url: The URL to show as :attr:`url` (default: built from ``parameters``).

    Raises:
        ConfigError: If the name is invalid, or the queue is missing and ``create`` is false,
            or it exists with other arguments than ``arguments``.
        BrokerError: If RabbitMQ cannot be reached or refuses the login.
    """

    #: Batches of 100, no lease limit of its own (see ``consumer_timeout`` above), bodies up
    #: to 16 MiB; ``counts().in_flight`` counts this object's leases only.
    capabilities = CAPABILITIES

    def __init__(
        self,
        name: str,
        *,
        parameters: pika.ConnectionParameters | None = None,
        create: bool = False,
        arguments: Mapping[str, Any] | None = None,
        url: str | None = None,
    ) -> None:
        self.name = check_name(name)
        self._parameters = p = parameters or pika.ConnectionParameters()
        self.url = url or (
            f"amqp://{p.credentials.username}@{p.host}:{p.port}/{quote(p.virtual_host, safe='')}"
            f"?queue={quote(name, safe='')}"
        )
        self._lock = threading.RLock()  # guards everything below and every pika call
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._generation = 0
        self._leases = LeaseBook(name, self.url)
        self._closed = threading.Event()
        self._pump: Pump | None = None
        self._declare(create, arguments)
        self._pump = Pump(f"simpletasks-amqp-{name}", self._tick, self._closed).start()

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> AMQPQueue:
        """Open ``amqp://user:pass@host[:port]/vhost?queue=name``; ``kwargs`` as the constructor's.

        With ``create``, the queue is declared (a durable quorum queue) if missing.

        Raises:
            ConfigError: If the URL is malformed, has no ``queue``, or as the constructor.
        """
        name, parameters, masked = parse_url(url)
        return cls(name, parameters=parameters, url=masked, create=create, **kwargs)

    # connection

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock, with pika's own ERROR logs silenced (we report failures once)."""
        with self._lock, quiet_pika():
            yield

    def _open_channel(self) -> Any:
        """Return the channel, connecting first if needed. Call with the lock held."""
        if self._closed.is_set():
            raise BrokerError(f"{self.url} is closed")
        if self._channel is None:
            connection = connect(self._parameters, self.url)
            self._channel = connection.channel()
            self._channel.confirm_delivery()
            self._connection = connection
        return self._channel

    def _drop(self, reason: object) -> None:
        """Forget the connection (the broker requeues what we held). Call with the lock held."""
        if held := self._leases.clear():
            logger.warning(
                "%s: connection lost (%s); the broker redelivers the %d message(s) held here",
                *(self.url, reason, held),
            )
        self._generation += 1
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    def _call(self, what: str, action: Callable[[Any], _T]) -> _T:
        """Run ``action(channel)`` under the lock; retry once on a new connection if it broke."""
        with self._locked():
            for attempt in (1, 2):
                channel = self._open_channel()
                try:
                    self._leases.expire(channel)
                    return action(channel)
                except _LOST as exc:
                    self._drop(exc)
                    if attempt == 2:
                        raise BrokerUnavailable(
                            f"{self.url}: {what} failed on a new connection too: "
                            f"{redact(repr(exc))}; is the broker up and the network stable?"
                        ) from None
                    logger.info("%s: %s failed (%r); reconnecting", self.url, what, exc)
        raise AssertionError("unreachable")

    def _declare(self, create: bool, arguments: Mapping[str, Any] | None) -> None:
        declare = {"x-queue-type": "quorum", **(arguments or {})}
        try:
            with self._locked():
                try:
                    self._open_channel().queue_declare(
                        self.name, passive=not create, durable=True, arguments=declare
                    )
                    return
                except pika.exceptions.ChannelClosedByBroker as exc:
                    self._drop(exc)
                    error = exc
                if error.reply_code == 404:
                    raise ConfigError(
                        f"RabbitMQ queue {self.name!r} does not exist at {self.url}; "
                        f"{create_hint(self.url, 'queue')}"
                    )
                if error.reply_code != 406 or arguments:
                    raise ConfigError(f"cannot declare {self.url}: {error.reply_text}")
                logger.warning("%s exists with other arguments (%s)", self.url, error.reply_text)
                self._open_channel().queue_declare(self.name, passive=True)
        except BaseException:
            self.close()
            raise

    def _tick(self) -> None:
        """The pump's work: expire leases and serve heartbeats, under the lock."""
        with self._locked():
            if self._connection is None or self._closed.is_set():
                return
            try:
                self._leases.expire(self._channel)
                self._connection.process_data_events(0)
            except pika.exceptions.AMQPError as exc:
                self._drop(exc)

    # receiving and settling

    def receive(
        self, max_messages: int = 1, *, wait_seconds: float = 0.0, lease_seconds: float = 30.0
    ) -> list[Message]:
        """Lease up to ``max_messages`` messages, polling up to ``wait_seconds`` for the first."""
        _checks.check_receive_args(max_messages, wait_seconds, lease_seconds)
        count = min(max_messages, MAX_BATCH)

        def get() -> list[Message]:
            return self._call("receive", lambda ch: self._get(ch, count, lease_seconds))

        return _common.poll(get, wait_seconds, pause=0.02, max_pause=0.25, sleep=self._closed.wait)

    def _get(self, channel: Any, max_messages: int, lease_seconds: float) -> list[Message]:
        messages: list[Message] = []
        while len(messages) < max_messages:
            method, properties, body = channel.basic_get(self.name, auto_ack=False)
            if method is None:
                break
            attempt = attempt_of(properties, method.redelivered)
            message_id = properties.message_id or hashlib.sha256(body).hexdigest()[:32]
            handle = _Delivery(self, self._generation, method.delivery_tag)
            message = Message(message_id, body.decode("utf-8", errors="replace"), attempt, handle)
            self._leases.add(method.delivery_tag, message, properties, body, lease_seconds)
            messages.append(message)
        return messages

    def _settle(
        self, action: str, messages: Sequence[Message], seconds: float = 0.0
    ) -> list[Message]:
        """Settle ``messages``, :data:`MAX_BATCH` per hold of the lock; return the lost ones."""
        deliveries: list[_Delivery] = []
        for message in messages:
            deliveries.append(_checks.check_handle(message, _Delivery, "RabbitMQ queue"))
            if deliveries[-1].queue is not self:  # leases live on the receiving connection
                raise ValueError(
                    f"message {message.id!r} was received by another queue object; settle it "
                    "through the object that received it"
                )
        pairs = list(zip(messages, deliveries, strict=True))
        lost: list[Message] = []
        for chunk in _common.chunks(pairs, MAX_BATCH):
            with self._locked():
                for message, delivery in chunk:
                    if not self._settle_one(action, message, delivery, seconds):
                        lost.append(message)
        return lost

    def _settle_one(
        self, action: str, message: Message, delivery: _Delivery, seconds: float
    ) -> bool:
        """Settle one delivery (lock held); return False if its lease was already lost."""
        lease = self._leases.get(delivery.tag)
        if delivery.generation != self._generation or lease is None:
            why = "its lease ran out, was settled or was lost with a connection"
            _common.log_lost(logger, self.url, action, message.id, why)
            return False
        try:
            if action == "extend":
                self._leases.extend(delivery.tag, seconds)
            elif action == "ack":
                self._leases.ack(self._channel, delivery.tag)
            else:
                self._leases.hand_back(self._channel, delivery.tag)
        except _LOST as exc:
            self._drop(exc)  # the broker requeues it: the lease is lost, as on timeout
            why = "its lease was lost with the connection"
            _common.log_lost(logger, self.url, action, message.id, why)
            return False
        return True

    def ack(self, message: Message) -> None:
        """Delete a received message; ignored (with a warning) if its lease was lost."""
        self._settle("ack", [message])

    def ack_many(self, messages: Sequence[Message]) -> None:
        """Delete several received messages, each as :meth:`ack`, 100 per hold of the lock."""
        self._settle("ack", messages)

    def release(self, message: Message) -> None:
        """Make a received message visible again at once (at the back of the queue)."""
        self._settle("release", [message])

    def extend(self, message: Message, lease_seconds: float) -> None:
        """Set the message's lease to end ``lease_seconds`` from now (no broker round trip)."""
        seconds = _checks.check_seconds("lease_seconds", lease_seconds)
        self._settle("extend", [message], seconds)

    def extend_many(self, messages: Sequence[Message], lease_seconds: float) -> list[Message]:
        """Move several leases' ends (no broker round trip); return those already lost."""
        seconds = _checks.check_seconds("lease_seconds", lease_seconds)
        return self._settle("extend", messages, seconds)

    # sending

    def send(self, body: str) -> None:
        """Enqueue one persistent message and wait for the broker's confirm.

        Raises:
            PublishError: If the broker nacks the message (e.g. a full queue with
                ``x-overflow: reject-publish``) or cannot route it (the queue was deleted).
        """
        self._publish([self._check_size(_checks.check_body(body), "body")])

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Enqueue many messages, each confirmed; every body is checked before any is sent.

        Raises:
            PublishError: As :meth:`send`; its ``sent`` tells how many went through, in order.
        """
        checked = _checks.check_bodies(bodies)
        self._publish([self._check_size(body, f"bodies[{i}]") for i, body in enumerate(checked)])

    def _check_size(self, body: str, what: str) -> bytes:
        return _common.check_size(body, MAX_BODY_BYTES, what, f"RabbitMQ queue {self.name!r}")

    def _publish(self, payloads: list[bytes]) -> None:
        for i, data in enumerate(payloads):
            properties = pika.BasicProperties(
                content_type="text/plain; charset=utf-8",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=uuid.uuid4().hex,
            )

            def publish(channel: Any, data: bytes = data, properties: Any = properties) -> None:
                channel.basic_publish("", self.name, data, properties, mandatory=True)

            try:
                self._call("send", publish)
            except pika.exceptions.NackError as exc:
                why = "the broker nacked it (a full queue with x-overflow reject-publish?)"
                raise PublishError(f"{self.url}: body {i} not sent: {why}", sent=i) from exc
            except pika.exceptions.UnroutableError as exc:
                why = "it could not be routed (was the queue deleted?)"
                raise PublishError(f"{self.url}: body {i} not sent: {why}", sent=i) from exc

    # inspecting

    def counts(self) -> QueueCounts:
        """Return the broker's ready count and the number of leases this object holds."""

        def count(channel: Any) -> QueueCounts:
            ready = channel.queue_declare(self.name, passive=True).method.message_count
            return QueueCounts(visible=int(ready), in_flight=len(self._leases))

        return self._call("counts", count)

    def purge(self) -> None:
        """Delete every ready message and every message leased here (not other clients')."""

        def purge(channel: Any) -> None:
            self._leases.ack_all(channel)
            channel.queue_purge(self.name)

        self._call("purge", purge)

    def delete(self) -> None:
        """Delete the queue itself (for tests and the CLI)."""
        self._call("delete", lambda channel: channel.queue_delete(self.name))

    def close(self) -> None:
        """Close the connection; the broker requeues messages still leased here."""
        self._closed.set()
        if self._pump is not None:
            self._pump.join()
        with self._locked():
            self._leases.clear()
            self._drop("closed")

    def __repr__(self) -> str:
        return f"AMQPQueue({self.url!r})"
