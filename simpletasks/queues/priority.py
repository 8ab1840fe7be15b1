"""An in-process queue whose delivery order is a pluggable priority, with leases.

The edge agent orders its work by a policy whose estimates change while files wait, so the
order cannot be fixed when a message is sent. A :class:`PriorityQueue` asks a *chooser* at
each receive which waiting message to deliver next::

    class Newest:
        def choose(self, pending):
            return max(pending, key=lambda p: p.seq)

    queue = PriorityQueue(chooser=Newest())

Several *views* can share one set of messages, each with its own chooser
(:meth:`PriorityQueue.view`): a message leased through one view is invisible to every view,
and an ack through any view deletes it. When the chooser's inputs change (new estimates),
call :meth:`PriorityQueue.wake` so blocked receivers choose again.

A chooser may change its own state when it picks: the :class:`Pending` it returns is always
leased to the receive that asked (never to another receiver, never dropped). Messages that
became pointless while waiting can be removed with :meth:`PriorityQueue.discard`.

Choosers are called with the queue's lock held: a chooser must not call back into the queue,
and code that holds a lock the chooser takes must not call :meth:`~PriorityQueue.wake` (take
your own lock, update, release it, then wake).

The queue declares ``capabilities.ordered``: a daemon receives from it only for idle workers
and buffers nothing, so a message that became urgent is never stuck behind stale local work.
It lives in one process (tests, the edge agent); leases behave as in ``mem://``: a lease that
runs out makes the message visible again, and the handle of an earlier delivery can no longer
ack, release or extend it. ``clock`` may be injected for tests.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from simpletasks.errors import ConfigError
from simpletasks.queues import Message, QueueCapabilities, QueueCounts
from simpletasks.queues._checks import (
    check_bodies,
    check_body,
    check_handle,
    check_receive_args,
    check_seconds,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    """A waiting message as a chooser sees it.

    Attributes:
        id: The message id.
        body: The message text.
        seq: Arrival order (0 for the first message sent to the queue).
        attempt: Deliveries so far (0 if never delivered).
    """

    id: str
    body: str
    seq: int
    attempt: int


class Chooser(Protocol):
    """Picks the next message to deliver."""

    def choose(self, pending: Sequence[Pending]) -> Pending | None:
        """Return one of ``pending`` (non-empty, oldest first), or ``None`` for "nothing now"."""
        ...


class Fifo:
    """The default chooser: oldest first."""

    def choose(self, pending: Sequence[Pending]) -> Pending | None:
        """Return the oldest message."""
        return pending[0]


@dataclass(eq=False)
class _Entry:
    pending: Pending
    token: int = 0  # token of the current lease; 0 while visible
    lease_until: float = 0.0
    sent_at: float = field(default_factory=time.time)


class _Store:
    """The messages every view shares; all fields guarded by ``cond``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.cond = threading.Condition()
        self.visible: dict[str, _Entry] = {}  # insertion order = arrival order
        self.leased: dict[str, _Entry] = {}
        self.seq = itertools.count()
        self.tokens = itertools.count(1)

    def reclaim(self) -> None:
        now = self.clock()
        expired = [e for e in self.leased.values() if e.lease_until <= now]
        for entry in expired:
            del self.leased[entry.pending.id]
            entry.token = 0
            self.visible[entry.pending.id] = entry
        if expired:  # keep arrival order among the visible ones
            ordered = sorted(self.visible.values(), key=lambda e: e.pending.seq)
            self.visible = {e.pending.id: e for e in ordered}

    def next_expiry(self) -> float | None:
        return min((e.lease_until for e in self.leased.values()), default=None)


@dataclass(frozen=True)
class _Handle:
    store: _Store
    message_id: str
    token: int


class PriorityQueue:
    """An in-process queue with leases whose order is chosen at each receive.

    Args:
        name: For logs and the URL (``priority://name``); a unique one when omitted.
        chooser: Picks the next message (default: oldest first).
        clock: The monotonic clock leases run on (injectable for tests).
    """

    def __init__(
        self,
        name: str | None = None,
        chooser: Chooser | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        _store: _Store | None = None,
    ) -> None:
        self.name = name or f"priority-{uuid.uuid4().hex[:12]}"
        self.url = f"priority://{self.name}"
        self.chooser: Chooser = chooser or Fifo()
        self._store = _store or _Store(clock)

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> PriorityQueue:
        """Refuse: a priority queue exists only as an object shared inside one process."""
        raise ConfigError(
            f"{url!r}: a priority queue cannot be opened by URL; create a PriorityQueue "
            "object and pass it to the daemons that share it"
        )

    @property
    def capabilities(self) -> QueueCapabilities:
        """Ordered delivery (no local buffering by daemons), exact counts, no size limits."""
        return QueueCapabilities(max_batch=100, counts=True, ordered=True)

    def view(self, chooser: Chooser, name: str | None = None) -> PriorityQueue:
        """Return another queue over the same messages, ordered by ``chooser``."""
        return PriorityQueue(name or f"{self.name}-view", chooser, _store=self._store)

    def wake(self) -> None:
        """Wake receivers blocked in :meth:`receive` to ask their chooser again."""
        with self._store.cond:
            self._store.cond.notify_all()

    # -- receiving -----------------------------------------------------------------------

    def receive(
        self, max_messages: int = 1, *, wait_seconds: float = 0.0, lease_seconds: float = 30.0
    ) -> list[Message]:
        """Lease up to ``max_messages`` messages in the chooser's order.

        Waits up to ``wait_seconds`` for the chooser to pick a first message (it may decline
        while messages wait: then the receive waits for a :meth:`wake`, a new message or a
        lease running out).
        """
        check_receive_args(max_messages, wait_seconds, lease_seconds)
        max_messages = min(max_messages, self.capabilities.max_batch)
        store = self._store
        deadline = store.clock() + wait_seconds
        messages: list[Message] = []
        with store.cond:
            while True:
                store.reclaim()
                while len(messages) < max_messages and store.visible:
                    choice = self._choose(list(e.pending for e in store.visible.values()))
                    if choice is None:
                        break
                    messages.append(self._lease(choice, lease_seconds))
                now = store.clock()
                if messages or now >= deadline:
                    return messages
                remaining = deadline - now
                expiry = store.next_expiry()
                if expiry is not None:
                    remaining = min(remaining, max(0.0, expiry - now))
                store.cond.wait(remaining)

    def _choose(self, pending: list[Pending]) -> Pending | None:
        choice = self.chooser.choose(pending)
        if choice is not None and choice.id not in self._store.visible:
            raise ValueError(
                f"chooser {type(self.chooser).__name__} returned {choice.id!r}, which is not "
                "among the pending messages it was given"
            )
        return choice

    def _lease(self, choice: Pending, lease_seconds: float) -> Message:
        store = self._store
        entry = store.visible.pop(choice.id)
        p = entry.pending
        entry.pending = Pending(p.id, p.body, p.seq, p.attempt + 1)
        entry.token = next(store.tokens)
        entry.lease_until = store.clock() + lease_seconds
        store.leased[p.id] = entry
        handle = _Handle(store, p.id, entry.token)
        return Message(p.id, p.body, p.attempt + 1, handle, entry.sent_at)

    # -- settling ------------------------------------------------------------------------

    def _current(self, message: Message, action: str) -> _Entry | None:
        """The leased entry ``message`` holds, or ``None`` (logged) if stale. Lock held."""
        handle: _Handle = check_handle(message, _Handle, "priority queue")
        entry = self._store.leased.get(handle.message_id)
        if handle.store is not self._store or entry is None or entry.token != handle.token:
            logger.warning(
                "%s %s of message %s ignored: its lease ended and it was redelivered, acked "
                "or released",
                self.url,
                action,
                message.id,
            )
            return None
        return entry

    def ack(self, message: Message) -> None:
        """Delete a received message; ignored (with a warning) if its lease was lost."""
        self.ack_many([message])

    def ack_many(self, messages: Sequence[Message]) -> None:
        """Delete several received messages under one lock."""
        for message in messages:
            check_handle(message, _Handle, "priority queue")
        with self._store.cond:
            for message in messages:
                if self._current(message, "ack") is not None:
                    del self._store.leased[message.id]

    def release(self, message: Message) -> None:
        """Make a received message visible again at once."""
        store = self._store
        with store.cond:
            entry = self._current(message, "release")
            if entry is not None:
                del store.leased[entry.pending.id]
                entry.token = 0
                store.visible[entry.pending.id] = entry
                ordered = sorted(store.visible.values(), key=lambda e: e.pending.seq)
                store.visible = {e.pending.id: e for e in ordered}
                store.cond.notify_all()

    def extend(self, message: Message, lease_seconds: float) -> None:
        """Set the message's lease to end ``lease_seconds`` from now."""
        self.extend_many([message], lease_seconds)

    def extend_many(self, messages: Sequence[Message], lease_seconds: float) -> list[Message]:
        """Extend several leases under one lock; return the messages whose lease was lost."""
        check_seconds("lease_seconds", lease_seconds)
        lost = []
        with self._store.cond:
            for message in messages:
                entry = self._current(message, "extend")
                if entry is None:
                    lost.append(message)
                else:
                    entry.lease_until = self._store.clock() + lease_seconds
        return lost

    # -- sending and the rest ------------------------------------------------------------

    def send(self, body: str) -> None:
        """Enqueue one message."""
        self._add([check_body(body)])

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Enqueue many messages; all bodies are checked before any is enqueued."""
        self._add(check_bodies(bodies))

    def _add(self, bodies: list[str]) -> None:
        store = self._store
        with store.cond:
            for body in bodies:
                entry = _Entry(Pending(uuid.uuid4().hex, body, next(store.seq), 0))
                store.visible[entry.pending.id] = entry
            store.cond.notify_all()

    def discard(self, message_ids: Sequence[str]) -> int:
        """Delete waiting (not leased) messages by id; return how many were deleted.

        For messages that became pointless while they waited (the edge agent drops the
        pre-process message of a file that was uploaded unprocessed). Leased messages and
        unknown ids are left alone: only a holder may settle a lease.
        """
        with self._store.cond:
            removed = [i for i in message_ids if self._store.visible.pop(i, None) is not None]
        return len(removed)

    def counts(self) -> QueueCounts:
        """Return exact visible and in-flight counts (shared by every view)."""
        with self._store.cond:
            self._store.reclaim()
            return QueueCounts(len(self._store.visible), len(self._store.leased))

    def purge(self) -> None:
        """Delete every message, leased ones included."""
        with self._store.cond:
            self._store.visible.clear()
            self._store.leased.clear()

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"PriorityQueue({self.name!r}, chooser={type(self.chooser).__name__})"
