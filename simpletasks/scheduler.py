"""Scheduling: send many task messages to a queue in batches, on several threads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from simpletasks.message import TaskMessage
from simpletasks.queues import QueueService, _checks, _common

logger = logging.getLogger(__name__)


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

    Args:
        queue: The task queue.
        tasks: Messages, as :class:`TaskMessage` or JSON text.
        threads: Concurrent send calls.
        progress: Show a progress bar (tqdm) on stderr.

    Returns:
        The number of messages sent.

    Raises:
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
    batches: list[Sequence[str]] = [
        _checks.CheckedBodies(bodies[i : i + size]) for i in range(0, len(bodies), size)
    ]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(bodies), unit="task", desc=f"sending to {queue.url}")
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for sent in pool.map(_send(queue), batches):
                if bar is not None:
                    bar.update(sent)
    finally:
        if bar is not None:
            bar.close()
    logger.info("sent %d task(s) to %s", len(bodies), queue.url)
    return len(bodies)


def _checked(body: str) -> str:
    TaskMessage.from_json(body)
    return body


def _send(queue: QueueService) -> Callable[[Sequence[str]], int]:
    def send(batch: Sequence[str]) -> int:
        queue.send_batch(batch)
        return len(batch)

    return send
