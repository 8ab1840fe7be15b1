"""``pubsub://PROJECT/SUBSCRIPTION``: Google Cloud Pub/Sub through google-cloud-pubsub.

The queue is a subscription: ``receive`` pulls from it, ``send`` publishes to its topic (found
with ``GetSubscription``). ``pubsub://projects/P/topics/T/subscriptions/S`` also checks the
topic. Credentials are Application Default Credentials; ``emulator_host="host:port"`` (or the
library's own ``PUBSUB_EMULATOR_HOST``) selects an emulator; ``subscriber=``/``publisher=``
inject clients.

- A lease is the ack deadline, in whole seconds (rounded up), at most 600 per request (a
  longer lease raises rather than being cut short: the daemon times its heartbeat by the
  lease it asked for). ``receive`` sets it with ``ModifyAckDeadline`` when it differs from the
  subscription's own deadline (10-600 s), so short leases work too. ``extend`` is
  ``ModifyAckDeadline``, ``release`` sets 0, ``ack`` is ``Acknowledge``; Pub/Sub ignores the
  ack ids of earlier deliveries, so stale handles settle nothing.
- ``Message.attempt`` is Pub/Sub's ``delivery_attempt``, kept by the service across all
  daemons, but only for subscriptions with a dead-letter policy. ``create=True`` makes one
  (topic ``<subscription>-dead-letter``, 100 attempts, Pub/Sub's maximum, so the daemon's
  ``max_attempts`` decides first). Without a policy this queue object counts the deliveries
  it saw: a per-process count, so with N daemons a failing message may run up to N times
  ``max_attempts``. We count rather than refuse, so existing subscriptions work; prefer a
  policy.
- ``counts()`` is ``QueueCounts(None, None)``: Pub/Sub has no cheap count.
- ``receive`` pulls again until ``wait_seconds`` passed (empty pulls may return early);
  ``wait_seconds=0`` is one pull with a short deadline.
- ``purge`` seeks the subscription to now (leased messages included); if seeking is refused,
  visible messages are pulled and acked.
- ``send``/``send_batch`` publish a batch in ``Publish`` requests of up to 1,000 messages /
  10 MB on the publisher client's channel (:mod:`._pubsub_publish`; a wrapped or fake
  client's own ``publish`` otherwise), retried on transient errors for up to 120 s;
  failures are raised together (:class:`PublishError`), never dropped.
- An Acknowledge/ModifyAckDeadline that goes unanswered for 4 s (on an emulator, also two
  pulls in a row that time out) replaces the subscriber client made here with one on a
  connection of its own (:meth:`PubSubQueue._reconnect`): a half-open connection would
  otherwise swallow every pull for a minute or more, looking like an empty queue.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from google.api_core import exceptions as gexc

from simpletasks.errors import BatchError, ConfigError
from simpletasks.queues import Message, QueueCapabilities, QueueCounts, _checks, _common
from simpletasks.queues import _pubsub_admin as admin
from simpletasks.queues._pubsub_admin import ADMIN_TIMEOUT_SECONDS, make_client, parse_url
from simpletasks.queues._pubsub_publish import RawPublisher
from simpletasks.queues._pubsub_raw import RawSubscriber

logger = logging.getLogger(__name__)

MAX_LEASE_SECONDS = 600  # longest ack deadline one ModifyAckDeadline call may set
MAX_PULL = 1000  # messages per pull we ask for: our max_batch
ACK_CHUNK = 500  # ack ids per Acknowledge/ModifyAckDeadline request (512 KB request limit)
QUICK_PULL_SECONDS = 0.3  # deadline of the one pull of receive(wait_seconds=0)
EMPTY_PULL_PAUSE = 0.1  # pause after an early empty pull, before pulling again
PUBLISH_TIMEOUT_SECONDS = 120.0  # longest wait for publishes to be confirmed
#: Longest wait for one Acknowledge/ModifyAckDeadline request of ours (they answer in
#: milliseconds; a dead endpoint must not hold a daemon's stop or heartbeat up for long).
SETTLE_TIMEOUT_SECONDS = 4.0
TRACKED_ATTEMPTS = 100_000  # messages whose attempts we count ourselves, most recent kept
DEAD_LETTER_ATTEMPTS = 100


class PublishError(BatchError):
    """Some messages of a ``send``/``send_batch`` were not published; the others were.

    Attributes:
        failures: ``(index in the argument, error type, error text)`` per message not
            published (see :class:`~simpletasks.errors.BatchError`).
    """


class _Ack(NamedTuple):  # a tuple: built once per received message, cheaply
    subscription: str
    ack_id: str


class PubSubQueue:
    """A Pub/Sub subscription and its topic (see the module docstring for the semantics).

    Args:
        project: Project id.
        subscription: Subscription name (not path).
        topic: Topic name. Checked against the subscription's topic; with ``create``, the
            topic to create (default: the subscription's name).
        subscriber: A ``SubscriberClient`` to use (not closed by :meth:`close`).
        publisher: A ``PublisherClient`` to use (not closed by :meth:`close`).
        emulator_host: ``host:port`` of an emulator for the clients made here.
        create: Create the topic and the subscription if missing.
        ack_deadline_seconds: Ack deadline of a subscription created here (clamped to
            10-600 s); a receive with this lease saves one request.
        dead_letter_attempts: ``max_delivery_attempts`` (5-100) of the dead-letter policy of a
            subscription created here, whose topic is ``<subscription>-dead-letter``; ``None``
            creates none.

    Raises:
        ConfigError: If the subscription does not exist (and ``create`` is false) or is not
            attached to ``topic``.
        CredentialsError: If no Google credentials are found.
        ServiceUnavailable: If the emulator (``emulator_host`` or ``PUBSUB_EMULATOR_HOST``)
            does not answer, or Pub/Sub cannot be reached.
    """

    def __init__(
        self,
        project: str,
        subscription: str,
        *,
        topic: str | None = None,
        subscriber: Any = None,
        publisher: Any = None,
        emulator_host: str | None = None,
        create: bool = False,
        ack_deadline_seconds: int = 60,
        dead_letter_attempts: int | None = DEAD_LETTER_ATTEMPTS,
    ) -> None:
        self.project = project
        self.url = f"pubsub://{project}/{subscription}"
        self.subscription_path = f"projects/{project}/subscriptions/{subscription}"
        self._owns = (subscriber is None, publisher is None)
        self._closed = False
        self._silent_until = 0.0  # settle requests fail fast until then (a timed-out one)
        self._emulator_host = emulator_host
        self._on_emulator = bool(emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST"))
        self._pull_timeouts = 0  # in a row
        self._reconnected_at = float("-inf")
        self._lock = threading.Lock()
        self._attempts: OrderedDict[str, int] = OrderedDict()
        self._subscriber: Any = None
        self._publisher: Any = None
        try:
            if subscriber is None or publisher is None:
                admin.check_emulator(emulator_host, self.url)
            self._subscriber = subscriber or make_client("subscriber", emulator_host)
            self._publisher = publisher or make_client("publisher", emulator_host)
            subscriber, publisher = self._subscriber, self._publisher
            target = str(getattr(subscriber, "target", None) or emulator_host or "Pub/Sub")
            with admin.service_errors(self.url, target):
                if create:
                    admin.create(
                        subscriber,
                        publisher,
                        self.subscription_path,
                        topic or subscription,
                        ack_deadline_seconds=ack_deadline_seconds,
                        dead_letter_attempts=dead_letter_attempts,
                    )
                info = admin.describe(subscriber, self.subscription_path, topic)
        except BaseException:
            self.close()
            raise
        #: The topic that ``send`` publishes to (``projects/P/topics/T``).
        self.topic_path: str = info.topic
        #: The subscription's own ack deadline in seconds.
        self.ack_deadline_seconds: int = info.ack_deadline_seconds
        #: Whether Pub/Sub counts delivery attempts (the subscription has a dead-letter policy).
        self.counts_attempts = bool(info.dead_letter_policy.dead_letter_topic)
        # Pull/Acknowledge/ModifyAckDeadline with plain protobufs on a real client's channel
        # (None for wrapped or fake clients, which keep their own methods).
        self._raw: RawSubscriber | None = RawSubscriber.of(self._subscriber)
        # Publish requests of a whole batch with plain protobufs on a real client's channel
        # (None for wrapped or fake clients, which publish message by message).
        self._raw_publisher = RawPublisher.of(self._publisher, admin.PUBLISH_REQUEST_BYTES)
        #: Pulls of up to 1000, leases up to 600 s, a body must fit in one publish request;
        #: no counts.
        self.capabilities = QueueCapabilities(
            max_batch=MAX_PULL,
            max_lease_seconds=MAX_LEASE_SECONDS,
            max_body_bytes=admin.PUBLISH_REQUEST_BYTES - len(self.topic_path) - 16,
            counts=False,
        )

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> PubSubQueue:
        """Open ``pubsub://PROJECT/SUBSCRIPTION`` or the long form; ``kwargs`` as the class's.

        With ``create``, the topic and the subscription are created if missing.

        Raises:
            ConfigError: If the URL has neither form, or as the constructor.
        """
        project, subscription, topic = parse_url(url)
        if topic and kwargs.get("topic", topic) != topic:
            raise ConfigError(f"topic={kwargs['topic']!r} contradicts the URL {url!r}")
        kwargs["topic"] = topic or kwargs.get("topic")
        queue = cls(project, subscription, create=create, **kwargs)
        queue.url = url
        return queue

    # receiving and settling

    def receive(
        self, max_messages: int = 1, *, wait_seconds: float = 0.0, lease_seconds: float = 30.0
    ) -> list[Message]:
        """Lease up to ``max_messages`` (at most 1000) messages with synchronous pulls.

        Pulls again until a message arrives or ``wait_seconds`` passed; ``lease_seconds`` is
        rounded up to whole seconds (at most 600).
        """
        _checks.check_receive_args(max_messages, wait_seconds, lease_seconds)
        lease = _lease(lease_seconds)
        deadline = time.monotonic() + wait_seconds

        def pull() -> list[Any]:
            timeout = max(deadline - time.monotonic(), QUICK_PULL_SECONDS)
            return self._pull(min(max_messages, MAX_PULL), timeout)

        received = _common.poll(pull, wait_seconds, pause=EMPTY_PULL_PAUSE)
        if received and lease != self.ack_deadline_seconds:
            self._modify([r.ack_id for r in received], lease)
        message = self._message
        return [message(r) for r in received]

    def _pull(self, max_messages: int, timeout: float) -> list[Any]:
        try:
            if self._raw is not None:
                pulled = self._raw.pull(self.subscription_path, max_messages, timeout)
                self._pull_timeouts = 0
                self._silent_until = 0.0  # Pub/Sub answers (a new connection, a stall over)
                return list(pulled.received_messages)
            response = self._subscriber.pull(
                request={"subscription": self.subscription_path, "max_messages": max_messages},
                timeout=timeout,
                retry=None,  # our loop retries; a transient error reaches the caller
            )
        except gexc.DeadlineExceeded:
            # An emulator answers an empty pull early: on one, pulls that time out went down
            # a dead connection (the real service answers an empty pull this way).
            self._pull_timeouts += 1
            if self._on_emulator and self._pull_timeouts >= 2:
                self._reconnect()
            return []
        self._pull_timeouts = 0
        self._silent_until = 0.0
        return list(response.received_messages)

    def _message(self, received: Any) -> Message:
        """A ``Message`` of a received message (a raw protobuf or a proto-plus wrapper)."""
        pubsub_message = received.message  # read each field once: proto-plus reads are slow
        data: bytes = pubsub_message.data
        message_id: str = pubsub_message.message_id
        try:
            body = data.decode("utf-8")
        except UnicodeDecodeError:
            logger.warning("%s: message %s is not UTF-8", self.url, message_id)
            body = data.decode("utf-8", "replace")
        return Message(
            message_id,
            body,
            received.delivery_attempt or self._count_attempt(message_id),
            _Ack(self.subscription_path, received.ack_id),
            _sent_at(pubsub_message.publish_time),
        )

    def _count_attempt(self, message_id: str) -> int:
        with self._lock:
            attempt = self._attempts.pop(message_id, 0) + 1
            self._attempts[message_id] = attempt
            if len(self._attempts) > TRACKED_ATTEMPTS:
                self._attempts.popitem(last=False)
        return attempt

    def _ack_id(self, message: Message) -> str:
        handle: _Ack = _checks.check_handle(
            message, _Ack, "Pub/Sub queue", origin="subscription", here=self.subscription_path
        )
        return handle.ack_id

    def _modify(self, ack_ids: list[str], seconds: int) -> None:
        self._in_chunks("modify", ack_ids, seconds)

    def _in_chunks(self, action: str, ack_ids: list[str], seconds: int = 0) -> None:
        """Acknowledge or modify ``ack_ids`` in requests of at most :data:`ACK_CHUNK`.

        Every chunk is tried; a chunk that fails is reported by index in one BatchError.
        """
        failures: list[tuple[int, str, str]] = []
        size = min(ACK_CHUNK, self.capabilities.max_batch)
        for start in range(0, len(ack_ids), size):
            chunk = ack_ids[start : start + size]
            try:
                self._check_answering()
                if self._raw is not None:
                    if action == "ack":
                        self._raw.acknowledge(self.subscription_path, chunk, SETTLE_TIMEOUT_SECONDS)
                    else:
                        self._raw.modify_ack_deadline(
                            self.subscription_path, chunk, seconds, SETTLE_TIMEOUT_SECONDS
                        )
                elif action == "ack":
                    self._subscriber.acknowledge(subscription=self.subscription_path, ack_ids=chunk)
                else:
                    self._subscriber.modify_ack_deadline(
                        subscription=self.subscription_path,
                        ack_ids=chunk,
                        ack_deadline_seconds=seconds,
                    )
            except gexc.GoogleAPICallError as exc:
                if isinstance(exc, gexc.DeadlineExceeded):
                    self._silent_until = time.monotonic() + SETTLE_TIMEOUT_SECONDS
                    self._reconnect()
                if len(ack_ids) <= size:  # one request: its own error says it best
                    raise
                failures += [(start + i, type(exc).__name__, str(exc)) for i in range(len(chunk))]
        verb = "acknowledged in" if action == "ack" else "modified in"
        _common.raise_failures(self.url, verb, failures, len(ack_ids))

    def _reconnect(self) -> None:
        """Replace the subscriber client (and so its connection) after a settle request
        timed out.

        Acknowledge and ModifyAckDeadline answer in milliseconds: one that times out most
        likely went down a dead connection (half-open after the peer crashed, forgotten by a
        NAT, a proxy that went silent). gRPC notices that only through keepalive pings, which
        it sends only while calls are outstanding, so pulls on it would time out for a
        minute or more as if the queue were empty (a pull's own timeout is no such sign: an
        empty subscription answers a pull that way, except on an emulator, which answers it
        early). The calls that follow go through a new client; the old one is closed, and a
        call still on it fails and is retried by its caller. Only a client made here is
        replaced, at most once per :data:`SETTLE_TIMEOUT_SECONDS`.
        """
        if not self._owns[0] or self._closed:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._reconnected_at < SETTLE_TIMEOUT_SECONDS:
                return
            self._reconnected_at = now
        try:
            fresh = make_client("subscriber", self._emulator_host, own_connection=True)
        except Exception as exc:
            logger.warning("%s: cannot open a new connection to Pub/Sub: %s", self.url, exc)
            return
        with self._lock:
            old, closed = self._subscriber, self._closed
            if not closed:
                self._subscriber, self._raw = fresh, RawSubscriber.of(fresh)
        if closed:
            fresh.close()
            return
        logger.warning(
            "%s: a request went unanswered for %g s; reconnecting to Pub/Sub",
            self.url,
            SETTLE_TIMEOUT_SECONDS,
        )
        old.close()

    def _check_answering(self) -> None:
        """Fail fast for :data:`SETTLE_TIMEOUT_SECONDS` after a settle request timed out, or
        until a pull is answered (on the new connection :meth:`_reconnect` made, or after a
        stall), whichever comes first.

        A dead endpoint would otherwise cost every later request its full timeout: a daemon
        releasing 100 buffered messages one by one at SIGTERM would wait 100 timeouts. The
        leases are lost either way; Pub/Sub delivers those messages again when they end. A
        live one should not lose the acks of every task that ends in the window: each is a
        task run twice.
        """
        if time.monotonic() < self._silent_until:
            raise gexc.ServiceUnavailable(
                f"{self.url}: Pub/Sub did not answer a request within "
                f"{SETTLE_TIMEOUT_SECONDS:g} s just before; not tried"
            )

    def ack(self, message: Message) -> None:
        """Acknowledge (delete) a received message."""
        self.ack_many([message])

    def ack_many(self, messages: Sequence[Message]) -> None:
        """Acknowledge several received messages, up to 500 per request.

        Raises:
            BatchError: If some requests of a large batch failed (the others went through).
        """
        here = self.subscription_path
        ack_ids = []
        for message in messages:  # the usual handle checked inline: this runs per task
            handle = message.handle
            if type(handle) is _Ack and handle.subscription == here:
                ack_ids.append(handle.ack_id)
            else:
                ack_ids.append(self._ack_id(message))  # anything else: its error
        try:
            self._in_chunks("ack", ack_ids)
        finally:
            if self._attempts:  # counted here only without a dead-letter policy
                with self._lock:
                    for message in messages:
                        self._attempts.pop(message.id, None)

    def extend_many(self, messages: Sequence[Message], lease_seconds: float) -> list[Message]:
        """Set several ack deadlines with ``ModifyAckDeadline``, up to 500 ack ids per request.

        Pub/Sub silently ignores ack ids of earlier deliveries, so no lost lease is reported:
        the returned list is always empty.

        Raises:
            BatchError: If some requests of a large batch failed (the others went through).
        """
        _checks.check_seconds("lease_seconds", lease_seconds)
        lease = _lease(lease_seconds)
        self._modify([self._ack_id(message) for message in messages], lease)
        return []

    def release(self, message: Message) -> None:
        """Make a received message deliverable again at once (ack deadline 0)."""
        self._modify([self._ack_id(message)], 0)

    def extend(self, message: Message, lease_seconds: float) -> None:
        """Set the message's ack deadline to ``lease_seconds`` (rounded up, <= 600) from now."""
        _checks.check_seconds("lease_seconds", lease_seconds)
        self._modify([self._ack_id(message)], _lease(lease_seconds))

    # sending

    def send(self, body: str) -> None:
        """Publish one message to the subscription's topic.

        Raises:
            ValueError: If the body does not fit in a publish request.
            PublishError: If Pub/Sub did not confirm the publish.
        """
        self._publish([self._check_size(_checks.check_body(body), "body")])

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Publish many messages (batched by the client) and wait until all are confirmed.

        Every body is checked before any is published.

        Raises:
            ValueError: If a body does not fit in a publish request (nothing is sent).
            PublishError: If some were not published; it lists them by index, and every
                other body was published.
        """
        checked = _checks.check_bodies(bodies)
        limit = self.capabilities.max_body_bytes
        self._publish(_common.encode_bodies(checked, limit, self._where))

    @property
    def _where(self) -> str:
        return f"a Pub/Sub message to {self.topic_path}"

    def _check_size(self, body: str, what: str) -> bytes:
        return _common.check_size(body, self.capabilities.max_body_bytes, what, self._where)

    def _publish(self, payloads: list[bytes]) -> None:
        if self.topic_path == admin.DELETED_TOPIC:
            raise ConfigError(f"the topic of {self.subscription_path} was deleted: cannot send")
        if self._raw_publisher is not None:
            failures = self._raw_publisher.publish(
                self.topic_path, payloads, PUBLISH_TIMEOUT_SECONDS
            )
        else:
            failures = self._publish_one_by_one(payloads)
        try:
            _common.raise_failures(self.topic_path, "published to", failures, len(payloads))
        except BatchError as exc:
            raise PublishError(str(exc), exc.failures) from None

    def _publish_one_by_one(self, payloads: list[bytes]) -> list[tuple[int, str, str]]:
        """Publish through the client's ``publish`` (a wrapped or fake client); the failures."""
        pending: dict[int, Any] = {}
        failures: list[tuple[int, str, str]] = []
        for i, data in enumerate(payloads):
            try:
                pending[i] = self._publisher.publish(self.topic_path, data)
            except Exception as exc:  # e.g. a stopped publisher: report it with the others
                failures.append((i, type(exc).__name__, str(exc)))
        # One future at a time against one deadline (concurrent.futures.wait locks every
        # future's condition at once: slower than the publishes of a large batch).
        deadline = time.monotonic() + PUBLISH_TIMEOUT_SECONDS
        for i, future in pending.items():
            try:
                error = future.exception(timeout=max(0.0, deadline - time.monotonic()))
            except (concurrent.futures.TimeoutError, TimeoutError):
                timeout = f"not confirmed within {PUBLISH_TIMEOUT_SECONDS:.0f} s"
                failures.append((i, "Timeout", timeout))
                continue
            if error is not None:
                failures.append((i, type(error).__name__, str(error)))
        return failures

    # inspecting

    def counts(self) -> QueueCounts:
        """Return ``QueueCounts(None, None)``: Pub/Sub cannot count messages cheaply."""
        return QueueCounts(visible=None, in_flight=None)

    def purge(self) -> None:
        """Delete every message, leased ones included, by seeking the subscription to now.

        If the server refuses to seek, visible messages are pulled and acked instead.
        """
        try:
            self._subscriber.seek(
                request={"subscription": self.subscription_path, "time": datetime.now(UTC)},
                timeout=ADMIN_TIMEOUT_SECONDS,
            )
        except (gexc.MethodNotImplemented, gexc.FailedPrecondition) as exc:
            logger.info("%s: seek refused (%s); acking visible messages", self.url, exc)
            while batch := self.receive(MAX_PULL, lease_seconds=60):
                self.ack_many(batch)
        with self._lock:
            self._attempts.clear()

    def delete(self, *, topic: bool = False) -> None:
        """Delete the subscription; with ``topic``, also its topic and its dead-letter topic."""
        admin.delete(self._subscriber, self._publisher, self.subscription_path, topics=topic)

    def close(self) -> None:
        """Flush and close the clients this object made (idempotent)."""
        with self._lock:  # against a _reconnect swapping the subscriber
            if self._closed:
                return
            self._closed = True
            subscriber = self._subscriber
        owns_subscriber, owns_publisher = self._owns
        if owns_publisher and self._publisher is not None:
            self._publisher.stop()
            self._publisher.transport.close()
        if owns_subscriber and subscriber is not None:
            subscriber.close()

    def __repr__(self) -> str:
        return f"PubSubQueue({self.subscription_path!r})"


def _lease(lease_seconds: float) -> int:
    return _common.whole_seconds(lease_seconds, MAX_LEASE_SECONDS, "Pub/Sub")


def _sent_at(published: Any) -> float | None:
    """Unix time of a message's ``publish_time`` (a protobuf Timestamp or a datetime)."""
    if hasattr(published, "seconds"):  # the raw protobuf
        return published.seconds + published.nanos / 1e9 if published.seconds else None
    timestamp = getattr(published, "timestamp", None)
    return timestamp() if callable(timestamp) else None
