"""Bookkeeping of the messages a daemon holds: their state, heartbeat and batched acks.

A held message is *buffered* (received, waiting for a worker), *running*, or *settled*
(acked, released or handed back for a retry). The :class:`LeaseKeeper` owns that state,
extends the leases of every unsettled message from one heartbeat thread (in batches of the
queue's ``max_batch``), and acks finished messages in batches from one acker thread, so the
daemon's loop and its workers never wait on those round trips.

Threads: every method may be called from any thread; the state is guarded by one condition
variable, which is notified whenever a message changes state. The heartbeat thread is the
only one that extends leases, the acker the only one that acks.
"""

from __future__ import annotations

import enum
import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable, Sequence

from simpletasks.errors import BatchError
from simpletasks.queues import Message, QueueService

logger = logging.getLogger(__name__)


class State(enum.Enum):
    """Where a held message is in its life."""

    BUFFERED = "buffered"
    RUNNING = "running"
    ACKING = "acking"  # done; its delete is queued or in flight (the lease is still renewed)
    SETTLED = "settled"

    # Members are singletons: hash them by identity (Enum's own hash is a Python-level call,
    # and the keeper looks its counts up by state on every change).
    __hash__ = object.__hash__


_BUFFERED, _RUNNING, _ACKING = State.BUFFERED, State.RUNNING, State.ACKING


class Held:
    """One message this daemon holds a lease on; also its cancel flag.

    The flag is set when a running message is given up (an ``Event`` without a lock of its
    own: every held message of one keeper shares its condition variable, so holding one
    costs one small object per message).
    """

    __slots__ = ("_cond", "_set", "lease_until", "message", "renewing", "started", "state")

    def __init__(self, message: Message, lease_until: float, cond: threading.Condition) -> None:
        self.message = message
        self.state = _BUFFERED
        self.lease_until = lease_until  # monotonic
        self.renewing = False  # the heartbeat's extend call for it is in flight
        self.started = 0.0  # monotonic time it started running
        self._cond = cond
        self._set = False

    def is_set(self) -> bool:
        """Whether the message was given up."""
        return self._set

    def set(self) -> None:
        """Mark the message given up and wake its waiters."""
        with self._cond:
            self._set = True
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or ``timeout``; return whether it is set."""
        with self._cond:
            return self._cond.wait_for(lambda: self._set, timeout)


class LeaseKeeper:
    """Tracks held messages, keeps their leases alive and acks them in batches.

    Args:
        queue: The queue the messages came from.
        lease_seconds: The lease to ask for at each extension.
    """

    def __init__(self, queue: QueueService, lease_seconds: float) -> None:
        self.queue = queue
        self.lease_seconds = lease_seconds
        self.batch = max(1, queue.capabilities.max_batch)
        # The condition's own lock, taken directly on the hot paths (``with`` on a Condition
        # is a Python-level call on top of the lock's).
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)  # notified whenever a message changes state
        self._held: dict[int, Held] = {}
        self._waiting: list[Callable[[int, int], bool]] = []  # wait_until's, lock held
        # How many held messages are in each state, kept as they change (the loop asks often)
        self._in_state: dict[State, int] = dict.fromkeys(State, 0)
        self._acks: stdqueue.SimpleQueue[Message | None] = stdqueue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- state ---------------------------------------------------------------------------

    def add(self, messages: Sequence[Message]) -> None:
        """Start holding just-received messages (buffered)."""
        changed = self.changed
        with self._lock:
            until = time.monotonic() + self.lease_seconds
            held = self._held
            for message in messages:
                key = id(message)
                if key in held:  # the same object twice: count it once
                    self._in_state[held[key].state] -= 1
                held[key] = Held(message, until, changed)
            self._in_state[_BUFFERED] += len(messages)

    def start(self, message: Message) -> Held | None:
        """Mark a buffered message running and return its cancel event.

        Returns ``None`` if the message was settled meanwhile (released at stop). The event
        is set if the message is later given up (:meth:`take` of running messages).
        """
        with self._lock:
            held = self._held.get(id(message))
            if held is None or held.state is not _BUFFERED:
                return None
            held.started = time.monotonic()
            self._move(held, _RUNNING)
            self._notify()  # an ordered queue's loop waits for an empty buffer
            return held

    def is_running(self, message: Message) -> bool:
        """Whether ``message`` is still held here as running (not given up or settled)."""
        with self.changed:
            held = self._held.get(id(message))
            return held is not None and held.state is State.RUNNING

    def settle(self, message: Message) -> bool:
        """Stop holding ``message``; ``False`` if someone else settled it first."""
        with self.changed:
            key = id(message)
            while (held := self._held.get(key)) is not None and held.renewing:
                self.changed.wait()  # as _wait_for_renewals, for one message
            self._drop(key)
            self._notify()
            return held is not None

    def settle_all(self, messages: Sequence[Message]) -> None:
        """Stop holding ``messages`` (the acker's batch), under one lock."""
        with self._lock:
            self._wait_for_renewals(messages)
            drop = self._drop
            for message in messages:
                drop(id(message))
            self._notify()

    def counts(self) -> tuple[int, int]:
        """Return (buffered, running)."""
        with self._lock:
            return self._counts()

    def take(self, state: State) -> list[Message]:
        """Settle and return every held message in ``state``; set their cancel events."""
        with self.changed:
            return self._take([h for h in self._held.values() if h.state is state])

    def take_overdue(self, seconds: float) -> list[Message]:
        """Settle and return the running messages started more than ``seconds`` ago; set
        their cancel events (as :meth:`take` does)."""
        with self.changed:
            cutoff = time.monotonic() - seconds
            held = self._held.values()
            return self._take([h for h in held if h.state is _RUNNING and h.started < cutoff])

    def _take(self, taken: list[Held]) -> list[Message]:
        """Settle ``taken`` and set their cancel events (lock held); return their messages."""
        messages = [h.message for h in taken]
        if not taken:
            return messages
        self._wait_for_renewals(messages)
        for held in taken:
            held._set = True  # the lock is held: set() would take it again
            self._drop(id(held.message))
        self.changed.notify_all()
        return messages

    def notify(self) -> None:
        """Wake every thread waiting in :meth:`wait` or :meth:`wait_until`."""
        with self.changed:
            self.changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for any held message to change state."""
        with self.changed:
            self.changed.wait(timeout)

    def wait_until(self, done: Callable[[int, int], bool], timeout: float | None = None) -> bool:
        """Wait until ``done(buffered, running)`` is true or ``timeout`` passes.

        Returns:
            Whether ``done`` became true.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            self._waiting.append(done)
            try:
                while not done(*self._counts()):
                    remaining = 0.5 if deadline is None else deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self.changed.wait(min(0.5, remaining))
                return True
            finally:
                self._waiting.remove(done)

    def _notify(self) -> None:
        """``notify_all`` after a change of state (lock held), only if it can matter.

        Skipped when no thread waits (the hot path's common case), and when every waiter is
        in :meth:`wait_until` and none of their conditions holds now: the daemon's loop
        waits there for room, and waking it at every start and ack only to find none costs
        a thread switch each (two timed waits per task, ~0.1 ms of CPU each on some VMs).
        """
        waiters = self.changed._waiters  # type: ignore[attr-defined]
        if not waiters:
            return
        if len(waiters) > len(self._waiting):  # a waiter of another kind: wake it as before
            self.changed.notify_all()
            return
        buffered, running = self._counts()
        for done in self._waiting:
            if done(buffered, running):
                self.changed.notify_all()
                return

    def _counts(self) -> tuple[int, int]:
        in_state = self._in_state
        return in_state[_BUFFERED], in_state[_RUNNING]

    def _move(self, held: Held, state: State) -> None:
        """Put ``held`` in ``state`` (lock held), keeping the counts."""
        self._in_state[held.state] -= 1
        self._in_state[state] += 1
        held.state = state

    def _drop(self, key: int) -> None:
        """Stop holding the message of ``id()`` ``key``, if held (lock held)."""
        held = self._held.pop(key, None)
        if held is not None:
            self._in_state[held.state] -= 1

    def _wait_for_renewals(self, messages: Sequence[Message]) -> None:
        """Wait (lock held) until no extend call is in flight for ``messages``.

        So a release or retry delay set after settling is never overwritten by a renewal
        that was already on its way.
        """
        keys = [id(m) for m in messages]
        while any(self._held[k].renewing for k in keys if k in self._held):
            self.changed.wait()

    # -- queue operations ---------------------------------------------------------------

    def ack(self, message: Message) -> None:
        """Queue ``message`` for a batched ack; its lease is renewed until the ack returns."""
        with self._lock:
            held = self._held.get(id(message))
            if held is None or held.state is _ACKING:
                return
            self._move(held, _ACKING)
            self._notify()
        self._acks.put(message)

    def release_all(self, messages: list[Message]) -> None:
        """Give the leases of ``messages`` back to the queue at once (errors logged)."""
        for message in messages:
            try:
                self.queue.release(message)
            except Exception as exc:
                logger.warning("could not release message %s: %s", message.id, exc)

    # -- threads -------------------------------------------------------------------------

    def start_threads(self) -> None:
        """Start the heartbeat and acker threads."""
        for target, name in ((self._heartbeat, "heartbeat"), (self._acker, "acker")):
            thread = threading.Thread(target=target, name=f"simpletasks-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_threads(self, timeout: float = 10.0) -> None:
        """Flush pending acks and stop the threads."""
        self._stop.set()
        self._acks.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _heartbeat(self) -> None:
        period = max(0.05, self.lease_seconds / 3)
        while not self._stop.wait(period / 2):
            now = time.monotonic()
            with self.changed:
                due = [h for h in self._held.values() if h.lease_until - now < 2 * period]
                for held in due:
                    held.renewing = True
            for start in range(0, len(due), self.batch):
                self._renew(due[start : start + self.batch])

    def _renew(self, batch: list[Held]) -> None:
        """Extend the leases of ``batch`` in one call; clear their renewing flags after."""
        try:
            failed = self._extend(batch)
            until = time.monotonic() + self.lease_seconds
            for held in batch:
                if id(held.message) not in failed:
                    held.lease_until = until
        finally:
            with self.changed:
                for held in batch:
                    held.renewing = False
                self.changed.notify_all()

    def _extend(self, batch: list[Held]) -> set[int]:
        """Call ``extend_many``; return the ``id()`` of each message it did not extend."""
        try:
            lost = self.queue.extend_many([h.message for h in batch], self.lease_seconds)
            logger.debug("extended %d lease(s)", len(batch) - len(lost))
            return {id(m) for m in lost}
        except BatchError as exc:
            logger.warning("could not extend %d lease(s): %s", len(exc.failures), exc)
            return {id(batch[i].message) for i in exc.failed_indexes}
        except Exception as exc:
            ids = ", ".join(h.message.id for h in batch[:5])
            logger.warning("could not extend lease(s) of %s: %s", ids, exc)
            return {id(h.message) for h in batch}

    def _acker(self) -> None:
        while True:
            first = self._acks.get()
            batch = [] if first is None else [first]
            while len(batch) < self.batch:
                try:
                    item = self._acks.get_nowait()
                except stdqueue.Empty:
                    break
                if item is None:
                    first = None
                    break
                batch.append(item)
            if batch:
                self._ack_batch(batch)
            if first is None:
                return

    def _ack_batch(self, batch: list[Message]) -> None:
        try:
            self.queue.ack_many(batch)
        except Exception as exc:
            ids = ", ".join(m.id for m in batch)
            logger.warning(
                "ack failed (the queue will deliver again; tasks must be idempotent) for %s: %s",
                ids,
                exc,
            )
        finally:
            self.settle_all(batch)  # deleted or not: stop renewing
