"""Scheduling: send many task messages to a queue in batches, on several threads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from simpletasks.errors import BatchError
from simpletasks.message import TaskMessage
from simpletasks.queues import QueueService, _checks, _common

logger = logging.getLogger(__name__)


class ScheduleError(BatchError):
    """Some messages of a ``schedule`` call were not sent; every other one was.

    Attributes:
        failures: ``(index in tasks, error type, error text)`` per message not sent.
        bodies: The JSON of every message, by index (``bodies[i]`` of a failure is what to
            send again).
        sent: How many messages were sent.
    """

    def __init__(
        self, message: str, failures: list[tuple[int, str, str]], bodies: list[str], sent: int
    ) -> None:
        super().__init__(message, failures)
        self.bodies = bodies
        self.sent = sent

    @property
    def unsent(self) -> list[str]:
        """The messages that were not sent, in their order in ``tasks``."""
        return [self.bodies[i] for i in self.failed_indexes]


def schedule(
    queue: QueueService,
    tasks: Iterable[TaskMessage | str],
    *,
    threads: int = 4,
    progress: bool = False,
) -> int:
    """Send ``tasks`` to ``queue`` in batches of its ``max_batch`` on ``threads`` threads.

    Every message is checked before any is sent, so nothing is sent when one of them is
    malformed: strings are parsed (:meth:`TaskMessage.from_json`), and every body is held to
    what queues accept (characters, and the queue's ``max_body_bytes``). The batches are
    then handed to ``send_batch`` as already checked, so the backend does not check the
    characters again.

    Batches are independent: when one fails (after the backend's own retries), the others
    are still sent, and a :class:`ScheduleError` lists exactly which messages were not, so
    sending those again sends nothing twice.

    Args:
        queue: The task queue.
        tasks: Messages, as :class:`TaskMessage` or JSON text.
        threads: Concurrent send calls.
        progress: Show a progress bar (tqdm) on stderr.

    Returns:
        The number of messages sent.

    Raises:
        ScheduleError: If some batches (or some messages of a batch) could not be sent.
        MessageError: If a string message is malformed (nothing is sent).
        TypeError: If a message is neither a ``TaskMessage`` nor a ``str`` (nothing is sent).
        ValueError: If a body has a character queues reject or is larger than the queue's
            ``max_body_bytes``; ``bodies[i]`` in the message is its index in ``tasks``
            (nothing is sent).
    """
    bodies = [t.to_json() if isinstance(t, TaskMessage) else _checked(t) for t in tasks]
    _checks.check_bodies(bodies)  # all of them, before any batch is sent
    _common.check_sizes(bodies, queue.capabilities.max_body_bytes, f"queue {queue.url}")
    size = max(1, queue.capabilities.max_batch)
    starts = range(0, len(bodies), size)
    batches: list[Sequence[str]] = [_checks.CheckedBodies(bodies[i : i + size]) for i in starts]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(bodies), unit="task", desc=f"sending to {queue.url}")
    failures: list[tuple[int, str, str]] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for start, failed in zip(starts, pool.map(_send(queue), batches), strict=True):
                failures += [(start + i, kind, text) for i, kind, text in failed]
                if bar is not None:
                    bar.update(min(size, len(bodies) - start) - len(failed))
    finally:
        if bar is not None:
            bar.close()
    sent = len(bodies) - len(failures)
    if failures:
        failures.sort()
        _, kind, text = failures[0]
        raise ScheduleError(
            f"sent {sent} of {len(bodies)} message(s) to {queue.url}; {len(failures)} not sent "
            f"(first: {kind}: {text})",
            failures,
            bodies,
            sent,
        )
    logger.info("sent %d task(s) to %s", sent, queue.url)
    return sent


def _checked(body: str) -> str:
    TaskMessage.from_json(body)
    return body


def _send(queue: QueueService) -> Callable[[Sequence[str]], list[tuple[int, str, str]]]:
    """A sender of one batch that returns its failures (index in the batch) instead of
    raising, so one failed batch does not hide what the others did."""

    def send(batch: Sequence[str]) -> list[tuple[int, str, str]]:
        try:
            queue.send_batch(batch)
        except BatchError as exc:  # some messages of the batch went out
            return list(exc.failures)
        except Exception as exc:
            logger.warning("a batch of %d message(s) to %s failed: %s", len(batch), queue.url, exc)
            return [(i, type(exc).__name__, str(exc)) for i in range(len(batch))]
        return []

    return send
