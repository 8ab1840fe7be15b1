"""Helpers of the RabbitMQ backend (:mod:`.amqp`): its errors and its URL parsing."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pika

from simpletasks.errors import ConfigError, SimpleTasksError

logger = logging.getLogger(__name__)

BLOCKED_SECONDS = 60.0  # give up a publish after the broker blocked us this long


class BrokerError(SimpleTasksError):
    """RabbitMQ cannot be reached, or refused a request."""


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
    masked = url.replace(f":{parts.password}@", ":***@", 1) if parts.password else url
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
    return check_name(names[0]), parameters, masked
