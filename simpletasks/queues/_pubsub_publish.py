"""Raw-protobuf ``Publish`` for the Pub/Sub backend (:mod:`.pubsub`): one request per batch.

``PublisherClient.publish`` takes one message at a time: each gets a proto-plus
``PubsubMessage``, a future, a place in a batch behind a lock, and batches are committed by
a timer thread (10 ms linger) in requests of a few dozen messages when the caller publishes
faster than the linger. For ``send_batch``, whose messages are all known at once, that is
most of the CPU a publish costs. :class:`RawPublisher` sends them itself, in ``Publish``
requests of up to 1,000 messages and 10 MB (Pub/Sub's limits, the client's
``BATCH_SETTINGS``), with plain protobufs on the client's own gRPC channel (so the same
credentials, endpoint and emulator). A failed request is retried as the client retries its
commits (the same error types, exponential backoff) until ``timeout``; what still fails is
reported per message, and the other requests are still sent. As with the client, a retried
request may publish its messages twice (Pub/Sub delivers at least once anyway).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.pubsub_v1.types import pubsub as types

_PublishRequest = types.PublishRequest.pb()
_PublishResponse = types.PublishResponse.pb()

MAX_MESSAGES = 1000  # messages per Publish request (Pub/Sub's limit)
#: What the Publish RPC of the generated client retries (its default retry policy).
RETRIED = (
    gexc.Aborted,
    gexc.Cancelled,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.ServiceUnavailable,
    gexc.Unknown,
)
FIRST_PAUSE, MAX_PAUSE, BACKOFF = 0.1, 60.0, 4.0  # seconds between tries, as the client's
ATTEMPT_SECONDS = 60.0  # longest wait for one request (the client's default timeout)


class RawPublisher:
    """``Publish`` on a gRPC channel with plain protobuf messages, a request per batch.

    Args:
        channel: The ``grpc.Channel`` of a ``PublisherClient``'s transport.
        max_request_bytes: Largest serialized ``PublishRequest`` to send.
    """

    def __init__(self, channel: grpc.Channel, max_request_bytes: int) -> None:
        self._publish = channel.unary_unary(
            "/google.pubsub.v1.Publisher/Publish",
            request_serializer=_PublishRequest.SerializeToString,
            response_deserializer=_PublishResponse.FromString,
        )
        self._max_bytes = max_request_bytes
        self.sleep = time.sleep

    @classmethod
    def of(cls, publisher: Any, max_request_bytes: int) -> RawPublisher | None:
        """The raw calls for ``publisher`` if it is a plain gRPC ``PublisherClient``, else None.

        Wrapped or fake clients (tests, fault injection) keep their own ``publish``.
        """
        from google.cloud import pubsub_v1

        if type(publisher) is not pubsub_v1.PublisherClient:
            return None
        channel = getattr(publisher.transport, "grpc_channel", None)
        return cls(channel, max_request_bytes) if isinstance(channel, grpc.Channel) else None

    def publish(
        self, topic: str, payloads: Sequence[bytes], timeout: float
    ) -> list[tuple[int, str, str]]:
        """Publish ``payloads`` to ``topic``; return ``(index, error type, text)`` of failures.

        Every request is tried (and retried) until ``timeout`` seconds from now; the
        messages of a request that still failed are listed, every other one was published.
        """
        deadline = time.monotonic() + timeout
        metadata = (("x-goog-request-params", f"topic={topic}"),)
        failures: list[tuple[int, str, str]] = []
        for start, end in self._requests(topic, payloads):
            request = _PublishRequest(topic=topic)
            add = request.messages.add
            for data in payloads[start:end]:
                add(data=data)
            try:
                published = len(self._call(request, metadata, deadline).message_ids)
            except Exception as exc:  # a closed channel too: report it, go on
                error = gexc.from_grpc_error(exc) if isinstance(exc, grpc.RpcError) else exc
                failures += [(i, type(error).__name__, str(error)) for i in range(start, end)]
                continue
            if published != end - start:  # Pub/Sub answers one id per message it stored
                why = f"Pub/Sub answered {published} message ids for {end - start} messages"
                failures += [(i, "PublishError", why) for i in range(start + published, end)]
        return failures

    def _requests(self, topic: str, payloads: Sequence[bytes]) -> Iterator[tuple[int, int]]:
        """``(start, end)`` of each request: at most 1,000 messages and ``max_request_bytes``."""
        empty = size = _field_bytes(len(topic.encode()))  # PublishRequest{topic}
        start = 0
        for index, data in enumerate(payloads):
            n = len(data)  # + PubsubMessage{data} in messages (the common case inline)
            message = n + 4 if n < 126 else _field_bytes(_field_bytes(n))
            if index > start and (
                index - start == MAX_MESSAGES or size + message > self._max_bytes
            ):
                yield start, index
                start, size = index, empty
            size += message
        if start < len(payloads):
            yield start, len(payloads)

    def _call(self, request: Any, metadata: Any, deadline: float) -> Any:
        """One ``Publish``, retried on transient errors with backoff until ``deadline``."""
        pause = FIRST_PAUSE
        while True:
            remaining = deadline - time.monotonic()
            try:
                return self._publish(
                    request, timeout=max(0.001, min(ATTEMPT_SECONDS, remaining)), metadata=metadata
                )
            except grpc.RpcError as exc:
                error = gexc.from_grpc_error(exc)
                remaining = deadline - time.monotonic()
                if not isinstance(error, RETRIED) or remaining <= pause:
                    raise error from exc
            self.sleep(pause)
            pause = min(pause * BACKOFF, MAX_PAUSE)


def _field_bytes(length: int) -> int:
    """Bytes of a length-delimited protobuf field (tag, length varint, ``length`` bytes)."""
    return 1 + max(1, (length.bit_length() + 6) // 7) + length
