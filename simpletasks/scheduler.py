"""Scheduling: send many task messages to a queue in batches, on several threads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from simpletasks.message import TaskMessage
from simpletasks.queues import QueueService

logger = logging.getLogger(__name__)


def schedule(
    queue: QueueService,
    tasks: Iterable[TaskMessage | str],
    *,
    threads: int = 4,
    progress: bool = False,
) -> int:
    """Send ``tasks`` to ``queue`` in batches of its ``max_batch`` on ``threads`` threads.

    Messages given as strings are validated first (:meth:`TaskMessage.from_json`), so
    nothing is sent when any of them is malformed.

    Args:
        queue: The task queue.
        tasks: Messages, as :class:`TaskMessage` or JSON text.
        threads: Concurrent send calls.
        progress: Show a progress bar (tqdm) on stderr.

    Returns:
        The number of messages sent.

    Raises:
        MessageError: If a string message is malformed (nothing is sent).
    """
    bodies = [t.to_json() if isinstance(t, TaskMessage) else _checked(t) for t in tasks]
    size = max(1, queue.capabilities.max_batch)
    batches: list[Sequence[str]] = [bodies[i : i + size] for i in range(0, len(bodies), size)]
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
