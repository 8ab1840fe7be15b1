"""Helpers of the RabbitMQ backend (:mod:`.amqp`): its errors, URL parsing and connecting."""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pika
import pika.exceptions
import pika.frame
import pika.spec

from simpletasks.errors import ConfigError, CredentialsError, ServiceUnavailable, SimpleTasksError
from simpletasks.urls import redact, redact_url

logger = logging.getLogger(__name__)

BLOCKED_SECONDS = 60.0  # give up a publish after the broker blocked us this long
#: Longest a call to the broker may go unanswered (and connecting may take) before the
#: connection is given up: bounds how long a dead endpoint holds a daemon up (its stop too).
OPERATION_SECONDS = 4.0


class BrokerError(SimpleTasksError):
    """RabbitMQ cannot be reached, or refused a request."""


class BrokerUnavailable(BrokerError, ServiceUnavailable):
    """Nothing answers at the broker's address (refused, unreachable, timed out)."""


class BrokerLoginRefused(BrokerError, CredentialsError):
    """The broker refused the user/password, or the user may not use the vhost."""


class PublishError(BrokerError):
    """The broker did not confirm a message; ``sent`` earlier ones of the batch were sent."""

    def __init__(self, message: str, sent: int) -> None:
        super().__init__(message)
        self.sent = sent


def check_name(name: Any) -> str:
    """Return ``name`` if it is a valid queue name of ours, else raise ``ConfigError``."""
    if not isinstance(name, str) or not name or len(name.encode()) > 255:
        raise ConfigError(f"RabbitMQ queue name {name!r} is invalid: use 1-255 bytes of UTF-8")
    if name.startswith("amq."):
        raise ConfigError(f"RabbitMQ queue name {name!r} is reserved (amq.* are the broker's)")
    return name


def parse_url(url: str) -> tuple[str, pika.URLParameters, str]:
    """Split an amqp:// URL into (queue name, connection parameters, URL with masked password).

    Raises:
        ConfigError: Naming what is wrong (the password masked).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "amqp" or not url.partition("://")[1]:
        raise ConfigError(
            f"not a RabbitMQ queue URL: {url!r} (expected amqp://host/vhost?queue=name)"
        )
    masked = redact_url(url)
    try:
        options = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        raise ConfigError(f"RabbitMQ queue URL {masked!r} is malformed: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"RabbitMQ queue URL {masked!r} has no host")
    if "/" in parts.path[1:]:
        raise ConfigError(
            f"RabbitMQ queue URL {masked!r}: the vhost {parts.path[1:]!r} contains '/'; "
            "percent-encode it (the vhost '/' is written %2F)"
        )
    if parts.fragment:
        raise ConfigError(f"RabbitMQ queue URL {masked!r} must not have a #fragment")
    names = options.pop("queue", [])
    if len(names) != 1 or not names[0]:
        raise ConfigError(
            f"RabbitMQ queue URL {masked!r} must name exactly one queue, as "
            "amqp://user:pass@host:5672/vhost?queue=name"
        )
    if any(len(values) > 1 for values in options.values()):
        raise ConfigError(f"RabbitMQ queue URL {masked!r} repeats an option")
    query = urlencode({key: values[0] for key, values in options.items()})
    try:
        parameters = pika.URLParameters(f"amqp://{parts.netloc}{parts.path}?{query}")
    except ValueError as exc:
        raise ConfigError(f"RabbitMQ queue URL {masked!r} has a bad option: {exc}") from None
    if "blocked_connection_timeout" not in options:  # a broker short of memory blocks publishes
        parameters.blocked_connection_timeout = BLOCKED_SECONDS
    for timeout in ("socket_timeout", "stack_timeout"):  # connecting to a dead endpoint
        if timeout not in options:
            setattr(parameters, timeout, OPERATION_SECONDS)
    return check_name(names[0]), parameters, masked


_quiet = threading.local()
_quiet_installed = False
_quiet_lock = threading.Lock()


class _QuietWhileOurs(logging.Filter):
    """Drop pika's ERROR (and lower) records logged while one of our calls runs.

    pika logs every failed connection step at ERROR ("Socket EOF", "connection_lost",
    "Unexpected connection close"...); we raise or log the failure once ourselves. Other
    users of pika in the process keep its logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.ERROR or not getattr(_quiet, "active", False)


def _install_quiet_filter() -> None:
    global _quiet_installed
    with _quiet_lock:
        if _quiet_installed:
            return
        quiet = _QuietWhileOurs()
        names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] == "pika"]
        for name in names:
            logging.getLogger(name).addFilter(quiet)
        _quiet_installed = True


@contextlib.contextmanager
def quiet_pika() -> Iterator[None]:
    """Silence pika's own ERROR logs in this thread for the duration of the block."""
    _install_quiet_filter()
    was = getattr(_quiet, "active", False)
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = was


def connect(parameters: pika.ConnectionParameters, url: str) -> pika.BlockingConnection:
    """Open a connection, turning pika's failures into one clear error.

    Args:
        parameters: The connection parameters.
        url: The queue's URL, password masked, for the messages.

    Raises:
        BrokerLoginRefused: The broker refused the login or the vhost.
        BrokerUnavailable: Nothing answers at the address (or the connection broke while
            opening).
    """
    where = f"{parameters.host}:{parameters.port}"
    user = parameters.credentials.username
    try:
        with quiet_pika():
            return pika.BlockingConnection(parameters)
    except pika.exceptions.ProbableAuthenticationError:
        raise BrokerLoginRefused(
            f"RabbitMQ at {where} refused the login of user {user!r} ({url}): check the user "
            "and password in the URL (amqp://user:password@host/vhost?queue=name)"
        ) from None
    except pika.exceptions.ProbableAccessDeniedError:
        vhost = parameters.virtual_host
        raise BrokerLoginRefused(
            f"RabbitMQ at {where} does not let user {user!r} use vhost {vhost!r} ({url}): "
            "check the vhost in the URL (the default vhost '/' is written %2F) and the "
            "user's permissions"
        ) from None
    except pika.exceptions.AMQPConnectionError as exc:
        cause = _describe(exc)
        raise BrokerUnavailable(
            f"cannot connect to RabbitMQ at {where} ({url}): {cause}. Is the broker running "
            "and is the host:port right? (start one with `rabbitmq-server -detached`)"
        ) from None


def _describe(exc: BaseException) -> str:
    """A short reason for a failed connection (pika nests the socket error in its own)."""
    text = repr(exc)
    for needle, reason in (
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("Timeout", "timed out"),
        ("gaierror", "unknown host"),
        ("Name or service not known", "unknown host"),
        ("unreachable", "network unreachable"),
        ("EOF", "the connection was closed while opening"),
    ):
        if needle in text:
            return reason
    return redact(text)


#: Content type of what ``send``/``send_batch`` publish (:meth:`ConfirmPublisher.publish_bodies`).
CONTENT_TYPE = "text/plain; charset=utf-8"
_FRAME_END = b"\xce"
_BODY_FRAME = struct.Struct(">BHI")  # frame type 3 (body), channel, payload size
_BODY_SIZE = struct.Struct(">Q")  # a content header's body size
_TIMESTAMP = struct.Struct(">Q")  # the timestamp property: whole seconds since the epoch
_JOIN_BYTES = 256 * 1024  # frames are joined into writes of about this size
_ID_LENGTH = 32  # hex digits of a message id (a uuid4's worth)

NACKED = "the broker nacked it (a full queue with x-overflow reject-publish?)"
UNROUTABLE = "it could not be routed (was the queue deleted?)"


class ConfirmPublisher:
    """Publishes a batch on a channel in confirm mode and waits once for all its confirms.

    pika's ``BlockingChannel.basic_publish`` waits for each confirm in turn (one round trip
    per message). This publishes a whole batch through the channel's underlying
    ``pika.channel.Channel`` and then processes I/O until the broker confirmed (acked,
    nacked or returned) every message of it, so a batch of 100 costs one round trip.
    Call with the owning queue's lock held, as every pika call.

    Args:
        channel: A fresh ``BlockingChannel``, not yet in confirm mode; used only here.
    """

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._impl = channel._impl  # the async channel under the blocking one
        self._sequence = 0  # the broker numbers published messages 1, 2, ... per channel
        self._pending: dict[int, int] = {}  # sequence -> index in the current batch
        self._failed: dict[int, str] = {}  # index -> why
        self._returned: set[str] = set()  # message ids returned as unroutable
        self._id_of: dict[int, str] = {}  # index -> message id (to match returns)
        ready: list[bool] = []
        self._impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: ready.append(True)
        )
        self._impl.add_on_return_callback(self._on_return)
        channel._flush_output(lambda: bool(ready))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        tag = method.delivery_tag
        done = [s for s in self._pending if s <= tag] if method.multiple else [tag]
        for sequence in done:
            index = self._pending.pop(sequence, None)
            if index is None:
                continue
            if nacked:
                self._failed[index] = NACKED
            elif self._id_of.get(index) in self._returned:
                self._failed[index] = UNROUTABLE

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        if properties.message_id:
            self._returned.add(properties.message_id)

    def publish_bodies(self, routing_key: str, bodies: Sequence[bytes]) -> dict[int, str]:
        """Publish ``bodies`` as persistent text messages (mandatory) and wait for every confirm.

        The same messages as :meth:`publish` with ``BasicProperties(content_type=
        CONTENT_TYPE, delivery_mode=Persistent, message_id=<32 hex digits>, timestamp=<now,
        whole seconds>)`` each, but cheaper: the frames are marshalled from one template
        (pika encodes it; only the body size, the message id and the timestamp differ) and
        written to the socket in a few joined writes instead of three per message. Message
        ids are a random 24-hex-digit prefix per call plus the index in 8 hex digits:
        unique, and as long as a ``uuid4().hex``.

        Returns:
            As :meth:`publish`.

        Raises:
            pika.exceptions.AMQPError: As :meth:`publish`.
        """
        impl = self._impl
        impl._raise_if_not_open()  # what pika's basic_publish checks first
        connection = impl.connection
        number = impl.channel_number
        prefix = uuid.uuid4().hex[: _ID_LENGTH - 8]
        ids = [f"{prefix}{i:08x}" for i in range(len(bodies))]
        sent = int(time.time())
        method = pika.frame.Method(
            number, pika.spec.Basic.Publish(exchange="", routing_key=routing_key, mandatory=True)
        ).marshal()
        template = _header_template(number)
        body_max = getattr(connection, "_body_max_length", None)
        if template is None or not body_max or not hasattr(connection, "_adapter_emit_data"):
            # pika's internals are not what this was written against: publish through pika.
            return self.publish(
                routing_key,
                [(b, _properties(i, sent)) for b, i in zip(bodies, ids, strict=True)],
            )
        head, middle = template
        stamp = _TIMESTAMP.pack(sent) + _FRAME_END
        self._pending, self._failed, self._returned = {}, {}, set()
        self._id_of = dict(enumerate(ids))
        parts: list[bytes] = []
        size = frames = 0
        for index, body in enumerate(bodies):
            length = len(body)
            parts += (
                method,
                head,
                _BODY_SIZE.pack(length),
                middle,
                ids[index].encode(),
                stamp,
            )
            frames += 2
            for start in range(0, length, body_max):
                chunk = body[start : start + body_max] if length > body_max else body
                parts += (_BODY_FRAME.pack(3, number, len(chunk)), chunk, _FRAME_END)
                frames += 1
                size += len(chunk)
            self._sequence += 1
            self._pending[self._sequence] = index
            if size >= _JOIN_BYTES:
                _emit(connection, parts, frames)
                parts, size, frames = [], 0, 0
        if parts:
            _emit(connection, parts, frames)
        self._channel._flush_output(lambda: not self._pending)
        failed = self._failed
        self._pending, self._failed, self._returned, self._id_of = {}, {}, set(), {}
        return failed

    def publish(self, routing_key: str, items: list[tuple[bytes, Any]]) -> dict[int, str]:
        """Publish ``(body, properties)`` items (mandatory) and wait for every confirm.

        Every item needs a unique ``properties.message_id`` (how returns are matched).

        Returns:
            ``{index: why}`` of the items the broker did not take (nacked or unroutable);
            empty when every one was confirmed.

        Raises:
            pika.exceptions.AMQPError: If the channel or connection broke meanwhile (the
                unconfirmed ones may or may not have been stored).
        """
        self._pending, self._failed, self._returned = {}, {}, set()
        self._id_of = {i: properties.message_id for i, (_, properties) in enumerate(items)}
        for index, (body, properties) in enumerate(items):
            self._impl.basic_publish("", routing_key, body, properties, mandatory=True)
            self._sequence += 1
            self._pending[self._sequence] = index
        self._channel._flush_output(lambda: not self._pending)
        failed = self._failed
        self._pending, self._failed, self._returned, self._id_of = {}, {}, set(), {}
        return failed


_TEMPLATES: dict[int, tuple[bytes, bytes] | None] = {}


def _properties(message_id: str, sent: int) -> Any:
    """The properties of every message ``send``/``send_batch`` publish (``sent``: Unix time)."""
    return pika.BasicProperties(
        content_type=CONTENT_TYPE,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id,
        timestamp=sent,  # the last property set: the header frame ends with id and timestamp
    )


def _header_template(channel_number: int) -> tuple[bytes, bytes] | None:
    """The content header frame of :meth:`ConfirmPublisher.publish_bodies`, as marshalled by
    pika, split around its variable fields: ``(head, middle)`` such that a message's frame is
    ``head + body size (8 bytes) + middle + message id + timestamp (8 bytes) + frame end``;
    ``None`` (with a warning, once) if this pika lays the frame out otherwise."""
    if channel_number in _TEMPLATES:
        return _TEMPLATES[channel_number]
    placeholder = "0" * _ID_LENGTH
    header = pika.frame.Header(channel_number, 0, _properties(placeholder, 0))
    marshalled = header.marshal()
    # frame type, channel, payload size (7 bytes), class id, weight (4), body size (8)
    head, rest = marshalled[:11], marshalled[19:]
    tail = placeholder.encode() + _TIMESTAMP.pack(0) + _FRAME_END
    template: tuple[bytes, bytes] | None = None
    if marshalled[11:19] != bytes(8) or not rest.endswith(tail):
        logger.warning(
            "pika %s lays out content headers unexpectedly; publishing through pika",
            getattr(pika, "__version__", "?"),
        )
    else:
        template = (head, rest[: -len(tail)])
    _TEMPLATES[channel_number] = template
    return template


def _emit(connection: Any, parts: list[bytes], frames: int) -> None:
    """Write marshalled frames as one buffer (pika writes, and sends, each frame apart)."""
    data = b"".join(parts)
    connection.bytes_sent += len(data)
    connection.frames_sent += frames
    connection._adapter_emit_data(data)
