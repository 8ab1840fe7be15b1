"""Helpers every queue backend shares, so each rule is written once.

Lease rounding and limits, the body size check, batching in chunks, the poll-until-deadline
loop of ``receive``, the "lease lost" warning and the partial-batch error. Argument checks
(types, ranges, characters) live in :mod:`simpletasks.queues._checks`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from simpletasks.errors import BatchError

_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Yield consecutive slices of ``items`` of at most ``size`` entries."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_lease(lease_seconds: float, maximum: float | None, service: str) -> float:
    """Return ``lease_seconds`` if the backend can grant it, else raise ``ValueError``.

    Args:
        lease_seconds: An already type-checked lease.
        maximum: The backend's ``max_lease_seconds`` (``None``: no limit).
        service: How to name the backend in the error ("SQS", "Pub/Sub").
    """
    if maximum is not None and lease_seconds > maximum:
        raise ValueError(
            f"lease_seconds must be at most {maximum:g} ({_duration(maximum)}) on {service}, got "
            f"{lease_seconds:g} (the daemon's heartbeat renews shorter leases as often as needed)"
        )
    return lease_seconds


def whole_seconds(lease_seconds: float, maximum: float | None, service: str) -> int:
    """Round a lease up to whole seconds (SQS, Pub/Sub) after checking it against ``maximum``."""
    return math.ceil(check_lease(lease_seconds, maximum, service))


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def check_size(body: str, max_bytes: int | None, what: str, where: str) -> bytes:
    """Return ``body`` as UTF-8, or raise ``ValueError`` if it is over ``max_bytes``.

    Args:
        body: An already checked body.
        max_bytes: The backend's ``max_body_bytes`` (``None``: no limit).
        what: How to name the body ("body", "bodies[3]").
        where: How to name the queue ("SQS queue 'jobs'").
    """
    data = body.encode("utf-8")
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(
            f"{what} is {len(data)} bytes of UTF-8; {where} accepts at most {max_bytes} bytes "
            "per message (store large data in a bucket and send its key)"
        )
    return data


def encode_bodies(bodies: Sequence[str], max_bytes: int | None, where: str) -> list[bytes]:
    """Return already checked ``bodies`` as UTF-8, or raise as :func:`check_size` for the first
    one over ``max_bytes`` (named ``bodies[i]``): :func:`check_size` for a whole batch."""
    payloads = [body.encode("utf-8") for body in bodies]
    if max_bytes is not None:
        for i, data in enumerate(payloads):
            if len(data) > max_bytes:
                check_size(bodies[i], max_bytes, f"bodies[{i}]", where)
    return payloads


def check_sizes(bodies: Sequence[str], max_bytes: int | None, where: str) -> None:
    """Raise ``ValueError`` (as :func:`check_size`) for the first body over ``max_bytes``.

    Only bodies that might be over the limit are encoded (a code point is at most four
    bytes of UTF-8), so checking many small bodies costs little.
    """
    if max_bytes is None:
        return
    sure = max_bytes // 4  # a body of at most this many characters fits
    for i, body in enumerate(bodies):
        if len(body) > sure:
            check_size(body, max_bytes, f"bodies[{i}]", where)


def poll(
    attempt: Callable[[], list[_T]],
    wait_seconds: float,
    *,
    pause: float,
    max_pause: float | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[_T]:
    """Call ``attempt`` until it returns something or ``wait_seconds`` have passed.

    ``attempt`` is called at least once. Between empty attempts it sleeps ``pause`` seconds
    (doubling up to ``max_pause`` if given), never past the deadline.

    Args:
        attempt: One non-blocking try (a directory scan, a ``basic.get``, a pull).
        wait_seconds: How long to keep trying.
        pause: Seconds between tries.
        max_pause: Back off up to this pause (``None``: a fixed pause).
        sleep: How to wait (an ``Event.wait`` lets ``close`` cut the wait short).
        clock: Monotonic seconds.
    """
    deadline = clock() + wait_seconds
    while True:
        found = attempt()
        remaining = deadline - clock()
        if found or remaining <= 0:
            return found
        sleep(min(pause, remaining))
        if max_pause is not None:
            pause = min(2 * pause, max_pause)


def log_lost(logger: logging.Logger, url: str, action: str, message_id: str, why: str) -> None:
    """Log (once, as a warning) that settling a message was ignored because its lease is lost."""
    logger.warning("%s: %s of message %s ignored: %s", url, action, message_id, why)


LEASE_LOST = "its lease ended and it was redelivered, acked or released"


def raise_failures(url: str, verb: str, failures: list[tuple[int, str, str]], total: int) -> None:
    """Raise a :class:`BatchError` for ``failures`` (if any), naming up to ten of them.

    Args:
        url: The queue's URL (password masked).
        verb: What was not done, e.g. ``"sent to"``, ``"deleted from"``, ``"extended in"``.
        failures: ``(index, code, text)`` of each failed entry.
        total: How many entries the batch had.
    """
    if not failures:
        return
    failures = sorted(failures)
    detail = "; ".join(f"[{i}]: {code} {text}".rstrip() for i, code, text in failures[:10])
    raise BatchError(
        f"{len(failures)} of {total} messages were not {verb} {url} (the others were): {detail}",
        failures,
    )
