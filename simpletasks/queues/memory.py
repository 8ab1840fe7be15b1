"""``mem://name``: an in-process queue with leases, for tests and single-process runs.

Queues are named: every ``MemoryQueue`` (or ``open_queue("mem://x")``) with the same name in
one process shares one queue, so a test can send through one object and a daemon receive
through another. :meth:`MemoryQueue.reset_all` forgets every named queue.

Leases run on the monotonic clock (or the ``clock`` given, for tests). Each delivery gets a
fresh token; ``ack``, ``release`` and ``extend`` with the handle of an earlier delivery (whose
lease ran out and whose message was received again) are logged and ignored, so they cannot
touch the current holder's lease.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from simpletasks.errors import ConfigError
from simpletasks.queues import Message, QueueCapabilities, QueueCounts, _common
from simpletasks.queues._checks import (
    check_bodies,
    check_body,
    check_handle,
    check_receive_args,
    check_seconds,
)

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
MAX_BATCH = 100  # messages per receive / settled under one hold of the lock


@dataclass(eq=False)
class _Entry:
    id: str
    seq: int
    body: str
    deliveries: int = 0
    token: int = 0  # token of the current lease; 0 while visible
    lease_until: float = 0.0
    sent_at: float = field(default_factory=time.time)


class _State:
    """The shared state of one named queue; every field is guarded by ``cond``."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.entries: dict[str, _Entry] = {}
        self.visible: list[tuple[int, str]] = []  # heap of (seq, id): oldest first
        self.leased: dict[str, _Entry] = {}
        self.seq = itertools.count()
        self.tokens = itertools.count(1)

    def reclaim(self, now: float) -> None:
        """Make messages whose lease ran out visible again."""
        for entry in [e for e in self.leased.values() if e.lease_until <= now]:
            del self.leased[entry.id]
            entry.token = 0
            heapq.heappush(self.visible, (entry.seq, entry.id))

    def next_expiry(self) -> float | None:
        return min((e.lease_until for e in self.leased.values()), default=None)


@dataclass(frozen=True)
class _Handle:
    state: _State
    message_id: str
    token: int


_STATES: dict[str, _State] = {}
_STATES_LOCK = threading.Lock()


class MemoryQueue:
    """An in-process, thread-safe queue with leases.

    Args:
        name: Queue name; queues with the same name in one process share their messages.
            A unique name is generated when omitted.
        clock: Seconds on a monotonic clock, for lease expiry (tests inject a fake one;
            objects sharing a name should share it). Waiting in ``receive`` always uses
            real time.

    Raises:
        ConfigError: If ``name`` is empty or has characters other than letters, digits,
            ``.``, ``_`` and ``-``.
    """

    #: Batches of 100; no lease or body limit; exact counts.
    capabilities = QueueCapabilities(max_batch=MAX_BATCH, max_lease_seconds=None, counts=True)

    def __init__(
        self, name: str | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if name is None:
            name = f"anonymous-{uuid.uuid4().hex[:12]}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(
                f"memory queue name {name!r} is invalid: use 1-200 letters, digits, '.', '_' "
                "or '-' (as in mem://jobs)"
            )
        self.name = name
        self.url = f"mem://{name}"
        self._clock = clock
        with _STATES_LOCK:
            self._state = _STATES.setdefault(name, _State())

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **kwargs: Any) -> MemoryQueue:
        """Open ``mem://name`` (``create`` is accepted and ignored: it always exists).

        Raises:
            ConfigError: If the URL is not ``mem://name`` or takes unknown options.
        """
        if kwargs:
            raise ConfigError(f"memory queue {url!r} takes no options, got {sorted(kwargs)}")
        scheme, sep, name = url.partition("://")
        if scheme.lower() != "mem" or not sep:
            raise ConfigError(f"not a memory queue URL: {url!r} (expected mem://name)")
        if not name:
            raise ConfigError(f"memory queue URL {url!r} has no name (expected mem://name)")
        return cls(name)

    @staticmethod
    def reset_all() -> None:
        """Forget every named queue (for tests). Existing objects keep their old state."""
        with _STATES_LOCK:
            _STATES.clear()

    def receive(
        self, max_messages: int = 1, *, wait_seconds: float = 0.0, lease_seconds: float = 30.0
    ) -> list[Message]:
        """Lease up to ``max_messages`` messages, waiting up to ``wait_seconds`` for the first."""
        check_receive_args(max_messages, wait_seconds, lease_seconds)
        state = self._state
        deadline = time.monotonic() + wait_seconds
        with state.cond:
            while True:
                now = self._clock()
                state.reclaim(now)
                if state.visible:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                expiry = state.next_expiry()
                if expiry is not None:
                    remaining = min(remaining, max(0.0, expiry - now))
                state.cond.wait(remaining)
            lease_until = self._clock() + lease_seconds
            messages: list[Message] = []
            while state.visible and len(messages) < min(max_messages, MAX_BATCH):
                _, message_id = heapq.heappop(state.visible)
                entry = state.entries[message_id]
                entry.deliveries += 1
                entry.token = next(state.tokens)
                entry.lease_until = lease_until
                state.leased[message_id] = entry
                handle = _Handle(state, message_id, entry.token)
                messages.append(
                    Message(message_id, entry.body, entry.deliveries, handle, entry.sent_at)
                )
            return messages

    def _current(self, message: Message, action: str) -> _Entry | None:
        """Return the leased entry ``message`` holds, or ``None`` (logged) if stale.

        Must be called with ``self._state.cond`` held.
        """
        handle: _Handle = check_handle(message, _Handle, "memory queue")
        entry = self._state.leased.get(handle.message_id)
        if handle.state is not self._state or entry is None or entry.token != handle.token:
            _common.log_lost(logger, self.url, action, message.id, _common.LEASE_LOST)
            return None
        return entry

    def ack(self, message: Message) -> None:
        """Delete a received message; ignored (with a warning) if its lease was lost."""
        self.ack_many([message])

    def ack_many(self, messages: Sequence[Message]) -> None:
        """Delete several received messages (each as :meth:`ack`), 100 per hold of the lock."""
        for message in messages:
            check_handle(message, _Handle, "memory queue")
        for chunk in _common.chunks(messages, MAX_BATCH):
            with self._state.cond:
                for message in chunk:
                    entry = self._current(message, "ack")
                    if entry is not None:
                        del self._state.leased[entry.id]
                        del self._state.entries[entry.id]

    def release(self, message: Message) -> None:
        """Make a received message visible again at once."""
        state = self._state
        with state.cond:
            entry = self._current(message, "release")
            if entry is not None:
                del state.leased[entry.id]
                entry.token = 0
                heapq.heappush(state.visible, (entry.seq, entry.id))
                state.cond.notify()

    def extend(self, message: Message, lease_seconds: float) -> None:
        """Set the message's lease to end ``lease_seconds`` from now."""
        self.extend_many([message], lease_seconds)

    def extend_many(self, messages: Sequence[Message], lease_seconds: float) -> list[Message]:
        """Set several leases to end ``lease_seconds`` from now; return those already lost."""
        check_seconds("lease_seconds", lease_seconds)
        for message in messages:
            check_handle(message, _Handle, "memory queue")
        lost: list[Message] = []
        for chunk in _common.chunks(messages, MAX_BATCH):
            with self._state.cond:
                until = self._clock() + lease_seconds
                for message in chunk:
                    entry = self._current(message, "extend")
                    if entry is None:
                        lost.append(message)
                    else:
                        entry.lease_until = until
        return lost

    def send(self, body: str) -> None:
        """Enqueue one message."""
        self._add([check_body(body)])

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Enqueue many messages; all bodies are checked before any is enqueued."""
        self._add(check_bodies(bodies))

    def _add(self, bodies: list[str]) -> None:
        state = self._state
        with state.cond:
            for body in bodies:
                entry = _Entry(uuid.uuid4().hex, next(state.seq), body)
                state.entries[entry.id] = entry
                heapq.heappush(state.visible, (entry.seq, entry.id))
            state.cond.notify(len(bodies))

    def counts(self) -> QueueCounts:
        """Return exact visible and in-flight counts."""
        with self._state.cond:
            self._state.reclaim(self._clock())
            return QueueCounts(visible=len(self._state.visible), in_flight=len(self._state.leased))

    def purge(self) -> None:
        """Delete every message, leased ones included."""
        with self._state.cond:
            self._state.entries.clear()
            self._state.visible.clear()
            self._state.leased.clear()

    def close(self) -> None:
        """Nothing to release: the named queue lives on for other users in the process."""

    def __repr__(self) -> str:
        return f"MemoryQueue({self.name!r})"
