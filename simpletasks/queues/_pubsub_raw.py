"""Raw-protobuf Pull, Acknowledge and ModifyAckDeadline for the Pub/Sub backend (:mod:`.pubsub`).

The generated client wraps every request and response in proto-plus objects: building a
``PullRequest`` and reading 1,000 ``ReceivedMessage`` wrappers (each field access goes
through a marshal) costs more CPU than the daemon spends on the tasks of a no-op batch.
:class:`RawSubscriber` calls the same three RPCs on the client's own gRPC channel (so the
same credentials, endpoint and emulator) with the plain protobuf classes, and reads the
response fields directly. Errors are the same ``google.api_core`` exceptions the client
raises (``from_grpc_error``); like the client's calls made with ``retry=None`` nothing is
retried here.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.protobuf import empty_pb2
from google.pubsub_v1.types import pubsub as types

_PullRequest = types.PullRequest.pb()
_PullResponse = types.PullResponse.pb()
_AcknowledgeRequest = types.AcknowledgeRequest.pb()
_ModifyAckDeadlineRequest = types.ModifyAckDeadlineRequest.pb()


class RawSubscriber:
    """Pull/Acknowledge/ModifyAckDeadline on a gRPC channel with plain protobuf messages.

    Args:
        channel: The ``grpc.Channel`` of a ``SubscriberClient``'s transport.
    """

    def __init__(self, channel: grpc.Channel) -> None:
        empty = empty_pb2.Empty
        self._pull = channel.unary_unary(
            "/google.pubsub.v1.Subscriber/Pull",
            request_serializer=_PullRequest.SerializeToString,
            response_deserializer=_PullResponse.FromString,
        )
        self._acknowledge = channel.unary_unary(
            "/google.pubsub.v1.Subscriber/Acknowledge",
            request_serializer=_AcknowledgeRequest.SerializeToString,
            response_deserializer=empty.FromString,
        )
        self._modify = channel.unary_unary(
            "/google.pubsub.v1.Subscriber/ModifyAckDeadline",
            request_serializer=_ModifyAckDeadlineRequest.SerializeToString,
            response_deserializer=empty.FromString,
        )

    @classmethod
    def of(cls, subscriber: Any) -> RawSubscriber | None:
        """The raw calls for ``subscriber`` if it is a plain gRPC ``SubscriberClient``, else None.

        Wrapped or fake clients (tests, counting proxies) keep their own methods.
        """
        from google.cloud import pubsub_v1

        if type(subscriber) is not pubsub_v1.SubscriberClient:
            return None
        channel = getattr(subscriber.transport, "grpc_channel", None)
        return cls(channel) if isinstance(channel, grpc.Channel) else None

    def pull(self, subscription: str, max_messages: int, timeout: float) -> Any:
        """``Pull``; returns the raw ``PullResponse`` (``received_messages`` are protobufs)."""
        request = _PullRequest(subscription=subscription, max_messages=max_messages)
        return self._call(self._pull, request, subscription, timeout)

    def acknowledge(self, subscription: str, ack_ids: list[str], timeout: float) -> None:
        """``Acknowledge`` the ``ack_ids``."""
        request = _AcknowledgeRequest(subscription=subscription, ack_ids=ack_ids)
        self._call(self._acknowledge, request, subscription, timeout)

    def modify_ack_deadline(
        self, subscription: str, ack_ids: list[str], seconds: int, timeout: float
    ) -> None:
        """``ModifyAckDeadline`` of the ``ack_ids`` to ``seconds`` from now."""
        request = _ModifyAckDeadlineRequest(
            subscription=subscription, ack_ids=ack_ids, ack_deadline_seconds=seconds
        )
        self._call(self._modify, request, subscription, timeout)

    @staticmethod
    def _call(method: Any, request: Any, subscription: str, timeout: float) -> Any:
        metadata = (("x-goog-request-params", f"subscription={subscription}"),)
        try:
            return method(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise gexc.from_grpc_error(exc) from exc
