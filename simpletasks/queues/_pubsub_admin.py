"""Pub/Sub plumbing for :mod:`simpletasks.queues.pubsub`: URLs, clients, creating and deleting.

Kept apart from the queue operations so that each module stays small.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import google.auth.exceptions
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from simpletasks.endpoints import split_host_port, unreachable
from simpletasks.errors import ConfigError, CredentialsError, ServiceUnavailable
from simpletasks.urls import create_hint

logger = logging.getLogger(__name__)

ADMIN_TIMEOUT_SECONDS = 30.0  # get/create/delete/seek calls
SUBSCRIPTION_DEADLINE_RANGE = (10, 600)  # what Pub/Sub allows for ack_deadline_seconds
DEAD_LETTER_ATTEMPTS_RANGE = (5, 100)  # what Pub/Sub allows for max_delivery_attempts
DELETED_TOPIC = "_deleted-topic_"  # a subscription's topic once the topic was deleted
PUBLISH_REQUEST_BYTES = 10_000_000  # largest publish request Pub/Sub accepts
#: Publisher batching for send_batch: up to 1000 messages / 10 MB per request, 10 ms linger.
BATCH_SETTINGS = pubsub_v1.types.BatchSettings(
    max_bytes=PUBLISH_REQUEST_BYTES, max_latency=0.01, max_messages=1000
)

_PROJECT_RE = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_NAME_RE = re.compile(r"^(?!goog)[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
FORMS = "pubsub://PROJECT/SUBSCRIPTION or pubsub://projects/P/topics/T/subscriptions/S"


def _check_name(kind: str, name: str, url: str) -> str:
    pattern = _PROJECT_RE if kind == "project" else _NAME_RE
    if not pattern.match(name):
        rule = (
            "6-30 lowercase letters, digits or '-', starting with a letter"
            if kind == "project"
            else "3-255 letters, digits or -_.~+%, starting with a letter, not with 'goog'"
        )
        raise ConfigError(f"Pub/Sub {kind} {name!r} in {url!r} is invalid: use {rule}")
    return name


def parse_url(url: str) -> tuple[str, str, str | None]:
    """Split a ``pubsub://`` URL into ``(project, subscription, topic or None)``.

    Raises:
        ConfigError: If the URL has neither accepted form or a name is invalid.
    """
    scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
    if scheme.lower() != "pubsub" or not sep:
        raise ConfigError(f"not a Pub/Sub queue URL: {url!r} (expected {FORMS})")
    parts = rest.split("/")
    if any(c in rest for c in "?#") or not all(parts):
        parts = []
    if len(parts) == 2 and parts[0] != "projects":
        project, subscription, topic = parts[0], parts[1], None
    elif len(parts) == 6 and parts[::2] == ["projects", "topics", "subscriptions"]:
        project, topic, subscription = parts[1::2]
    else:
        raise ConfigError(f"Pub/Sub queue URL {url!r} must be {FORMS}, with nothing else")
    _check_name("project", project, url)
    _check_name("subscription", subscription, url)
    return project, subscription, topic and _check_name("topic", topic, url)


#: gRPC options of an emulator channel: keepalive pings (as the library's own channels to
#: Pub/Sub have), so a connection that went silent (half-open, a stalled network) is noticed
#: and replaced instead of failing every call on it until the process restarts.
EMULATOR_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]


#: The gRPC channel option of a client that must not share a connection with earlier ones.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def make_clients(emulator_host: str | None = None) -> tuple[Any, Any]:
    """Return a ``(SubscriberClient, PublisherClient)`` pair (see :func:`make_client`)."""
    return make_client("subscriber", emulator_host), make_client("publisher", emulator_host)


def make_client(
    kind: str, emulator_host: str | None = None, *, own_connection: bool = False
) -> Any:
    """Return a ``SubscriberClient`` (``kind="subscriber"``) or a ``PublisherClient``.

    The publisher batches with :data:`BATCH_SETTINGS`.

    Args:
        kind: ``"subscriber"`` or ``"publisher"``.
        emulator_host: ``host:port`` of an emulator: plain gRPC, no credentials. Without it,
            the library's defaults apply (``PUBSUB_EMULATOR_HOST``, else Application Default
            Credentials).
        own_connection: Give the client a connection of its own. gRPC channels to the same
            address with the same options share their connections (a process-wide pool),
            so a new client would otherwise go on using the one a reconnect replaces.

    Raises:
        CredentialsError: If no Google credentials can be found.
    """
    kwargs: dict[str, Any] = {}
    if emulator_host:
        import grpc
        from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
        from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

        transport = SubscriberGrpcTransport if kind == "subscriber" else PublisherGrpcTransport
        options = EMULATOR_CHANNEL_OPTIONS + (OWN_CONNECTION if own_connection else [])
        channel = grpc.insecure_channel(emulator_host, options=options)
        kwargs["transport"] = transport(host=emulator_host, channel=channel)
    elif own_connection and not os.environ.get("PUBSUB_EMULATOR_HOST"):
        from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
        from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

        transport = SubscriberGrpcTransport if kind == "subscriber" else PublisherGrpcTransport

        def channel_of_its_own(*args: Any, options: list[Any], **rest: Any) -> Any:
            return transport.create_channel(*args, options=options + OWN_CONNECTION, **rest)

        kwargs["transport"] = transport(channel=channel_of_its_own)
    try:
        if kind == "subscriber":
            return pubsub_v1.SubscriberClient(**kwargs)
        return pubsub_v1.PublisherClient(BATCH_SETTINGS, **kwargs)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise CredentialsError(
            f"no Google credentials for Pub/Sub ({exc}); set GOOGLE_APPLICATION_CREDENTIALS, "
            "run `gcloud auth application-default login`, run on a VM with a service account, "
            "or pass emulator_host= for an emulator"
        ) from None


def topic_path(project: str, topic: str) -> str:
    """Return ``projects/<project>/topics/<topic>``."""
    return f"projects/{project}/topics/{topic}"


def describe(subscriber: Any, subscription_path: str, topic: str | None) -> Any:
    """Return the ``Subscription`` resource, checking that it is attached to ``topic``.

    Raises:
        ConfigError: If the subscription does not exist or has another topic.
    """
    try:
        info = subscriber.get_subscription(
            subscription=subscription_path, timeout=ADMIN_TIMEOUT_SECONDS
        )
    except gexc.NotFound:
        _, project, _, name = subscription_path.split("/")
        raise ConfigError(
            f"Pub/Sub subscription {subscription_path} does not exist (at "
            f"{getattr(subscriber, 'target', '?')}); "
            f"{create_hint(f'pubsub://{project}/{name}', 'queue')}"
        ) from None
    expected = topic and topic_path(subscription_path.split("/")[1], topic)
    if expected and info.topic != expected:
        raise ConfigError(
            f"Pub/Sub subscription {subscription_path} is attached to {info.topic}, "
            f"not to {expected}"
        )
    return info


def create(
    subscriber: Any,
    publisher: Any,
    subscription_path: str,
    topic: str,
    *,
    ack_deadline_seconds: int,
    dead_letter_attempts: int | None,
) -> None:
    """Create ``topic`` and the subscription on it unless they exist.

    The subscription's ack deadline is clamped to 10-600 s. With ``dead_letter_attempts``
    it gets a dead-letter policy whose topic, ``<subscription>-dead-letter``, is created too.

    Raises:
        ConfigError: If ``dead_letter_attempts`` is outside 5-100.
    """
    low, high = DEAD_LETTER_ATTEMPTS_RANGE
    if dead_letter_attempts is not None and not low <= dead_letter_attempts <= high:
        raise ConfigError(f"dead_letter_attempts must be {low}-{high}, got {dead_letter_attempts}")
    _, project, _, name = subscription_path.split("/")
    low, high = SUBSCRIPTION_DEADLINE_RANGE
    request: dict[str, Any] = {
        "name": subscription_path,
        "topic": topic_path(project, topic),
        "ack_deadline_seconds": min(max(int(ack_deadline_seconds), low), high),
    }
    topics = [request["topic"]]
    if dead_letter_attempts is not None:
        topics.append(topic_path(project, f"{name}-dead-letter"[:255]))
        request["dead_letter_policy"] = {
            "dead_letter_topic": topics[-1],
            "max_delivery_attempts": dead_letter_attempts,
        }
    for path in topics:
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(name=path, timeout=ADMIN_TIMEOUT_SECONDS)
            logger.info("created Pub/Sub topic %s", path)
    with contextlib.suppress(gexc.AlreadyExists):  # describe() then checks its topic
        subscriber.create_subscription(request=request, timeout=ADMIN_TIMEOUT_SECONDS)
        logger.info("created Pub/Sub subscription %s", subscription_path)


def delete(subscriber: Any, publisher: Any, subscription_path: str, *, topics: bool) -> None:
    """Delete the subscription; with ``topics``, also its topic and dead-letter topic."""
    info = subscriber.get_subscription(
        subscription=subscription_path, timeout=ADMIN_TIMEOUT_SECONDS
    )
    subscriber.delete_subscription(subscription=subscription_path, timeout=ADMIN_TIMEOUT_SECONDS)
    logger.info("deleted Pub/Sub subscription %s", subscription_path)
    for path in (info.topic, info.dead_letter_policy.dead_letter_topic) if topics else ():
        if path and path != DELETED_TOPIC:
            with contextlib.suppress(gexc.NotFound):
                publisher.delete_topic(topic=path, timeout=ADMIN_TIMEOUT_SECONDS)
                logger.info("deleted Pub/Sub topic %s", path)


EMULATOR_HINT = (
    "start it (`simpletasks local --stack`, or `gcloud beta emulators pubsub start "
    "--host-port=HOST:PORT`) or fix the address"
)


def check_emulator(emulator_host: str | None, url: str) -> None:
    """Fail in seconds if the emulator in use does not answer (the library retries ~45 s).

    The emulator is ``emulator_host`` or, failing that, ``PUBSUB_EMULATOR_HOST``; without
    either, nothing is checked here.

    Raises:
        ServiceUnavailable: Naming the address, where it came from and what to do.
    """
    source = "emulator_host="
    if not emulator_host:
        emulator_host, source = os.environ.get("PUBSUB_EMULATOR_HOST"), "PUBSUB_EMULATOR_HOST"
    if not emulator_host:
        return
    host, port = split_host_port(emulator_host, 8085)
    reason = unreachable(host, port)
    if reason is not None:
        raise ServiceUnavailable(
            f"the Pub/Sub emulator at {emulator_host} (from {source}) does not answer for "
            f"{url}: {reason}; {EMULATOR_HINT}"
        )


@contextlib.contextmanager
def service_errors(url: str, target: str) -> Iterator[None]:
    """Turn "Pub/Sub cannot be reached" failures while opening into one clear error.

    Raises:
        ServiceUnavailable: On ``UNAVAILABLE``/deadline errors (after the library's retries).
    """
    try:
        yield
    except (gexc.RetryError, gexc.ServiceUnavailable, gexc.DeadlineExceeded) as exc:
        cause = getattr(exc, "cause", None) or exc
        raise ServiceUnavailable(
            f"cannot reach Pub/Sub at {target} for {url}: {type(cause).__name__}: "
            f"{str(cause).splitlines()[0] if str(cause) else ''}; check the network and "
            "credentials, or for an emulator that it runs at that address"
        ) from None
