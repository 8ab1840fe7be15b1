"""The RabbitMQ backend's URLs, password masking and publish frames: no broker needed.

Everything that needs the broker is in tests/integration/test_amqp_broker.py.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pika
import pika.connection
import pika.frame
import pika.spec
import pytest

from simpletasks.errors import ConfigError
from simpletasks.queues._amqp import ConfirmPublisher, parse_url
from simpletasks.queues.amqp import (
    AMQPQueue,
)


@pytest.mark.parametrize(
    ("url", "queue", "vhost", "user", "password", "port"),
    [
        ("amqp://h?queue=q", "q", "/", "guest", "guest", 5672),
        ("amqp://h/?queue=q", "q", "/", "guest", "guest", 5672),
        ("amqp://h:5673/%2F?queue=q", "q", "/", "guest", "guest", 5673),
        ("amqp://u:p@h/lab?queue=tasks", "tasks", "lab", "u", "p", 5672),
        ("amqp://u%40x:p%2Fw%3A@h/a%2Fb?queue=my%20q", "my q", "a/b", "u@x", "p/w:", 5672),
    ],
)
def test_url_forms(url: str, queue: str, vhost: str, user: str, password: str, port: int) -> None:
    name, parameters, _ = parse_url(url)
    assert (name, parameters.virtual_host, parameters.host, parameters.port) == (
        queue,
        vhost,
        "h",
        port,
    )
    assert (parameters.credentials.username, parameters.credentials.password) == (user, password)
    assert parameters.blocked_connection_timeout == 60


def test_url_options_go_to_pika_and_the_password_is_masked() -> None:
    url = "amqp://u:s3cret@h/%2F?queue=q&heartbeat=7&blocked_connection_timeout=5"
    _, parameters, masked = parse_url(url)
    assert (parameters.heartbeat, parameters.blocked_connection_timeout) == (7, 5)
    assert masked == "amqp://u:***@h/%2F?queue=q&heartbeat=7&blocked_connection_timeout=5"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("amqp://h/%2F", r"must name exactly one queue, as amqp://user:pass@host:5672/vhost\?"),
        ("amqp://h/%2F?queue=", "must name exactly one queue"),
        ("amqp://h/%2F?queue=a&queue=b", "must name exactly one queue"),
        ("amqp://h/?queue=q&heartbeat=1&heartbeat=2", "repeats an option"),
        ("amqp://h/?queue=q&colour=red", "has a bad option: Unknown URL parameter: 'colour'"),
        ("amqp://h/?queue=q&heartbeat=often", "has a bad option: Invalid heartbeat value"),
        ("amqp://h:99999/?queue=q", "is malformed: Port out of range"),
        ("amqp://h/?queue=q&&", "is malformed: bad query field"),
        ("amqp:///%2F?queue=q", "has no host"),
        ("amqp://h/a/b?queue=q", r"the vhost 'a/b' contains '/'; percent-encode it .*%2F"),
        ("amqp://h/?queue=q#x", "must not have a #fragment"),
        ("amqps://h/?queue=q", "not a RabbitMQ queue URL"),
        ("amqp:h?queue=q", "not a RabbitMQ queue URL"),
        ("amqp://h/?queue=amq.gen", "queue name 'amq.gen' is reserved"),
        ("amqp://h/?queue=" + "x" * 256, "is invalid: use 1-255 bytes of UTF-8"),
        ("amqp://u:s3cret@h/?colour=red", r"'amqp://u:\*\*\*@h/\?colour=red' must name"),
    ],
)
def test_bad_urls_are_rejected_before_connecting(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        AMQPQueue.from_url(url)
    assert "s3cret" not in str(info.value)


def test_redact_url_masks_passwords_everywhere() -> None:
    from simpletasks.urls import redact, redact_url

    assert redact_url("amqp://app:s3cret@h:5672/v?queue=q") == "amqp://app:***@h:5672/v?queue=q"
    assert redact_url("amqp://h/%2F?queue=q") == "amqp://h/%2F?queue=q"
    assert redact_url("amqps://u:p@ss@h/") == "amqps://u:***@h/"
    text = "failed: amqp://u:pw1@a/x then AMQP://v:pw2@b/y"
    assert "pw1" not in redact(text) and "pw2" not in redact(text)


class _CapturingConnection:
    """The parts of pika's connection that publishing touches, writing into a list."""

    def __init__(self, body_max: int) -> None:
        self._body_max_length = body_max
        self.bytes_sent = self.frames_sent = 0
        self.writes: list[bytes] = []

    def _adapter_emit_data(self, data: bytes) -> None:
        self.writes.append(data)

    def _output_marshaled_frames(self, frames: list[bytes]) -> None:
        for data in frames:
            self.bytes_sent += len(data)
            self.frames_sent += 1
            self._adapter_emit_data(data)


class _ConfirmingChannel:
    """A blocking channel whose broker confirms everything at once (no network)."""

    def __init__(self, connection: _CapturingConnection, number: int) -> None:
        self._impl = self
        self.connection, self.channel_number = connection, number
        self.on_confirm: Any = None

    def confirm_delivery(self, ack_nack_callback: Any, callback: Any) -> None:
        self.on_confirm = ack_nack_callback
        callback(None)

    def add_on_return_callback(self, callback: Any) -> None:
        pass

    def _raise_if_not_open(self) -> None:
        pass

    def basic_publish(
        self, exchange: str, key: str, body: bytes, properties: Any, **kw: Any
    ) -> None:
        method = pika.spec.Basic.Publish(exchange=exchange, routing_key=key, **kw)
        pika.connection.Connection._send_message(
            self.connection,
            self.channel_number,
            method,
            (properties, body),  # type: ignore[arg-type]
        )

    def _flush_output(self, done: Any) -> None:
        if not done():  # the broker acks every message published so far
            publisher = self.publisher
            tag = publisher._sequence
            self.on_confirm(pika.frame.Method(1, pika.spec.Basic.Ack(tag, multiple=True)))
        assert done()


@pytest.mark.parametrize("body_max", [131_064, 10])
def test_publish_bodies_writes_what_pika_would_write_in_few_writes(body_max: int) -> None:
    bodies = [b"{}", "caf\u00e9 \U0001f680".encode(), b"x" * 25, b"y" * 300_000]
    ours, reference = _CapturingConnection(body_max), _CapturingConnection(body_max)
    channel = _ConfirmingChannel(ours, 3)
    channel.publisher = publisher = ConfirmPublisher(channel)
    assert publisher.publish_bodies("tasks", bodies) == {}
    assert publisher.publish_bodies("tasks", bodies[:1]) == {}  # the template is reused
    assert publisher._sequence == 5  # every message numbered for its confirm

    # The same messages through pika's own basic_publish, with the ids that were sent.
    sent = b"".join(ours.writes)
    found = re.findall(rb"(?s)\x02 ([0-9a-f]{32}).{8}\xce", sent)
    assert len(found) == 5 and len(set(found)) == 5
    stamps = [
        int.from_bytes(t, "big") for t in re.findall(rb"(?s)\x02 [0-9a-f]{32}(.{8})\xce", sent)
    ]
    assert len(stamps) == 5 and all(abs(t - time.time()) < 60 for t in stamps)
    pika_channel = _ConfirmingChannel(reference, 3)
    for body, message_id, stamp in zip(bodies + bodies[:1], found, stamps, strict=True):
        properties = pika.BasicProperties(
            content_type="text/plain; charset=utf-8",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id.decode(),
            timestamp=stamp,
        )
        pika_channel.basic_publish("", "tasks", body, properties, mandatory=True)
    assert sent == b"".join(reference.writes)
    assert (ours.bytes_sent, ours.frames_sent) == (reference.bytes_sent, reference.frames_sent)
    assert len(ours.writes) <= 3 < len(reference.writes)  # joined, not one write per frame


def test_publish_bodies_falls_back_to_pika_when_its_header_layout_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from simpletasks.queues import _amqp

    def other_layout(self: Any) -> bytes:  # e.g. a pika that orders properties differently
        return b"\x02\x00\x03" + bytes(30) + b"\xce"

    monkeypatch.setattr(_amqp, "_TEMPLATES", {})
    monkeypatch.setattr(pika.frame.Header, "marshal", other_layout)
    connection = _CapturingConnection(131_064)
    channel = _ConfirmingChannel(connection, 3)
    channel.publisher = publisher = ConfirmPublisher(channel)
    with caplog.at_level("WARNING"):
        assert publisher.publish_bodies("tasks", [b"a", b"b"]) == {}
    assert "publishing through pika" in caplog.text
    assert publisher._sequence == 2
    assert len(connection.writes) == 6  # pika's own three writes per message
