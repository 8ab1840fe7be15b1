"""Bookkeeping of the messages a daemon holds: their state, heartbeat and batched acks.

A held message is *buffered* (received, waiting for a worker), *running*, or *settled*
(acked, released or handed back for a retry). The :class:`LeaseKeeper` owns that state,
extends the leases of every unsettled message from one heartbeat thread, and acks finished
messages in batches from one acker thread, so the daemon's loop and its workers never wait on
those round trips.
"""

from __future__ import annotations

import enum
import logging
import queue as stdqueue
import threading
import time
from dataclasses import dataclass

from simpletasks.queues import Message, QueueService

logger = logging.getLogger(__name__)

ACK_BATCH = 10


class State(enum.Enum):
    """Where a held message is in its life."""

    BUFFERED = "buffered"
    RUNNING = "running"
    ACKING = "acking"  # done; its delete is queued or in flight (the lease is still renewed)
    SETTLED = "settled"


@dataclass
class Held:
    """One message this daemon holds a lease on."""

    message: Message
    state: State
    lease_until: float  # monotonic
    renewing: bool = False  # the heartbeat's extend call for it is in flight


class LeaseKeeper:
    """Tracks held messages, keeps their leases alive and acks them in batches.

    Args:
        queue: The queue the messages came from.
        lease_seconds: The lease to ask for at each extension.
    """

    def __init__(self, queue: QueueService, lease_seconds: float) -> None:
        self.queue = queue
        self.lease_seconds = lease_seconds
        self.changed = threading.Condition()  # notified whenever a message settles
        self._held: dict[int, Held] = {}
        self._acks: stdqueue.SimpleQueue[Message | None] = stdqueue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- state ---------------------------------------------------------------------------

    def add(self, message: Message) -> None:
        """Start holding a just-received message (buffered)."""
        with self.changed:
            until = time.monotonic() + self.lease_seconds
            self._held[id(message)] = Held(message, State.BUFFERED, until)

    def start(self, message: Message) -> bool:
        """Mark a buffered message running; ``False`` if it was settled meanwhile."""
        with self.changed:
            held = self._held.get(id(message))
            if held is None or held.state is not State.BUFFERED:
                return False
            held.state = State.RUNNING
            return True

    def settle(self, message: Message) -> bool:
        """Stop holding ``message``; ``False`` if someone else settled it first."""
        with self.changed:
            self._wait_for_renewals([message])
            held = self._held.pop(id(message), None)
            self.changed.notify_all()
            return held is not None

    def counts(self) -> tuple[int, int]:
        """Return (buffered, running)."""
        with self.changed:
            states = [h.state for h in self._held.values()]
            return states.count(State.BUFFERED), states.count(State.RUNNING)

    def take(self, state: State) -> list[Message]:
        """Settle and return every held message in ``state``."""
        with self.changed:
            taken = [h.message for h in self._held.values() if h.state is state]
            self._wait_for_renewals(taken)
            for message in taken:
                del self._held[id(message)]
            self.changed.notify_all()
            return taken

    def _wait_for_renewals(self, messages: list[Message]) -> None:
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
        with self.changed:
            held = self._held.get(id(message))
            if held is None or held.state is State.ACKING:
                return
            held.state = State.ACKING
            self.changed.notify_all()
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
                with self.changed:  # settled meanwhile: its lease is not ours to renew
                    if self._held.get(id(held.message)) is not held:
                        continue
                    held.renewing = True
                try:
                    self.queue.extend(held.message, self.lease_seconds)
                    held.lease_until = time.monotonic() + self.lease_seconds
                    logger.debug("extended lease of %s", held.message.id)
                except Exception as exc:
                    logger.warning("could not extend lease of %s: %s", held.message.id, exc)
                finally:
                    with self.changed:
                        held.renewing = False
                        self.changed.notify_all()

    def _acker(self) -> None:
        while True:
            first = self._acks.get()
            batch = [] if first is None else [first]
            while len(batch) < ACK_BATCH:
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
            for message in batch:  # deleted or not: stop renewing
                self.settle(message)
