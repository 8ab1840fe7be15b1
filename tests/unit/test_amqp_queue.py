"""The RabbitMQ backend's URLs and password masking: checked before any connection.

Everything that needs the broker is in tests/integration/test_amqp_broker.py.
"""

from __future__ import annotations

import pytest

from simpletasks.errors import ConfigError
from simpletasks.queues._amqp import parse_url
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
