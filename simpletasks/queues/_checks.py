"""Argument checks shared by the queue backends, so every backend rejects the same inputs.

Bodies are held to SQS's rules on every backend (text, and only the characters SQS
accepts), so a message that works with the memory or file queue also works on SQS.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

# The characters SQS accepts in a message body; everything else is rejected up front.
_INVALID_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def check_receive_args(max_messages: int, wait_seconds: float, lease_seconds: float) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad ``receive`` argument."""
    if isinstance(max_messages, bool) or not isinstance(max_messages, int):
        raise TypeError(f"max_messages must be an int, got {type(max_messages).__name__}")
    if max_messages < 1:
        raise ValueError(f"max_messages must be >= 1, got {max_messages}")
    check_seconds("wait_seconds", wait_seconds)
    check_seconds("lease_seconds", lease_seconds)


def check_seconds(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_body(body: Any, what: str = "body") -> str:
    """Return ``body`` if it is a non-empty str SQS would accept, else raise a specific error.

    Raises:
        TypeError: If ``body`` is not a ``str`` (bytes must be decoded by the caller).
        ValueError: If ``body`` is empty or contains a character SQS rejects (control
            characters other than tab/newline/carriage return, lone surrogates, U+FFFE/U+FFFF).
    """
    if not isinstance(body, str):
        raise TypeError(f"{what} must be str, got {type(body).__name__}")
    if not body:
        raise ValueError(f"{what} must not be empty (SQS rejects empty messages)")
    bad = _INVALID_CHAR.search(body)
    if bad is not None:
        raise ValueError(
            f"{what} contains character U+{ord(bad.group()):04X} at index {bad.start()}, which "
            "queues do not accept (allowed: tab, newline, carriage return, U+0020-U+D7FF, "
            "U+E000-U+FFFD, U+10000-U+10FFFF)"
        )
    return body


class CheckedBodies(list[str]):
    """A batch whose every body already passed :func:`check_body`: :func:`check_bodies`
    returns it as it is.

    Internal: the scheduler checks all the bodies of a schedule before sending any, then
    hands its batches down as ``CheckedBodies`` so that no backend checks them again. Only
    code that ran :func:`check_body` on every entry itself may make one; a plain list or
    any other sequence passed to ``send_batch`` is always checked. Backends still check
    sizes against their own limit (:func:`~simpletasks.queues._common.check_size`).
    """


def check_bodies(bodies: Sequence[str]) -> list[str]:
    """Check every body of a batch before any is sent; return them as a list.

    A :class:`CheckedBodies` is returned unchanged (its bodies were checked by its maker).
    """
    if type(bodies) is CheckedBodies:
        return bodies
    if isinstance(bodies, str | bytes):
        raise TypeError("bodies must be a sequence of str, not a single str or bytes")
    return [check_body(body, f"bodies[{i}]") for i, body in enumerate(bodies)]


def check_handle(
    message: Any,
    handle_type: type,
    queue_name: str,
    *,
    origin: str | None = None,
    here: Any = None,
) -> Any:
    """Return ``message.handle`` if this queue received it, else raise ``ValueError``.

    "Received here" is checked in two steps: the handle must be a ``handle_type`` (the
    message came from this kind of queue) and, with ``origin``, the handle's attribute of
    that name must equal ``here`` (it came from this very queue: its URL, directory...).

    Args:
        message: What the caller passed to ack/release/extend.
        handle_type: The backend's handle class.
        queue_name: How to name the backend in the error ("SQS queue").
        origin: The handle attribute that names the queue it came from.
        here: This queue's value of that attribute.
    """
    handle = getattr(message, "handle", None)
    if not isinstance(handle, handle_type):
        raise ValueError(
            f"message {getattr(message, 'id', message)!r} was not received from a "
            f"{queue_name} (its handle is {type(handle).__name__}); pass the Message that "
            "receive() returned"
        )
    if origin is not None and (source := getattr(handle, origin)) != here:
        raise ValueError(
            f"message {getattr(message, 'id', message)!r} was received from {source}, not from "
            f"{here}"
        )
    return handle
