"""``sqs://queue-name``: Amazon SQS (standard queues) through boto3.

Region, credentials and endpoint come from the usual AWS settings (boto3 reads
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``...); ``endpoint_url=``/``region_name=`` or an
injected ``client=`` override them. A lease is the message's visibility timeout, in whole
seconds (rounded up); ``Message.attempt`` is SQS's ``ApproximateReceiveCount``.

Settling a message whose lease was lost (SQS rejects the old receipt handle) is logged and
ignored, as on the other backends. Note that SQS itself may still accept an old receipt
handle for a message that was received again.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from simpletasks import aws
from simpletasks.errors import BatchError, ConfigError
from simpletasks.queues import Message, QueueCapabilities, QueueCounts, _checks, _common
from simpletasks.urls import create_hint

logger = logging.getLogger(__name__)

MAX_BATCH = 10  # messages per ReceiveMessage / SendMessageBatch call
MAX_WAIT_SECONDS = 20  # longest long poll
MAX_LEASE_SECONDS = 43_200  # longest visibility timeout (12 h)
BATCH_RETRIES = 3  # extra attempts for batch entries that failed on the server's side

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


__all__ = ["BatchError", "SQSQueue", "create_queue", "make_client"]  # BatchError: the shared one


@dataclass(frozen=True)
class _Receipt:
    queue_url: str
    receipt_handle: str


def make_client(*, endpoint_url: str | None = None, region_name: str | None = None) -> Any:
    """Return an SQS client with our retry and pool settings (see :mod:`simpletasks.aws`)."""
    return aws.make_client("sqs", endpoint_url=endpoint_url, region_name=region_name)


def _check_name(name: Any) -> str:
    if isinstance(name, str) and name.endswith(".fifo"):
        raise ConfigError(f"SQS FIFO queue {name!r} is not supported; use a standard queue")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"SQS queue name {name!r} is invalid: use 1-80 letters, digits, '-' or '_'"
        )
    return name


class SQSQueue:
    """An SQS standard queue.

    Args:
        name: Queue name (not URL).
        client: A boto3 SQS client to use (not closed by :meth:`close`); one is made if
            omitted.
        endpoint_url: Endpoint for the client made here (overrides ``AWS_ENDPOINT_URL``).
        region_name: Region for the client made here.
        create: Create the queue if it does not exist.
        attributes: SQS attributes for a queue created here, e.g. ``{"VisibilityTimeout":
            "60"}`` (an existing queue with other attributes is an error).

    Raises:
        ConfigError: If the name is invalid, no region is configured, or the queue does not
            exist and ``create`` is false.
    """

    def __init__(
        self,
        name: str,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        create: bool = False,
        attributes: dict[str, str] | None = None,
    ) -> None:
        self.name = _check_name(name)
        self.url = f"sqs://{name}"
        self._owns_client = client is None
        self._client = client or make_client(endpoint_url=endpoint_url, region_name=region_name)
        try:
            with aws.open_errors(self._client, "SQS", self.url):
                self.queue_url = self._resolve(create, attributes or {})
                attrs = self._client.get_queue_attributes(
                    QueueUrl=self.queue_url, AttributeNames=["MaximumMessageSize"]
                )["Attributes"]
        except BaseException:
            self.close()
            raise
        #: Batches of 10, leases up to 12 h, bodies up to the queue's ``MaximumMessageSize``.
        self.capabilities = QueueCapabilities(
            max_batch=MAX_BATCH,
            max_lease_seconds=MAX_LEASE_SECONDS,
            max_body_bytes=int(attrs["MaximumMessageSize"]),
            counts=True,
        )

    def _resolve(self, create: bool, attributes: dict[str, str]) -> str:
        client = self._client
        if create:  # CreateQueue returns the URL of an existing queue with these attributes
            logger.info("creating SQS queue %s if missing", self.name)
            return str(client.create_queue(QueueName=self.name, Attributes=attributes)["QueueUrl"])
        try:
            return str(client.get_queue_url(QueueName=self.name)["QueueUrl"])
        except client.exceptions.QueueDoesNotExist:
            raise ConfigError(
                f"SQS queue {self.name!r} does not exist at {client.meta.endpoint_url} "
                f"(region {client.meta.region_name}); {create_hint(self.url, 'queue')}"
            ) from None

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> SQSQueue:
        """Open ``sqs://queue-name``; ``create`` and ``kwargs`` as the constructor's.

        Raises:
            ConfigError: If the URL is not ``sqs://queue-name``, or as the constructor.
        """
        scheme, sep, name = url.partition("://")
        if scheme.lower() != "sqs" or not sep:
            raise ConfigError(f"not an SQS queue URL: {url!r} (expected sqs://queue-name)")
        if not name or any(c in name for c in "/?#"):
            raise ConfigError(
                f"SQS queue URL {url!r} must be sqs://queue-name, with nothing after the name"
            )
        return cls(name, create=create, **kwargs)

    # receiving and settling

    def receive(
        self, max_messages: int = 1, *, wait_seconds: float = 0.0, lease_seconds: float = 30.0
    ) -> list[Message]:
        """Lease up to ``min(max_messages, 10)`` messages with one ``ReceiveMessage`` call.

        ``wait_seconds`` is rounded up to whole seconds and capped at 20 (SQS long polling);
        ``lease_seconds`` is rounded up to whole seconds.
        """
        _checks.check_receive_args(max_messages, wait_seconds, lease_seconds)
        response = self._client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(MAX_BATCH, max_messages),
            WaitTimeSeconds=min(MAX_WAIT_SECONDS, math.ceil(wait_seconds)),
            VisibilityTimeout=_lease(lease_seconds),
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        return [
            Message(
                id=m["MessageId"],
                body=m["Body"],
                attempt=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                handle=_Receipt(self.queue_url, m["ReceiptHandle"]),
                sent_at=_sent_at(m.get("Attributes", {})),
            )
            for m in response.get("Messages", [])
        ]

    def _receipt(self, message: Message) -> str:
        receipt: _Receipt = _checks.check_handle(
            message, _Receipt, "SQS queue", origin="queue_url", here=self.queue_url
        )
        return receipt.receipt_handle

    @staticmethod
    def _lease_lost(error: dict[str, Any]) -> bool:
        """Tell whether an SQS error says the receipt handle no longer holds a lease."""
        code = str(error.get("Code", ""))
        if code.endswith(("ReceiptHandleIsInvalid", "MessageNotInflight")):
            return True
        # Real SQS answers InvalidParameterValue "... parameter ReceiptHandle is invalid ..."
        return code == "InvalidParameterValue" and "ReceiptHandle" in str(error.get("Message"))

    def _settle(self, action: str, message: Message, **kwargs: Any) -> None:
        receipt = self._receipt(message)
        try:
            if action == "ack":
                self._client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
            else:
                self._client.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=receipt, **kwargs
                )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if not self._lease_lost(error):
                raise
            self._log_lost(action, message, error)

    def _log_lost(self, action: str, message: Message, error: dict[str, Any]) -> None:
        logger.warning(
            "%s: %s of message %s ignored: its lease was lost (%s)",
            *(self.url, action, message.id, error.get("Code")),
        )

    def ack(self, message: Message) -> None:
        """Delete a received message."""
        self._settle("ack", message)

    def ack_many(self, messages: Sequence[Message]) -> None:
        """Delete several received messages with ``DeleteMessageBatch``, 10 per request.

        Raises:
            BatchError: If some could not be deleted for another reason than a lost lease
                (those are logged and ignored, as in :meth:`ack`).
        """
        self._settle_many("ack", messages, self._client.delete_message_batch, {})

    def extend_many(self, messages: Sequence[Message], lease_seconds: float) -> list[Message]:
        """Set several visibility timeouts with ``ChangeMessageVisibilityBatch``, 10 per request.

        Returns:
            The messages whose lease was already lost (logged; not extended).

        Raises:
            BatchError: If some could not be extended for another reason.
        """
        _checks.check_seconds("lease_seconds", lease_seconds)
        extra = {"VisibilityTimeout": _lease(lease_seconds)}
        call = self._client.change_message_visibility_batch
        return self._settle_many("extend", messages, call, extra)

    def _settle_many(
        self,
        action: str,
        messages: Sequence[Message],
        call: Callable[..., Any],
        extra: dict[str, Any],
    ) -> list[Message]:
        entries = [{"ReceiptHandle": self._receipt(message), **extra} for message in messages]
        failures, lost = [], []
        for failed in self._batches(call, entries):
            if self._lease_lost(failed):
                lost.append(int(failed["Id"]))
                self._log_lost(action, messages[lost[-1]], failed)
            else:
                failures.append(failed)
        verb = "deleted from" if action == "ack" else "extended in"
        self._raise_failures(verb, failures, len(entries))
        return [messages[i] for i in sorted(lost)]

    def release(self, message: Message) -> None:
        """Make a received message visible again at once (visibility timeout 0)."""
        self._settle("release", message, VisibilityTimeout=0)

    def extend(self, message: Message, lease_seconds: float) -> None:
        """Set the message's visibility timeout to ``lease_seconds`` (rounded up) from now."""
        _checks.check_seconds("lease_seconds", lease_seconds)
        self._settle("extend", message, VisibilityTimeout=_lease(lease_seconds))

    # sending

    def _check_size(self, body: str, what: str) -> int:
        limit = self.capabilities.max_body_bytes
        return len(_common.check_size(body, limit, what, f"SQS queue {self.name!r}"))

    def send(self, body: str) -> None:
        """Enqueue one message.

        Raises:
            ValueError: If the body is larger than the queue's ``MaximumMessageSize``.
        """
        self._check_size(_checks.check_body(body), "body")
        self._client.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Enqueue many messages, up to 10 per request.

        Every body is checked before any is sent. Entries SQS fails on its side are retried
        a few times.

        Raises:
            ValueError: If any body is too large (nothing is sent).
            BatchError: If some bodies could not be sent; it lists them (by index) and
                every other body was sent.
        """
        checked = _checks.check_bodies(bodies)
        limit = self.capabilities.max_body_bytes
        where = f"SQS queue {self.name!r}"
        sizes = [len(data) for data in _common.encode_bodies(checked, limit, where)]
        entries = [{"MessageBody": body} for body in checked]
        failures = self._batches(self._client.send_message_batch, entries, sizes)
        self._raise_failures("sent to", failures, len(checked))

    def _raise_failures(self, verb: str, failed: list[dict[str, Any]], total: int) -> None:
        failures = [(int(f["Id"]), str(f.get("Code")), str(f.get("Message"))) for f in failed]
        _common.raise_failures(self.url, verb, failures, total)

    def _batches(
        self,
        call: Callable[..., Any],
        entries: list[dict[str, Any]],
        sizes: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Make batch requests of at most 10 entries and max_body_bytes (by ``sizes``).

        The entries' Ids are their indexes. Returns the ``Failed`` items of those that failed.
        """
        failed: list[dict[str, Any]] = []
        chunk: list[dict[str, Any]] = []
        total = 0
        limit = self.capabilities.max_body_bytes or 0
        for i, entry in enumerate(entries):
            size = sizes[i] if sizes else 0
            if chunk and (len(chunk) == MAX_BATCH or total + size > limit):
                failed += self._batch(call, chunk)
                chunk, total = [], 0
            chunk.append({"Id": str(i), **entry})
            total += size
        return failed + (self._batch(call, chunk) if chunk else [])

    def _batch(
        self, call: Callable[..., Any], entries: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Make one batch request, retrying entries that failed on the server's side."""
        final: list[dict[str, Any]] = []
        for attempt in range(BATCH_RETRIES + 1):
            response = call(QueueUrl=self.queue_url, Entries=entries)
            by_id = {entry["Id"]: entry for entry in entries}
            entries = []
            for failed in response.get("Failed", []):
                if failed.get("SenderFault") or attempt == BATCH_RETRIES:
                    final.append(failed)
                else:
                    entries.append(by_id[failed["Id"]])
            if not entries:
                break
            logger.warning("%s: %d batch entries failed; retrying", self.url, len(entries))
            time.sleep(0.1 * 2**attempt)
        return final

    # inspecting

    def counts(self) -> QueueCounts:
        """Return SQS's approximate visible and in-flight (not visible) counts."""
        attrs = self._client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return QueueCounts(
            visible=int(attrs["ApproximateNumberOfMessages"]),
            in_flight=int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        )

    def purge(self) -> None:
        """Delete every message (``PurgeQueue``; SQS may take up to 60 s to finish).

        SQS allows one purge per queue per 60 s; if one is already in progress, the visible
        messages are received and deleted instead (in-flight ones are left to that purge).
        """
        try:
            self._client.purge_queue(QueueUrl=self.queue_url)
            return
        except self._client.exceptions.PurgeQueueInProgress:
            logger.info("%s: a purge is in progress; deleting visible messages", self.url)
        while batch := self.receive(MAX_BATCH, lease_seconds=60):
            self.ack_many(batch)

    def delete(self) -> None:
        """Delete the queue itself (for tests and the CLI)."""
        self._client.delete_queue(QueueUrl=self.queue_url)

    def close(self) -> None:
        """Close the client if this object made it."""
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"SQSQueue({self.name!r})"


def create_queue(name: str, **kwargs: Any) -> SQSQueue:
    """Create the SQS queue ``name`` unless it exists, and open it.

    ``kwargs`` are :class:`SQSQueue`'s (``client``, ``endpoint_url``, ``region_name``,
    ``attributes``).
    """
    return SQSQueue(name, create=True, **kwargs)


def _lease(lease_seconds: float) -> int:
    return _common.whole_seconds(lease_seconds, MAX_LEASE_SECONDS, "SQS")


def _sent_at(attributes: dict[str, str]) -> float | None:
    """Unix time from SQS's ``SentTimestamp`` attribute (milliseconds), if present."""
    millis = attributes.get("SentTimestamp")
    return int(millis) / 1000 if millis and millis.isdigit() else None
