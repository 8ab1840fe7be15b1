"""``amqp://user:pass@host[:port]/vhost?queue=name``: a RabbitMQ queue through pika.

The vhost is percent-encoded as in the AMQP URI spec (``%2F`` is ``/``; none means ``/``);
other query options (``heartbeat``...) go to pika's ``URLParameters``. Without credentials
pika logs in as guest/guest. :attr:`AMQPQueue.url` masks the password.

* **Threads.** pika's ``BlockingConnection`` is not thread-safe: each object owns one
  connection and channel and makes every pika call under one lock. A pump thread
  (:class:`~simpletasks.queues._amqp_leases.Pump`) takes the lock every 0.1 s to expire
  leases, take in deliveries and answer heartbeats.
* **Receiving** is a consumer, not ``basic.get`` polling: the broker pushes deliveries into a
  local buffer, up to a *prefetch window* of unacked messages on our channel. The window
  follows what the caller holds and asks for: a ``receive(n)`` while ``h`` messages are
  leased here wants ``h + n`` (the daemon's concurrency plus its prefetch); when that is
  more than the window, another consumer is added for the difference plus 25% (at most
  :data:`MAX_WINDOW` in all), since RabbitMQ fixes a consumer's prefetch when it starts.
  ``receive`` takes from the buffer without a round trip; when the buffer is empty it
  tries one ``basic.get`` (so an empty receive still means an empty queue) and polls again
  after a pause outside the lock (1 ms doubling to 50 ms).
  Buffered messages are not leased yet; they count as visible, and at ``close`` (or a crash)
  the broker takes them back with the connection and counts a delivery (``x-delivery-count``)
  although they never ran. They are not handed back as uncounted copies: RabbitMQ (3.10,
  quorum queues) drops acks sent after a consumer's ``basic.cancel``, so the originals came
  back next to their copies and ran twice. A hand-back's copy (below) that reached the
  buffer before the close is counted that way too.
* **Leases.** A received message stays unacked on our channel, with its lease deadline
  kept in a :class:`~simpletasks.queues._amqp_leases.LeaseBook` (RabbitMQ has none);
  ``extend`` moves it without a round trip, which is also how the daemon's retry delay
  works. Acks of the oldest leases go as one ``basic.ack(multiple=True)``. The broker's
  ``consumer_timeout`` (default 30 min) closes a channel that holds a delivery longer:
  raise it for longer tasks or retry delays.
* **Publishing** uses publisher confirms, waited for once per batch
  (:class:`~simpletasks.queues._amqp.ConfirmPublisher`): ``send_batch`` of 100 is one
  round trip, its frames written in a few joined socket writes (pika alone makes three
  writes and sends per message). Every message is persistent, ``text/plain;
  charset=utf-8``, with a unique 32-hex-digit ``message_id`` and the AMQP ``timestamp`` of
  its send (whole seconds): ``Message.sent_at`` (the metrics' message age) is read from it,
  also on messages of other producers that set it.
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
* **Counts.** ``visible`` is the broker's ready count plus the deliveries buffered here
  (not leased yet); AMQP does not tell other clients' unacked messages, so ``in_flight``
  counts this object's leases only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import pika
import pika.exceptions

from simpletasks.errors import ConfigError
from simpletasks.queues import Message, QueueCapabilities, QueueCounts, _checks, _common
from simpletasks.queues._amqp import (
    OPERATION_SECONDS,
    BrokerError,
    BrokerLoginRefused,
    BrokerUnavailable,
    ConfirmPublisher,
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
MAX_WINDOW = 1000  # most unacked deliveries (leased + buffered) the consumers may hold
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
        self._publisher: ConfirmPublisher | None = None
        self._buffer: deque[tuple[Any, Any, bytes]] = deque()  # delivered, not yet received
        self._window = 0  # prefetch of all our consumers together
        self._consumers: list[str] = []
        self._generation = 0
        self._leases = LeaseBook(name, self.url)
        self._leases.unleased_floor = self._unleased_floor
        self._closed = threading.Event()  # set at the end of close: the pump stops
        self._closing = False  # set at the start of close: no new connection
        self._busy_since: float | None = None  # when the lock's holder took it (watchdog)
        self._timed_out = False  # the watchdog gave the connection up
        self._broker_blocked = False  # the broker blocks our publishes (memory alarm)
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
        """Hold the lock, with pika's own ERROR logs silenced (we report failures once).

        While held, the pump's watchdog times the holder: a pika call that has not returned
        after :data:`OPERATION_SECONDS` has its socket shut down (see :meth:`_watchdog`).
        """
        with self._lock, quiet_pika():
            outer = self._busy_since is None
            if outer:
                self._busy_since = time.monotonic()
            try:
                yield
            finally:
                if outer:
                    self._busy_since = None

    def _watchdog(self) -> None:
        """Shut down the socket of a pika call stuck for :data:`OPERATION_SECONDS` (no lock).

        A broker or network that stops answering (a stall, a half-open connection) would
        otherwise block the call, and every thread waiting for the lock, until pika's
        heartbeat timeout (a minute or more): a daemon could not even stop. The stuck call
        then fails as on a lost connection (the broker requeues what we held) and is not
        retried. A broker that *blocks* publishers (memory alarm) is left to pika's
        ``blocked_connection_timeout``.
        """
        since, connection = self._busy_since, self._connection
        if since is None or connection is None or self._timed_out:
            return
        if time.monotonic() - since < OPERATION_SECONDS or self._broker_blocked:
            return
        transport = getattr(getattr(connection, "_impl", None), "_transport", None)
        sock = getattr(transport, "_sock", None)  # pika's socket (private: checked)
        if sock is None:
            return
        self._timed_out = True
        logger.warning(
            "%s: the broker has not answered for %.0f s; giving the connection up",
            self.url,
            OPERATION_SECONDS,
        )
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _open_channel(self) -> Any:
        """Return the channel, connecting first if needed. Call with the lock held."""
        if self._closing or self._closed.is_set():
            raise BrokerError(f"{self.url} is closed")
        if self._channel is None:
            connection = connect(self._parameters, self.url)
            self._timed_out = self._broker_blocked = False
            connection.add_on_connection_blocked_callback(self._on_blocked)
            connection.add_on_connection_unblocked_callback(self._on_blocked)
            channel = connection.channel()
            self._publisher = ConfirmPublisher(connection.channel())
            self._channel, self._connection = channel, connection
        return self._channel

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        self._broker_blocked = isinstance(frame.method, pika.spec.Connection.Blocked)

    def _drop(self, reason: object) -> None:
        """Forget the connection (the broker requeues what we held). Call with the lock held."""
        if held := self._leases.clear():
            logger.warning(
                "%s: connection lost (%s); the broker redelivers the %d message(s) held here",
                *(self.url, reason, held),
            )
        self._generation += 1
        self._buffer.clear()  # the broker requeues these too
        self._window, self._consumers, self._publisher = 0, [], None
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open and not self._timed_out:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    def _call(self, what: str, action: Callable[[Any], _T]) -> _T:
        """Run ``action(channel)`` under the lock; retry once on a new connection if it broke."""
        with self._locked():
            for attempt in (1, 2):
                channel = self._open_channel()
                try:
                    self._leases.expire(channel, self._publisher)
                    return action(channel)
                except _LOST as exc:
                    timed_out = self._timed_out
                    self._drop(exc)
                    if timed_out:
                        raise BrokerUnavailable(
                            f"{self.url}: {what} failed: the broker did not answer within "
                            f"{OPERATION_SECONDS:g} s (not retried)"
                        ) from None
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
        """The pump's work: the watchdog, then expire leases and serve heartbeats (if the lock
        is free: a busy holder serves heartbeats itself)."""
        self._watchdog()
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._tick_locked()
        finally:
            self._lock.release()

    def _tick_locked(self) -> None:
        with self._locked():
            if self._connection is None or self._closing:
                return
            try:
                self._leases.expire(self._channel, self._publisher)
                self._connection.process_data_events(0)
            except pika.exceptions.AMQPError as exc:
                self._drop(exc)

    # receiving and settling

    def receive(
        self, max_messages: int = 1, *, wait_seconds: float = 0.0, lease_seconds: float = 30.0
    ) -> list[Message]:
        """Lease up to ``max_messages`` delivered messages, waiting up to ``wait_seconds``."""
        _checks.check_receive_args(max_messages, wait_seconds, lease_seconds)
        count = min(max_messages, MAX_BATCH)

        def take() -> list[Message]:
            return self._call("receive", lambda ch: self._take(ch, count, lease_seconds))

        return _common.poll(
            take, wait_seconds, pause=0.001, max_pause=0.05, sleep=self._closed.wait
        )

    def _take(self, channel: Any, count: int, lease_seconds: float) -> list[Message]:
        """Lease up to ``count`` buffered deliveries (lock held), widening the window first.

        With nothing buffered, one ``basic.get`` tells whether the queue has a ready message
        the consumers were not sent yet (so an empty result means an empty queue, as before).
        """
        assert self._connection is not None
        if self._grow_window(channel, len(self._leases) + count):
            self._connection.process_data_events(0.02)  # let the new consumer fill up
        if len(self._buffer) < count:
            self._connection.process_data_events(0)
        if not self._buffer:
            method, properties, body = channel.basic_get(self.name, auto_ack=False)
            if method is None:
                return []
            self._buffer.append((method, properties, body))
        messages: list[Message] = []
        buffer, generation = self._buffer, self._generation
        while buffer and len(messages) < count:
            method, properties, body = buffer.popleft()
            attempt = attempt_of(properties, method.redelivered)
            message_id = properties.message_id or hashlib.sha256(body).hexdigest()[:32]
            handle = _Delivery(self, generation, method.delivery_tag)
            text = body.decode("utf-8", errors="replace")
            message = Message(message_id, text, attempt, handle, _sent_at(properties))
            self._leases.add(method.delivery_tag, message, properties, body, lease_seconds)
            messages.append(message)
        return messages

    def _grow_window(self, channel: Any, wanted: int) -> bool:
        """Add a consumer if ``wanted`` unacked deliveries exceed the window; True if added."""
        wanted = min(wanted, MAX_WINDOW)
        if wanted <= self._window:
            return False
        # 25% headroom (acks in flight), so the window seldom grows again; not more: what
        # waits here beyond the caller's prefetch could run sooner on another consumer
        more = min(wanted + wanted // 4, MAX_WINDOW) - self._window
        channel.basic_qos(prefetch_count=more)  # applies to consumers started after it
        tag = channel.basic_consume(self.name, self._on_delivery, auto_ack=False)
        self._consumers.append(tag)
        self._window += more
        logger.debug("%s: prefetch window now %d", self.url, self._window)
        return True

    def _unleased_floor(self) -> int | None:
        """The lowest tag delivered but not leased (lock held): dispatches pending deliveries
        first, since one may have a lower tag than a message taken with ``basic.get``."""
        if self._connection is not None:
            self._connection.process_data_events(0)
        return self._buffer[0][0].delivery_tag if self._buffer else None

    def _on_delivery(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        """pika's consumer callback (runs inside a pika call, so with the lock held)."""
        self._buffer.append((method, properties, body))

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
                if action == "extend":
                    for message, delivery in chunk:
                        if not self._settle_one(action, message, delivery, seconds):
                            lost.append(message)
                else:
                    lost.extend(self._settle_held(action, chunk))
        return lost

    def _settle_held(
        self, action: str, chunk: Sequence[tuple[Message, _Delivery]]
    ) -> list[Message]:
        """Ack or hand back a chunk in one go (lock held); return the messages already lost."""
        lost: list[Message] = []
        tags: list[int] = []
        for message, delivery in chunk:
            if delivery.generation != self._generation or self._leases.get(delivery.tag) is None:
                why = "its lease ran out, was settled or was lost with a connection"
                _common.log_lost(logger, self.url, action, message.id, why)
                lost.append(message)
            elif delivery.tag not in tags:
                tags.append(delivery.tag)
        if not tags:
            return lost
        try:
            if action == "ack":
                self._leases.ack_many(self._channel, tags)
            else:
                self._leases.hand_back(self._channel, self._publisher, tags)
        except _LOST as exc:
            self._drop(exc)  # the broker requeues them: the leases are lost, as on timeout
            why = "its lease was lost with the connection"
            for message, _ in chunk:
                _common.log_lost(logger, self.url, action, message.id, why)
            return [message for message, _ in chunk]
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
        self._leases.extend(delivery.tag, seconds)
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
        """Enqueue many messages, confirmed once per 100; every body is checked before any is sent.

        Raises:
            PublishError: As :meth:`send`. Its ``sent`` bodies (the first ones) went through;
                the chunk of 100 the failed one was in was published whole, so later bodies
                of that chunk may have been stored too; no later chunk was sent.
        """
        checked = _checks.check_bodies(bodies)
        self._publish(_common.encode_bodies(checked, MAX_BODY_BYTES, self._where))

    @property
    def _where(self) -> str:
        return f"RabbitMQ queue {self.name!r}"

    def _check_size(self, body: str, what: str) -> bytes:
        return _common.check_size(body, MAX_BODY_BYTES, what, self._where)

    def _publish(self, payloads: list[bytes]) -> None:
        """Publish persistent messages, confirmed once per chunk of :data:`MAX_BATCH`.

        Each message has ``content_type`` :data:`~simpletasks.queues._amqp.CONTENT_TYPE`,
        persistent delivery and a unique 32-hex-digit ``message_id``
        (:meth:`ConfirmPublisher.publish_bodies`).
        """
        for offset in range(0, len(payloads), MAX_BATCH):
            chunk = payloads[offset : offset + MAX_BATCH]

            def publish(_channel: Any, chunk: list[bytes] = chunk) -> dict[int, str]:
                assert self._publisher is not None
                return self._publisher.publish_bodies(self.name, chunk)

            if failed := self._call("send", publish):
                first = min(failed)
                sent = offset + first
                raise PublishError(f"{self.url}: body {sent} not sent: {failed[first]}", sent=sent)

    # inspecting

    def counts(self) -> QueueCounts:
        """Return the broker's ready count (plus our buffered deliveries) and our leases."""

        def count(channel: Any) -> QueueCounts:
            assert self._connection is not None
            before = len(self._buffer)
            ready = channel.queue_declare(self.name, passive=True).method.message_count
            self._connection.process_data_events(0)  # deliveries sent before the answer
            if self._buffer or len(self._buffer) != before:
                # A quorum queue answers from a replica's state, which may lag a delivery
                # just made to us (counted twice): ask again once it has surely caught up.
                self._connection.process_data_events(0.005)
                ready = channel.queue_declare(self.name, passive=True).method.message_count
                self._connection.process_data_events(0)
            waiting = int(ready) + len(self._buffer)  # buffered here: not leased yet
            return QueueCounts(visible=waiting, in_flight=len(self._leases))

        return self._call("counts", count)

    def purge(self) -> None:
        """Delete every ready message and every message leased here (not other clients')."""

        def purge(channel: Any) -> None:
            self._leases.ack_all(channel)
            for tag in self._consumers:  # stop deliveries; pika requeues undispatched ones
                channel.basic_cancel(tag)
            self._consumers, self._window = [], 0
            if self._buffer:
                channel.basic_ack(self._buffer[-1][0].delivery_tag, multiple=True)
                self._buffer.clear()
            channel.queue_purge(self.name)

        self._call("purge", purge)

    def delete(self) -> None:
        """Delete the queue itself (for tests and the CLI)."""
        self._call("delete", lambda channel: channel.queue_delete(self.name))

    def close(self) -> None:
        """Close the connection; the broker requeues messages still leased here.

        The pump's watchdog stays on until the connection is closed, so a broker that no
        longer answers holds ``close`` up for :data:`OPERATION_SECONDS` at most.
        """
        self._closing = True
        with self._locked():
            self._leases.clear()
            self._drop("closed")
        self._closed.set()
        if self._pump is not None:
            self._pump.join()

    def __repr__(self) -> str:
        return f"AMQPQueue({self.url!r})"


def _sent_at(properties: Any) -> float | None:
    """The AMQP ``timestamp`` property (whole seconds; ours, or a producer's), if set."""
    timestamp = properties.timestamp
    return float(timestamp) if isinstance(timestamp, int) and timestamp > 0 else None
